"""vlens.models"""
