"""vlens: explain a trained vision model with vision-language models, per sample and per dataset."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
