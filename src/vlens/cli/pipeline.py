"""`vlens` commands for this area (attached to the apps in `vlens.cli.apps`)."""

from __future__ import annotations

from vlens.cli.apps import app  # noqa: F401
