"""Choosing the layer a CAM looks at, and turning transformer tokens into a spatial grid.

Automatic choice, in order:
1. a model that names its own layer: attribute ``vlens_target_layer = "dotted.name"``;
2. known names: ``layer4`` (torchvision / timm ResNets);
3. transformers: the last block of a ``blocks`` / ``layer`` / ``layers`` list whose items
   hold an attention submodule, at its input norm when it has one (timm ViT
   ``blocks.<last>.norm1``, HF ViT ``encoder.layer.<last>.layernorm_before``): with a
   CLS-token head the last block's output patch tokens never reach the logits;
4. the last conv block: the last child holding an ``nn.Conv2d``, descending through
   wrappers (e.g. ``Sequential(normalize, net)``) and stage containers.
A dotted name (``target_layer="layer4.1.conv2"``) overrides all of this.
"""

from __future__ import annotations

import difflib
import math

import torch
from torch import nn

from vlens.errors import ConfigError

_BLOCK_LISTS = ("blocks", "layer", "layers")
_BLOCK_INPUT_NORMS = ("norm1", "layernorm_before", "ln_1")


def _has_conv(m: nn.Module) -> bool:
    return any(isinstance(s, nn.Conv2d) for s in m.modules())


def _has_attention(m: nn.Module) -> bool:
    return any(("attn" in n.lower() or "attention" in n.lower()) for n, _ in m.named_modules())


def layer_candidates(module: nn.Module) -> list[str]:
    """Names worth trying as a target layer: conv-holding and transformer-block modules."""
    out = []
    for name, m in module.named_modules():
        if name and (_has_conv(m) or name.split(".")[-1].isdigit() and _has_attention(m)):
            out.append(name)
    return out


def _find_transformer_block(module: nn.Module) -> str | None:
    best = None
    for name, m in module.named_modules():
        is_list = isinstance(m, (nn.ModuleList, nn.Sequential))
        if name.split(".")[-1] in _BLOCK_LISTS and is_list and len(m) and _has_attention(m[-1]):
            best = f"{name}.{len(m) - 1}"
            last = m[-1]
            # With a CLS-token head the last block's OUTPUT patch tokens never reach the
            # logits (zero gradients); its input norm feeds the CLS token through attention.
            for norm in _BLOCK_INPUT_NORMS:
                if isinstance(getattr(last, norm, None), nn.Module):
                    best = f"{best}.{norm}"
                    break
    return best


def _find_conv_block(module: nn.Module, prefix: str = "") -> str | None:
    kids = [(n, c) for n, c in module.named_children() if _has_conv(c)]
    if not kids:
        return None
    name, child = kids[-1]
    full = f"{prefix}{name}"
    if len(kids) == 1 and not isinstance(child, nn.Conv2d):
        # a wrapper or a stage container: descend if it is made of composite conv blocks
        inner = [c for _, c in child.named_children() if _has_conv(c)]
        if any(not isinstance(c, nn.Conv2d) for c in inner):
            return _find_conv_block(child, full + ".") or full
    return full


def auto_target_layer(module: nn.Module) -> str:
    """The dotted name of the default target layer (see module docstring for the rules)."""
    declared = getattr(module, "vlens_target_layer", None)
    if isinstance(declared, str):
        return declared
    if isinstance(getattr(module, "layer4", None), nn.Module):
        return "layer4"
    backbone = getattr(module, "backbone", None)
    if isinstance(backbone, nn.Module):
        # torchvision detection/segmentation: the heads (rpn, roi_heads, classifier) emit
        # lists/dicts, so the CAM layer is the last conv block of the backbone's body
        body = getattr(backbone, "body", backbone)
        prefix = "backbone.body." if body is not backbone else "backbone."
        found = _find_conv_block(body, prefix)
        if found is not None:
            return found
    found = _find_transformer_block(module) or _find_conv_block(module)
    if found is None:
        raise ConfigError(
            "could not choose a target layer automatically (no Conv2d or transformer block); "
            "pass target_layer='dotted.name' or use a black-box explainer (rise, occlusion)"
        )
    return found


def resolve_target_layer(module: nn.Module, name: str | None = None) -> tuple[str, nn.Module]:
    """(name, layer) for a dotted name, or the automatic choice when `name` is None."""
    name = name or auto_target_layer(module)
    modules = dict(module.named_modules())
    if name not in modules:
        cands = layer_candidates(module)
        close = difflib.get_close_matches(name, cands, n=5, cutoff=0.4)
        shown = close + [c for c in cands[-10:] if c not in close]
        raise ConfigError(
            f"target layer {name!r} not found in {type(module).__name__}; "
            f"candidates: {', '.join(shown) or '(none)'}"
        )
    return name, modules[name]


def _grid_for(tokens: int, hw: tuple[int, int], prefix: int | None) -> tuple[int, int, int]:
    """(prefix, gh, gw) such that tokens = prefix + gh * gw and gh / gw matches the image."""
    h, w = hw
    prefixes = [prefix] if prefix is not None else range(0, min(tokens, 17))
    for p in prefixes:
        k = tokens - p
        for gh in range(1, k + 1):
            if k % gh == 0 and math.isclose(gh / (k // gh), h / w, rel_tol=1e-6):
                return p, gh, k // gh
    raise ConfigError(
        f"cannot reshape {tokens} tokens into a grid matching a {h}x{w} input"
        + (f" with {prefix} prefix tokens" if prefix is not None else "")
    )


def tokens_to_grid(
    t: torch.Tensor, input_hw: tuple[int, int], num_prefix_tokens: int | None = None
) -> torch.Tensor:
    """ViT-style tokens (n, T, C) -> (n, C, gh, gw): drop CLS/register tokens, reshape.

    The number of prefix tokens is taken from the model (timm: ``num_prefix_tokens``) when
    known, else inferred as the smallest count leaving a grid with the image's aspect ratio.
    """
    if t.dim() != 3:
        raise ConfigError(f"token reshape expects (n, tokens, channels); got {tuple(t.shape)}")
    p, gh, gw = _grid_for(t.shape[1], input_hw, num_prefix_tokens)
    return t[:, p:].reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)
