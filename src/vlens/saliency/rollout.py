"""Attention rollout (Abnar & Zuidema 2020) for ViT-style models.

Fused attention kernels never materialise the attention matrix, so it is recomputed from
each attention module's input: for timm-style modules (``qkv`` linear + ``num_heads``,
optional ``q_norm``/``k_norm``) via a forward pre-hook. Modules that use an ``nn.Softmax``
submodule are read from its output instead. Rollout is class-agnostic: `target` is unused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlens.errors import ConfigError
from vlens.models.base import ModelAdapter, Target
from vlens.saliency._util import finalize, require_module
from vlens.saliency.base import EXPLAINERS
from vlens.saliency.layers import _grid_for


def qkv_attention(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention probabilities (n, heads, T, T) of a timm-style attention module on input x."""
    b, t, _ = x.shape
    heads = int(mod.num_heads)
    head_dim = int(getattr(mod, "head_dim", mod.qkv.out_features // 3 // heads))
    qkv = mod.qkv(x).reshape(b, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    q = getattr(mod, "q_norm", nn.Identity())(q)
    k = getattr(mod, "k_norm", nn.Identity())(k)
    scale = float(getattr(mod, "scale", head_dim**-0.5))
    return ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)


@EXPLAINERS.register("rollout", help="Attention rollout for ViT-style models (class-agnostic)")
class AttentionRollout:
    """Parameters: `head_fusion` how heads combine ("mean", "max", "min"); `discard_ratio`
    fraction of the weakest attention weights per row dropped before rollout (0: none)."""

    name = "rollout"
    needs_gradients = False
    _FUSE = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}

    def __init__(self, head_fusion: str = "mean", discard_ratio: float = 0.0) -> None:
        if head_fusion not in self._FUSE:
            raise ConfigError(f"rollout: head_fusion must be one of {sorted(self._FUSE)}")
        if not 0 <= discard_ratio < 1:
            raise ConfigError("rollout: discard_ratio must be in [0, 1)")
        self.head_fusion, self.discard_ratio = head_fusion, discard_ratio

    def attentions(self, module: nn.Module, model: ModelAdapter, x: torch.Tensor) -> list:
        """Attention matrices (n, heads, T, T) of every attention layer, in forward order."""
        attns: list[torch.Tensor] = []
        handles = []

        def pre(mod: nn.Module, args: Any) -> None:
            attns.append(qkv_attention(mod, args[0]))

        def post(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            attns.append(out)

        for m in module.modules():
            if isinstance(getattr(m, "qkv", None), nn.Linear) and hasattr(m, "num_heads"):
                handles.append(m.register_forward_pre_hook(pre))
        if not handles:
            for m in module.modules():
                if isinstance(m, nn.Softmax):
                    handles.append(m.register_forward_hook(post))
        if not handles:
            raise ConfigError(
                "rollout: no attention modules found (need timm-style qkv attention or "
                "nn.Softmax modules); use a CAM with a transformer block as target layer"
            )
        try:
            with torch.no_grad():
                model.forward(x)
        finally:
            for h in handles:
                h.remove()
        return [a for a in attns if a.dim() == 4 and a.shape[-1] == a.shape[-2]]

    def explain(self, model: ModelAdapter, x: torch.Tensor, target: Target) -> torch.Tensor:
        module = require_module(model, self.name)
        attns = self.attentions(module, model, x)
        if not attns:
            raise ConfigError("rollout: no attention matrices were recorded")
        t = attns[0].shape[-1]
        eye = torch.eye(t, device=x.device)
        rollout = eye.expand(x.shape[0], t, t)
        for a in attns:
            a = self._FUSE[self.head_fusion](a.float())
            if self.discard_ratio > 0:
                k = int(t * self.discard_ratio)
                if k:
                    low = a.topk(k, dim=-1, largest=False).indices
                    a = a.scatter(-1, low, 0.0)
            a = a + eye
            a = a / a.sum(dim=-1, keepdim=True)
            rollout = a @ rollout
        prefix = getattr(module, "num_prefix_tokens", None)
        p, gh, gw = _grid_for(t, tuple(x.shape[-2:]), prefix if isinstance(prefix, int) else None)
        rel = rollout[:, 0, p:] if p > 0 else rollout.mean(dim=1)
        return finalize(rel.reshape(-1, gh, gw), tuple(x.shape[-2:]))
