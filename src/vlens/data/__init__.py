"""vlens.data"""
