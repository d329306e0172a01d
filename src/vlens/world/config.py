"""`WorldConfig`: what the generator draws and which biases it plants (validated YAML).

A config is loaded from a YAML path or by the bare name of a shipped config
(``WorldConfig.load("demo_train")``, files in ``vlens/world/configs/``). Its `biases` list is
the machine-readable ground truth the benchmark scores discovered findings against
(`WorldConfig.planted()`).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vlens.errors import ConfigError
from vlens.world.attributes import BACKGROUNDS, COLORS, CORNERS, LIGHTINGS, SHAPES, SIZES

Prob = Annotated[float, Field(ge=0.0, le=1.0)]

# Attribute families a bias may act on, with their allowed values.
BIASABLE: dict[str, list[str]] = {
    "background": BACKGROUNDS,
    "color": COLORS,
    "size": SIZES,
    "lighting": LIGHTINGS,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SpuriousBias(_Strict):
    """Class `cls` shows `attribute=value` with probability `p` (P(value | class) = p).

    Other classes show the value with probability `other_p` (None: their natural rate).
    """

    kind: Literal["spurious"] = "spurious"
    name: str | None = None
    cls: str = Field(alias="class")
    attribute: Literal["background", "color", "size", "lighting"]
    value: str
    p: Prob
    other_p: Prob | None = None


class ShortcutBias(_Strict):
    """The corner tag appears with class `cls` with probability `p`, with others at `other_p`."""

    kind: Literal["shortcut"] = "shortcut"
    name: str | None = None
    cls: str = Field(alias="class")
    p: Prob
    other_p: Prob = 0.01


class RareSliceBias(_Strict):
    """Items matching every `where` condition make up only a fraction `p` of the data."""

    kind: Literal["rare_slice"] = "rare_slice"
    name: str | None = None
    where: dict[Literal["background", "color", "size", "lighting"], str]
    p: Prob


class LabelNoiseBias(_Strict):
    """The recorded label of a `rate` fraction of items (of `classes`, default all) is wrong.

    A noisy label is `to` if given, else a uniformly drawn other class; `true_label` keeps
    the truth.
    """

    kind: Literal["label_noise"] = "label_noise"
    name: str | None = None
    rate: Prob
    classes: list[str] | None = None
    to: str | None = None


Bias = Annotated[
    SpuriousBias | ShortcutBias | RareSliceBias | LabelNoiseBias, Field(discriminator="kind")
]


def _uniform(values: list[str]) -> dict[str, float]:
    return {v: 1.0 / len(values) for v in values}


class WorldConfig(_Strict):
    """Everything the generator needs. Probabilities are normalised where they are weights."""

    name: str = "custom"
    description: str = ""
    image_size: Literal[64, 96] = 64
    classes: list[str] = Field(default_factory=lambda: SHAPES[:6])
    class_probs: dict[str, float] | None = None
    colors: list[str] = Field(default_factory=lambda: list(COLORS))
    backgrounds: list[str] = Field(default_factory=lambda: list(BACKGROUNDS))
    size_probs: dict[str, float] = Field(default_factory=lambda: _uniform(SIZES))
    lighting_probs: dict[str, float] = Field(
        default_factory=lambda: {"dark": 0.2, "normal": 0.6, "bright": 0.2}
    )
    blur_rate: Prob = 0.1
    noise_rate: Prob = 0.1
    occlusion_rate: Prob = 0.1
    tag_rate: Prob = 0.05
    tag_corners: list[str] = Field(default_factory=lambda: ["top-left"])
    distractor_probs: dict[int, float] = Field(default_factory=lambda: {0: 0.5, 1: 0.3, 2: 0.2})
    test: str | None = None  # the balanced config to evaluate a model trained on this one
    biases: list[Bias] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        def sub(kind: str, got: list[str], allowed: list[str]) -> None:
            bad = [v for v in got if v not in allowed]
            if bad:
                raise ValueError(f"unknown {kind} {bad}; allowed: {allowed}")
            if len(set(got)) != len(got) or not got:
                raise ValueError(f"{kind} list must be non-empty without repeats")

        sub("shape", self.classes, SHAPES)
        if len(self.classes) < 2:
            raise ValueError("need at least 2 classes")
        sub("colour", self.colors, COLORS)
        sub("background", self.backgrounds, BACKGROUNDS)
        sub("tag corner", self.tag_corners, CORNERS)
        for kind, probs, allowed in (
            ("size", self.size_probs, SIZES),
            ("lighting", self.lighting_probs, LIGHTINGS),
            *([("class", self.class_probs, self.classes)] if self.class_probs else []),
        ):
            sub(kind, list(probs), allowed)
            if any(w < 0 for w in probs.values()) or sum(probs.values()) <= 0:
                raise ValueError(f"{kind} weights must be >= 0 with a positive sum")
        if any(k not in (0, 1, 2) for k in self.distractor_probs):
            raise ValueError("distractor counts must be 0, 1 or 2")
        pools = {
            "background": self.backgrounds,
            "color": self.colors,
            "size": list(self.size_probs),
            "lighting": list(self.lighting_probs),
        }
        names: set[str] = set()
        for i, b in enumerate(self.biases):
            if b.name is None:
                b.name = f"{b.kind}_{i}"
            if b.name in names:
                raise ValueError(f"duplicate bias name {b.name!r}")
            names.add(b.name)
            for c in [
                getattr(b, "cls", None),
                getattr(b, "to", None),
                *(getattr(b, "classes", None) or []),
            ]:
                if c is not None and c not in self.classes:
                    raise ValueError(f"bias {b.name!r}: class {c!r} is not in classes")
            if isinstance(b, SpuriousBias) and b.value not in pools[b.attribute]:
                raise ValueError(f"bias {b.name!r}: {b.attribute}={b.value!r} cannot be drawn")
            if isinstance(b, RareSliceBias):
                for a, v in b.where.items():
                    if v not in pools[a]:
                        raise ValueError(f"bias {b.name!r}: {a}={v!r} cannot be drawn")
        spur = [(b.attribute) for b in self.biases if isinstance(b, SpuriousBias)]
        if len(set(spur)) != len(spur):
            raise ValueError("at most one spurious bias per attribute")
        if sum(isinstance(b, ShortcutBias) for b in self.biases) > 1:
            raise ValueError("at most one shortcut bias")
        if sum(isinstance(b, LabelNoiseBias) for b in self.biases) > 1:
            raise ValueError("at most one label_noise bias")
        return self

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def shipped(cls) -> list[str]:
        """Names of the configs shipped in the package."""
        root = resources.files("vlens.world") / "configs"
        return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))

    @classmethod
    def load(cls, spec: str | Path | WorldConfig) -> WorldConfig:
        """Load from a YAML path or a shipped name such as ``"demo_train"``."""
        if isinstance(spec, WorldConfig):
            return spec
        path = Path(spec)
        if not path.is_file():
            name = str(spec).removesuffix(".yaml")
            shipped = resources.files("vlens.world") / "configs" / f"{name}.yaml"
            if "/" in name or not shipped.is_file():
                raise ConfigError(
                    f"world config {str(spec)!r} is neither a file nor a shipped config "
                    f"({', '.join(cls.shipped())})"
                )
            text = shipped.read_text()
        else:
            text = path.read_text()
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"world config {str(spec)!r} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"world config {str(spec)!r} must be a YAML mapping")
        return cls.from_dict(data, source=str(spec))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> WorldConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            msgs = "; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or '(root)'}: {err['msg']}"
                for err in e.errors()
            )
            raise ConfigError(f"invalid world config {source}: {msgs}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def fingerprint(self) -> str:
        """Stable short hash of the config (part of each item's identity)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def planted(self) -> list[dict[str, Any]]:
        """The planted biases as plain dicts (kind, name, class, attribute, value, p, ...)."""
        out = []
        for b in self.biases:
            d = b.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(b, SpuriousBias):
                d["description"] = f"{b.cls} appears with {b.attribute}={b.value} (p={b.p})"
            elif isinstance(b, ShortcutBias):
                d["attribute"], d["value"] = "tag", "tag"
                d["description"] = f"the corner tag appears with {b.cls} (p={b.p})"
            elif isinstance(b, RareSliceBias):
                cond = " & ".join(f"{a}={v}" for a, v in b.where.items())
                d["description"] = f"the slice {cond} is rare (p={b.p})"
            else:
                d["description"] = f"{b.rate:.0%} of labels are wrong"
            out.append(d)
        return out
