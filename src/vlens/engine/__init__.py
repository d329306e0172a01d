"""vlens.engine"""
