"""vlens.report"""
