"""vlens.saliency"""
