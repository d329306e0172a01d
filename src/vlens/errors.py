"""Error types. Every failure vlens reports on purpose is a `VlensError` with a clear message.

Per-sample failures (a corrupt image, a VLM timeout) are not raised through the pipeline:
stages turn them into error rows carrying `reason`, so a run never stops on one bad sample.
"""

from __future__ import annotations


class VlensError(Exception):
    """Base class for errors vlens raises deliberately (shown to users without a traceback)."""


class ConfigError(VlensError):
    """A configuration, flag or spec string is invalid."""


class DataError(VlensError):
    """A dataset, manifest or annotation file cannot be read."""


class ImageError(DataError):
    """One image cannot be decoded; `reason` is a short machine-friendly code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ModelError(VlensError):
    """A model cannot be loaded or its outputs do not match the declared task."""


class VLMError(VlensError):
    """A VLM backend failed or lacks a requested capability."""


class CapabilityError(VLMError):
    """A backend was asked for a capability (contrastive / generative) it does not have."""


class BudgetExceeded(VLMError):
    """A per-run request/token budget was used up; the run stops cleanly and can resume."""


class StoreError(VlensError):
    """The run directory or cache cannot be read or written."""
