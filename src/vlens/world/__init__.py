"""vlens.world"""
