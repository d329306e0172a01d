"""The `vlens` process itself: choices made before any heavy import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("preset,want", [(None, "system"), ("mimalloc", "mimalloc")])
def test_cli_uses_the_system_arrow_allocator_unless_told_otherwise(preset, want):
    """The CLI chooses Arrow's allocator before pyarrow loads (mimalloc kept ~50 MiB more
    over a 100k-sample predict stage); a user's ARROW_DEFAULT_MEMORY_POOL wins."""
    code = ("import sys\nfrom vlens.cli import main\nsys.argv = ['vlens', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "import pyarrow as pa\nprint('POOL', pa.default_memory_pool().backend_name)\n")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if preset:
        env["ARROW_DEFAULT_MEMORY_POOL"] = preset
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, env=env)
    assert f"POOL {want}" in r.stdout
