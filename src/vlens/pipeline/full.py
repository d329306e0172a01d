"""Everything in one go: explain, analyze, report — and the offline demo built on it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vlens.engine.cache import Cache
from vlens.engine.digest import file_digest
from vlens.engine.store import RunStore, atomic_write_bytes
from vlens.errors import ConfigError
from vlens.pipeline.run import ExplainOptions, explain


@dataclass
class RunResult:
    """A finished run: per-sample table, findings and slices (plain pandas / records)."""

    path: Path
    samples: pd.DataFrame
    findings: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"RunResult({str(self.path)!r}, samples={len(self.samples)}, "
                f"findings={len(self.findings)}, slices={len(self.slices)})")


ANALYSIS_TABLES = ("samples", "predictions", "saliency", "vlm", "concepts", "grounding",
                   "embeddings")
ANALYSIS_CODE = ("vlens.analysis", "vlens.pipeline.hooks", "vlens.pipeline.vlm_hooks",
                 "vlens.pipeline.counterfactual", "vlens.vlm.judge")
ANALYSIS_FP = "analysis/1"  # cache fingerprint of whole findings.json results
DIGEST_FILE = "findings.digest"  # beside findings.json: the digest it was computed from


def analysis_digest(run_dir: str | Path, vlm: Any = None, gen_vlm: Any = None,
                    occlude: Any = None, **config: Any) -> str:
    """What findings.json depends on: the run's tables (bytes), the analysis config, the VLMs
    used by the hooks (fingerprints), the vlens version and the analysis code itself."""
    import vlens
    from vlens.engine.digest import code_digest, inputs_digest

    return inputs_digest(run_dir, ANALYSIS_TABLES, extra={
        "config": config, "vlm": getattr(vlm, "fingerprint", None) if vlm is not None else None,
        "gen_vlm": getattr(gen_vlm, "fingerprint", None) if gen_vlm is not None else None,
        "occlude": getattr(occlude, "what", "yes") if occlude is not None else None,
        "version": getattr(vlens, "__version__", "?"), "code": code_digest(ANALYSIS_CODE),
    })


def _own_run_info(data: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A cached result names the run it was computed for: rename it to this one."""
    info = data.get("run")
    if isinstance(info, dict) and "name" in info:
        data = {**data, "run": {**info, "name": run_dir.name}}
    return data


def analyze_run(run_dir: str | Path, vlm: Any = None, cache: Cache | None = None,
                gen_vlm: Any = None, occlude: Any = None, **config: Any) -> dict[str, Any]:
    """Run the dataset-level analysis on a run dir; writes and returns findings.json.

    With a contrastive or generative `vlm`, UtilityK is measured too (explanation vs image).
    With a generative `gen_vlm`, it also describes what each failure slice's members share
    (a contact sheet vs correct samples of the class) and rewrites the narrative; both keep
    the template text when the answer fails validation (`vlens.pipeline.vlm_hooks`).
    With `occlude` (`vlens.pipeline.counterfactual.background_occluder`), the top cue
    findings get an occlusion check against a control, and confirmed shortcuts a finding.

    Skipped when its inputs did not change: findings.json is keyed by `analysis_digest`
    (stored in findings.digest), so re-running on the same run dir reads it back, and a new
    run dir with the same tables gets the result from `cache` without any VLM call.
    """
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    digest = analysis_digest(run_dir, vlm, gen_vlm, occlude, **config)
    dfile, ffile = run_dir / DIGEST_FILE, run_dir / "findings.json"
    # the digest file also records findings.json's own hash: a findings.json rewritten by
    # anything else (e.g. `vlens analyze` with other options) is never taken as this result
    if dfile.is_file() and ffile.is_file() and \
            dfile.read_text().split() == [digest, file_digest(ffile)]:
        data = store.read_json("findings.json")
        if isinstance(data, dict):
            return data
    data = None
    if cache is not None:
        hit = cache.get_many(ANALYSIS_FP, [digest]).get(digest)
        if hit is not None:
            data = _own_run_info(hit["findings"], run_dir)
    if data is None:
        # imported only when the analysis really runs (scipy, sklearn: seconds to import)
        from vlens.analysis import AnalysisConfig, AnalysisInput, Hooks, analyze
        from vlens.pipeline.hooks import utility_answers
        from vlens.pipeline.vlm_hooks import describe_hook, rewrite_hook

        hooks = Hooks(utility=utility_answers(run_dir, vlm, cache=cache)
                      if vlm is not None else None,
                      describe=describe_hook(gen_vlm, run_dir) if gen_vlm is not None else None,
                      rewrite=rewrite_hook(gen_vlm) if gen_vlm is not None else None,
                      occlude=occlude)
        res = analyze(AnalysisInput.from_run(run_dir), AnalysisConfig(**config), hooks)
        # through JSON once, so what is returned equals what a later run reads back
        data = json.loads(json.dumps(res.to_dict(), default=str))
        if cache is not None:
            cache.put_many(ANALYSIS_FP, {digest: {"findings": data}})
    # findings first, then the digest: a crash between the two only redoes the analysis
    store.write_json("findings.json", data)
    atomic_write_bytes(dfile, f"{digest}\n{file_digest(ffile)}\n".encode())
    return data


REPORT_CODE = ("vlens.report",)
REPORT_DIGEST_FILE = "report.digest"


def report_run(run_dir: str | Path) -> Path:
    """Build report/index.html unless the one there was built from the same inputs.

    Keyed by the findings (and their digest), config.yaml and the report code; the tables
    it reads are part of the findings digest. Returns the report's path either way.
    """
    from vlens.engine.digest import code_digest, inputs_digest

    run_dir = Path(run_dir)
    digest = inputs_digest(run_dir, ("saliency",),
                           files=("findings.json", DIGEST_FILE, "config.yaml"),
                           extra={"code": code_digest(REPORT_CODE)})
    index = run_dir / "report" / "index.html"
    dfile = run_dir / REPORT_DIGEST_FILE
    if index.is_file() and dfile.is_file() and dfile.read_text().strip() == digest:
        return index
    dfile.unlink(missing_ok=True)  # a crash while building must not leave a stale match
    from vlens.report import build_report

    path = build_report(run_dir)
    atomic_write_bytes(dfile, digest.encode())
    return path


def per_sample_table(run_dir: str | Path) -> pd.DataFrame:
    """samples + predictions + saliency + judge answers, one row per sample."""
    from vlens.runs import load_run

    r = load_run(run_dir)
    df = r.joined()
    if df is None:
        return pd.DataFrame()
    for name, prefix in (("saliency", "saliency_"), ("vlm", "judge_")):
        t = getattr(r, name)
        if t is None:
            continue
        t = t.rename(columns={c: f"{prefix}{c}" for c in ("status", "error") if c in t})
        df = df.merge(t.drop(columns=[c for c in t.columns if c in df.columns and c != "id"]),
                      on="id", how="left")
    return df


def generative_judge(vlm: Any) -> Any:
    """The judge VLM when it judged by prompting (a generative backend that is not
    contrastive); None otherwise. Contrastive backends (embedded, CLIP) judge by the rule and
    cannot fill the slice-description and narrative answer formats."""
    from vlens.vlm.base import CONTRASTIVE, GENERATIVE

    caps = getattr(vlm, "capabilities", frozenset())
    return vlm if GENERATIVE in caps and CONTRASTIVE not in caps else None


def run(
    model: str | Any,
    data: str | Any,
    out: str | Path,
    options: ExplainOptions | None = None,
    cache: Cache | None = None,
    report: bool = True,
    analysis: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> RunResult:
    """explain + analyze (+ report): the Python face of `vlens run`."""
    ex = explain(model, data, out, options, cache=cache, config=config)
    from vlens.pipeline.counterfactual import background_occluder

    findings = analyze_run(out, vlm=ex.concept_vlm, cache=cache,
                           gen_vlm=generative_judge(ex.judge_vlm),
                           occlude=background_occluder(ex.adapter, ex.source),
                           **(analysis or {}))
    path = report_run(out) if report else None
    return RunResult(
        path=Path(out), samples=per_sample_table(out), findings=findings.get("findings", []),
        slices=findings.get("slices", []), report=path, raw=findings,
    )


DEMO_CONFIG = "demo_test"


def demo(
    out: str | Path = "runs/demo",
    n: int = 600,
    seed: int = 7,
    options: ExplainOptions | None = None,
    cache: Cache | None = None,
) -> RunResult:
    """Generate a balanced test world, explain the shipped (biased) demo model on it with the
    embedded VLM, analyze and write the report. Fully offline."""
    from vlens.world import make_dataset

    out = Path(out)
    data_dir = out / "data"
    manifest = data_dir / "manifest.jsonl"
    marker = data_dir / ".complete"
    want = f"{DEMO_CONFIG} n={n} seed={seed}"
    if not (marker.exists() and marker.read_text() == want):
        if RunStore(out).has_table("predictions"):
            raise ConfigError(
                f"{out} holds a demo run made with other settings than {want!r}; "
                "pass a new --out (or delete the folder)"
            )
        manifest = make_dataset(DEMO_CONFIG, data_dir, n=n, seed=seed)
        marker.write_text(want)
    return run("demo", f"manifest:{manifest}", out, options or ExplainOptions(), cache=cache,
               config={"command": "demo", "world": DEMO_CONFIG, "n": n, "seed": seed})


def agreement(run_dir: str | Path, human_csv: str | Path | None = None) -> dict[str, Any]:
    """How far to trust the judge: its focus score vs the true share of saliency energy on
    the object (when the data has object masks) and vs human scores (a CSV: id, score).
    Writes agreement.json beside the run's tables."""
    from vlens.analysis.agreement import focus_vs_energy, human_agreement, read_human_scores
    from vlens.runs import load_run

    r = load_run(run_dir)
    if r.vlm is None:
        raise ConfigError(f"{run_dir} has no judge answers yet; run `vlens explain` first")
    judge = r.vlm[r.vlm["status"] == "ok"].set_index("id")["focus_score"].astype(float)
    out: dict[str, Any] = {"n_judged": int(len(judge))}
    if r.saliency is not None and "energy_on_object" in r.saliency:
        energy = r.saliency.set_index("id")["energy_on_object"].reindex(judge.index)
        if energy.notna().sum() >= 3:
            out["focus_vs_energy"] = focus_vs_energy(judge.to_numpy(), energy.to_numpy())
    if human_csv is not None:
        out["human"] = human_agreement(judge, read_human_scores(human_csv))
    RunStore(run_dir).write_json("agreement.json", out)
    return out
