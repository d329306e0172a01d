"""`AnalysisConfig` (every knob of `analyze`, with defaults) and `Hooks` (optional callables
the pipeline supplies: occlusion, slice description, narrative rewrite, UtilityK answers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vlens.errors import ConfigError


@dataclass
class AnalysisConfig:
    focus_threshold: float = 2.5
    # concept presence thresholds (see tables.concept_thresholds)
    threshold_method: str = "otsu"
    threshold_quantile: float = 0.2
    threshold_value: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)  # per-concept overrides
    class_concepts: dict[str, str] = field(default_factory=dict)  # class -> concept name
    concepts: list[str] | None = None  # restrict to these concept columns
    test_class_concepts: bool = False  # also test class-name concepts as biases
    # tests
    alpha: float = 0.05  # BH false-discovery rate across every test of the discovery half
    confirm_alpha: float = 0.05  # one-sided p on the held-out half to call a finding confirmed
    min_support: int = 10  # samples with the concept (in the discovery half)
    min_events: int = 5  # errors / unjustified predictions among them
    min_lift: float = 1.5
    attention_p0: float = 0.5
    attention_min_rate: float = 0.5
    # descriptive findings
    n_confusion_pairs: int = 5
    min_pair_count: int = 5
    label_error_min_posterior: float = 0.5  # P(label wrong), see analysis.label_errors
    max_label_errors: int = 1000  # candidates listed (the finding counts them all)
    # slices
    slices: bool = True
    baseline_slices: bool = True
    pca_dim: int = 16
    slice_concept_dim: int = 4  # + this many PCA components of the concept log-odds (0: off)
    max_components: int = 6
    error_weight: float = 3.0
    min_slice_errors: int = 10
    n_baseline_slices: int = 10
    max_fit: int = 10000
    # counterfactual
    shortcut_min_flip_rate: float = 0.3  # flip rate, cue removed minus cue kept
    max_counterfactual: int = 5
    counterfactual_n: int = 100  # cue samples sent to the hook (twice: cue removed / kept)
    # output
    max_ids: int = 50
    max_findings: int = 100
    chunk: int = 32768
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.confirm_alpha < 1:
            raise ConfigError("alpha and confirm_alpha must be in (0, 1)")
        if not 0 <= self.focus_threshold <= 5:
            raise ConfigError(f"focus_threshold must be within 0-5, got {self.focus_threshold}")
        if self.min_lift < 1:
            raise ConfigError("min_lift must be >= 1")
        if not 0 < self.label_error_min_posterior < 1:
            raise ConfigError("label_error_min_posterior must be in (0, 1)")
        if self.chunk < 1:
            raise ConfigError("chunk must be positive")


@dataclass
class Hooks:
    """Optional callables; each one is skipped when None.

    occlude(ids, concept, donors=ids) -> new predictions (class names, None where a sample
        cannot be edited) after replacing the region the concept lives in with that of one
        of the `donors` (called once with donors without the concept, once with donors
        showing it); an optional `what` attribute names the region (e.g. "the background");
    describe(member_ids, nonmember_ids) -> text describing what the members share;
    rewrite(sentences) -> sentences (each {"text", "finding_ids"});
    utility: {"guess_explanation": [...], "guess_image": [...], "model_pred": [...], "k": 3}.
    """

    occlude: Callable | None = None
    describe: Callable | None = None
    rewrite: Callable | None = None
    utility: dict | None = None
