"""vlens.vlm"""
