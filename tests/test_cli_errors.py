"""The `vlens` entry point turns deliberate and OS errors into one line, not a traceback."""

from __future__ import annotations

import errno
import sys

import pytest

import vlens.cli as cli
from vlens.errors import ConfigError


def _run(monkeypatch, capsys, exc: Exception) -> tuple[int, str]:
    import vlens.pipeline.full as full

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(full, "agreement", boom)
    monkeypatch.setattr(sys, "argv", ["vlens", "agreement", "runs/x"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code, capsys.readouterr().err


def test_disk_full_is_one_line(monkeypatch, capsys):
    code, err = _run(monkeypatch, capsys,
                     OSError(errno.ENOSPC, "No space left on device", "runs/x/vlm.parquet"))
    assert code == 1
    assert "error:" in err and "No space left on device" in err and "Traceback" not in err


def test_vlens_error_is_one_line_with_markup_escaped(monkeypatch, capsys):
    code, err = _run(monkeypatch, capsys, ConfigError("bad [bold]value[/bold]"))
    assert code == 2 and "bad [bold]value[/bold]" in err
