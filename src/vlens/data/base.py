"""Dataset records and the `DatasetSource` plug-in point.

A source turns a dataset on disk into `Sample` records. Sources never decode images
(that happens lazily, per sample, in `vlens.data.images`), so listing a million-image
dataset is cheap and one bad file becomes one error row, not a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from vlens.registry import Registry


@dataclass
class Sample:
    """One dataset item. `uri` is an absolute path inside the dataset root.

    `boxes` are ``[x0, y0, x1, y1]`` in pixels with `box_labels` beside them (detection);
    `mask_uri` points to a mask image (segmentation / object mask: non-zero = object).
    `metadata` holds any extra columns (e.g. world attributes) and flows into the tables.
    `error` is set by a source for a sample it must not read (e.g. ``path_outside_root: ...``):
    the sample stays listed and becomes an error row, so nothing silently vanishes.
    """

    id: str
    uri: str
    label: str | None = None
    boxes: list[list[float]] | None = None
    box_labels: list[str] | None = None
    mask_uri: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@runtime_checkable
class DatasetSource(Protocol):
    """Anything that lists samples and knows its class names."""

    root: str
    class_names: list[str]

    def __iter__(self) -> Iterator[Sample]: ...

    def __len__(self) -> int: ...


SOURCES: Registry[DatasetSource] = Registry("dataset source")
