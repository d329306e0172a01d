"""The embedded VLM: a small dual encoder (frozen MiniLM text, CNN image tower) that ships
with vlens and works offline. Importing this package registers the ``embedded`` backend.

    from vlens.vlm.embedded import EmbeddedVLM, evaluate_zero_shot
    vlm = EmbeddedVLM()
    vlm.score(images, ["grass", "water"])
"""

from vlens.vlm.embedded.backend import EmbeddedVLM, concept_embeddings, make_embedded
from vlens.vlm.embedded.evaluate import evaluate_zero_shot

__all__ = ["EmbeddedVLM", "concept_embeddings", "evaluate_zero_shot", "make_embedded"]
