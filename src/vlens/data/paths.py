"""Keeping every dataset path inside its root, and per-sample source errors.

A manifest line that points outside the dataset root (an absolute path, a ``../`` escape, a
symlink that resolves elsewhere) is not read. The sample is still listed, flagged with the
reason ``path_outside_root``, so the run accounts for it as an error row instead of silently
dropping it or, worse, reading ``/etc/passwd``.

The flag lives in ``Sample.metadata["_error"]`` until `Sample` grows an ``error`` field;
always go through `sample_error` / `load_sample_image` so callers do not depend on where.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from vlens.data.base import Sample
from vlens.errors import ImageError

ERROR_KEY = "_error"


def resolve_inside(root: Path, rel: str) -> tuple[str, str | None]:
    """Resolve `rel` against `root`; return (absolute path, error or None).

    The error is ``"path_outside_root: ..."`` when the path is absolute, escapes with ``..``
    or resolves (through symlinks) outside `root`, ``"invalid_path: ..."`` when the OS
    cannot represent it (NUL byte, name too long). On error the returned path is the
    lexically joined path (never read, only shown).
    """
    root_r = root.resolve()
    if "\x00" in rel:
        return rel.replace("\x00", "\\x00"), "invalid_path: path contains a NUL byte"
    try:
        return _resolve_inside(root_r, rel)
    except (OSError, ValueError) as e:  # name too long, bad characters for this OS, ...
        return rel, f"invalid_path: {rel[:80]!r}: {e}"


def _resolve_inside(root_r: Path, rel: str) -> tuple[str, str | None]:
    if os.path.isabs(rel) or rel.startswith(("\\", "/")) or (len(rel) > 1 and rel[1] == ":"):
        return rel, f"path_outside_root: absolute path {rel!r} is not allowed"
    joined = root_r / rel
    if ".." in Path(rel).parts:
        norm = Path(os.path.normpath(joined))
        if not norm.is_relative_to(root_r):
            return str(norm), f"path_outside_root: {rel!r} escapes the dataset root {root_r}"
    real = joined.resolve()
    if not real.is_relative_to(root_r):
        return str(joined), f"path_outside_root: {rel!r} resolves to {real}, outside {root_r}"
    return str(real), None


def sample_error(sample: Sample) -> str | None:
    """The source-level error of a sample (e.g. ``path_outside_root: ...``), or None."""
    err = getattr(sample, "error", None)
    return err or sample.metadata.get(ERROR_KEY)


def load_sample_image(sample: Sample, **kw: object) -> Image.Image:
    """`load_image(sample.uri)` that first honours the sample's source error (raises it)."""
    from vlens.data.images import load_image

    err = sample_error(sample)
    if err:
        reason, _, detail = err.partition(": ")
        raise ImageError(reason, detail)
    return load_image(sample.uri, **kw)  # type: ignore[arg-type]
