"""vlens.analysis"""
