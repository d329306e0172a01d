"""vlens.saliency: attribution maps, the views built from them, faithfulness metrics.

Importing the package registers every explainer in `EXPLAINERS`; build one with
``get_explainer("gradcam", target_layer="layer4")`` or a spec ``"gradcam:layer4"``.
"""

from __future__ import annotations

from vlens.saliency import attribution, blackbox, cam, rollout  # noqa: F401  (registration)
from vlens.saliency.base import EXPLAINERS, Explainer


def get_explainer(name: str, **params: object) -> Explainer:
    """An explainer by registry name or spec (``"gradcam:layer4.1"`` sets the CAM layer)."""
    return EXPLAINERS.create(name, **params)


__all__ = ["EXPLAINERS", "Explainer", "get_explainer"]
