"""`folder:DIR` — an image folder with one sub-folder per class (ImageFolder layout).

``DIR/<class>/**/<file>`` gives a sample with label ``<class>``; images directly in ``DIR``
are listed unlabeled. Ids are the posix path relative to ``DIR`` and the order is sorted, so
two listings of the same folder are identical. Only files with an image suffix are listed
(decoding decides later whether they really are images); hidden files are skipped.
Symlinks that resolve outside ``DIR`` are listed as error samples (``path_outside_root``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from vlens.data.base import SOURCES, Sample
from vlens.data.images import IMAGE_EXTENSIONS
from vlens.data.paths import ERROR_KEY, PathGuard
from vlens.errors import DataError


class FolderSource:
    """Lists ``DIR/<class>/...`` images; `class_names` are the sorted sub-folder names."""

    def __init__(self, root: str | os.PathLike[str], class_names: Sequence[str] | None = None,
                 extensions: Sequence[str] | None = None) -> None:
        r = Path(root).expanduser()
        if not r.is_dir():
            raise DataError(f"folder dataset {str(root)!r} is not a directory")
        self.root = str(r.resolve())
        exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions or ()}
        self._exts = frozenset(exts) or IMAGE_EXTENSIONS
        self._guard = PathGuard(self.root)
        self._samples = self._scan()
        found = sorted({s.label for s in self._samples if s.label is not None})
        if class_names is not None:
            self.class_names = list(class_names)
            unknown = sorted(set(found) - set(self.class_names))
            if unknown:
                raise DataError(
                    f"folder {self.root}: sub-folders {unknown} are not in class_names "
                    f"{self.class_names}"
                )
        else:
            self.class_names = found

    def _is_image(self, name: str) -> bool:
        return not name.startswith(".") and os.path.splitext(name)[1].lower() in self._exts

    def _scan(self) -> list[Sample]:
        root = Path(self.root)
        out: list[Sample] = []
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                out.extend(self._scan_class(root, entry.name))
            elif self._is_image(entry.name):
                out.append(self._sample(root, entry.name, None))
        return out

    def _scan_class(self, root: Path, label: str) -> list[Sample]:
        cdir = root / label
        if not cdir.resolve().is_relative_to(root):
            rel = label
            _, err = self._guard(rel)
            return [Sample(id=rel, uri=str(cdir), label=label, metadata={ERROR_KEY: err})]
        rels: list[str] = []
        for dirpath, dirnames, filenames in os.walk(cdir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            base = Path(dirpath).relative_to(root)
            rels.extend((base / f).as_posix() for f in filenames if self._is_image(f))
            # symlinked sub-directories are not walked (os.walk default); list them as errors
            for d in dirnames:
                p = Path(dirpath) / d
                if p.is_symlink() and not p.resolve().is_relative_to(root):
                    rels.append((base / d).as_posix())
        return [self._sample(root, r, label) for r in sorted(rels)]

    def _sample(self, root: Path, rel: str, label: str | None) -> Sample:
        path, err = self._guard(rel)
        meta = {ERROR_KEY: err} if err else {}
        return Sample(id=rel, uri=path, label=label, metadata=meta)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    def __len__(self) -> int:
        return len(self._samples)

    def __repr__(self) -> str:
        return f"FolderSource({self.root!r}, {len(self)} samples, {len(self.class_names)} classes)"


@SOURCES.register("folder", help="folder:DIR — one sub-folder per class (ImageFolder layout)")
def folder_source(arg: str = "", **kw: object) -> FolderSource:
    if not arg:
        raise DataError("folder: needs a directory, e.g. folder:/data/images")
    return FolderSource(arg, **kw)  # type: ignore[arg-type]
