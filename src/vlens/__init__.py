"""vlens: explain a trained vision model with vision-language models, per sample and per dataset.

Top-level API (imported lazily so `import vlens` stays fast):

- `vlens.run(model, data, out, ...)`: explain + analyze + report; returns `.samples`,
  `.findings`, `.slices`.
- `vlens.explain(...)`: the per-sample pipeline only.
- `vlens.load_run(path)`: read a run directory back into pandas.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_run": ("vlens.runs", "load_run"),
    "run": ("vlens.pipeline", "run"),
    "explain": ("vlens.pipeline", "explain"),
    "demo": ("vlens.pipeline", "demo"),
    "ExplainOptions": ("vlens.pipeline", "ExplainOptions"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'vlens' has no attribute {name!r}")
