"""Fixtures of the robustness suite (helpers live in rb_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rb_helpers import make_world


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """A 12-image world shared (read-only) by several tests."""
    return make_world(tmp_path_factory.mktemp("world12"), n=12, seed=5)


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory, small_world) -> Path:
    """An uninterrupted `explain` of the small world with the embedded VLM (the reference)."""
    from vlens.pipeline import ExplainOptions, explain

    out = tmp_path_factory.mktemp("clean") / "run"
    explain("demo", f"manifest:{small_world}", out, ExplainOptions(progress=False,
                                                                  batch_size=4))
    return out
