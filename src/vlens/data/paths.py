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


class PathGuard:
    """Resolves dataset-relative paths and keeps them inside `root`.

    Parent folders are resolved once and cached (a manifest of a million files in a few
    folders costs one ``lstat`` per file), which keeps listing cheap.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip(os.sep) + os.sep
        self._dirs: dict[str, str] = {}

    def _inside(self, p: str) -> bool:
        return p == self.root or p.startswith(self._prefix)

    def __call__(self, rel: str) -> tuple[str, str | None]:
        """(absolute path, error or None); see `resolve_inside`."""
        if "\x00" in rel:
            return rel.replace("\x00", "\\x00"), "invalid_path: path contains a NUL byte"
        if os.path.isabs(rel) or rel.startswith(("\\", "/")) or (len(rel) > 1 and rel[1] == ":"):
            return rel, f"path_outside_root: absolute path {rel!r} is not allowed"
        joined = os.path.normpath(os.path.join(self.root, rel))
        if not self._inside(joined):
            return joined, f"path_outside_root: {rel!r} escapes the dataset root {self.root}"
        try:
            parent, name = os.path.split(joined)
            real_parent = self._dirs.get(parent)
            if real_parent is None:
                real_parent = self._dirs[parent] = os.path.realpath(parent)
            real = os.path.join(real_parent, name)
            if os.path.islink(real):
                real = os.path.realpath(real)
        except (OSError, ValueError) as e:  # name too long, bad characters for this OS, ...
            return rel, f"invalid_path: {rel[:80]!r}: {e}"
        if not self._inside(real):
            return joined, f"path_outside_root: {rel!r} resolves to {real}, outside {self.root}"
        return real, None


def resolve_inside(root: Path | str, rel: str) -> tuple[str, str | None]:
    """Resolve `rel` against `root`; return (absolute path, error or None).

    The error is ``"path_outside_root: ..."`` when the path is absolute, escapes with ``..``
    or resolves (through symlinks) outside `root`, ``"invalid_path: ..."`` when the OS
    cannot represent it (NUL byte). On error the returned path is only for display (it is
    never read). For many paths under one root use a `PathGuard` (it caches folders).
    """
    return PathGuard(root)(rel)


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
