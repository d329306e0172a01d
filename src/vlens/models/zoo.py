"""`torchvision:NAME` and `timm:NAME`: architectures built from code, random init unless a local
weights file is given. Nothing is ever downloaded (torchvision ``weights=None,
weights_backbone=None``; timm ``pretrained=False``).

The task follows the torchvision family (``torchvision.models.detection`` -> detection,
``.segmentation`` -> segmentation, else classification) unless ``task=`` overrides it.
Detection models normalise internally, so their preprocess is only a resize to [0, 1].
"""

from __future__ import annotations

from typing import Any

from vlens.errors import ConfigError, ModelError
from vlens.models.adapters import IMAGENET_MEAN, IMAGENET_STD, build_adapter
from vlens.models.base import MODELS

_DEFAULT_CLASSES = {"detection": 91, "segmentation": 21, "classification": 1000}
_DEFAULT_SIZE = {"detection": 320, "segmentation": 224, "classification": 224}


def torchvision_family(name: str) -> str:
    """classification / detection / segmentation / video... from torchvision's model lists."""
    import torchvision.models as tvm

    for family, mod in (("detection", tvm.detection), ("segmentation", tvm.segmentation),
                        ("video", tvm.video), ("optical_flow", tvm.optical_flow)):
        if name in tvm.list_models(module=mod):
            return family
    if name in tvm.list_models():
        return "classification"
    raise ConfigError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()")


@MODELS.register("torchvision", help="torchvision:NAME [weights=FILE] (random init, no download)")
def torchvision_model(arg: str = "", *, weights: str | None = None,
                      class_names: list[str] | None = None, task: str | None = None,
                      model_kwargs: dict[str, Any] | None = None, **kw: Any):
    import torchvision.models as tvm

    if not arg:
        raise ConfigError("torchvision: needs a model name, e.g. torchvision:resnet18")
    family = torchvision_family(arg)
    if family not in _DEFAULT_CLASSES:
        raise ModelError(f"torchvision {family} models ({arg}) are not supported")
    task = task or family
    n = len(class_names) if class_names else _DEFAULT_CLASSES[family]
    mk: dict[str, Any] = {"weights": None, "num_classes": n, **(model_kwargs or {})}
    if family in ("detection", "segmentation"):
        mk.setdefault("weights_backbone", None)
    if family == "segmentation":
        mk.setdefault("aux_loss", False)
    try:
        module = tvm.get_model(arg, **mk)
    except (TypeError, ValueError) as e:
        raise ModelError(f"cannot build torchvision:{arg}: {e}") from None
    meta: dict[str, Any] = {
        "class_names": class_names or [str(i) for i in range(n)],
        "input_size": _DEFAULT_SIZE[family], "task": task,
        "mean": (0.0, 0.0, 0.0) if family == "detection" else IMAGENET_MEAN,
        "std": (1.0, 1.0, 1.0) if family == "detection" else IMAGENET_STD,
    }
    return build_adapter(module, meta, spec=f"torchvision:{arg}", weights=weights, **kw)


@MODELS.register("timm", help="timm:NAME [weights=FILE] (pretrained=False, no download)")
def timm_model(arg: str = "", *, weights: str | None = None,
               class_names: list[str] | None = None,
               model_kwargs: dict[str, Any] | None = None, **kw: Any):
    try:
        import timm
        from timm.data import resolve_model_data_config
    except ImportError as e:
        raise ModelError(f"timm is not installed (pip install 'vlens[hf]'): {e}") from None
    if not arg:
        raise ConfigError("timm: needs a model name, e.g. timm:resnet18")
    mk: dict[str, Any] = {"pretrained": False, **(model_kwargs or {})}
    if class_names:
        mk["num_classes"] = len(class_names)
    try:
        module = timm.create_model(arg, **mk)
    except RuntimeError as e:
        raise ModelError(f"cannot build timm:{arg}: {e}") from None
    cfg = resolve_model_data_config(module)
    n = getattr(module, "num_classes", None)
    meta: dict[str, Any] = {
        "input_size": cfg.get("input_size", (3, 224, 224)),
        "mean": cfg.get("mean", IMAGENET_MEAN), "std": cfg.get("std", IMAGENET_STD),
    }
    if class_names or n:
        meta["class_names"] = class_names or [str(i) for i in range(int(n))]
    return build_adapter(module, meta, spec=f"timm:{arg}", weights=weights, **kw)
