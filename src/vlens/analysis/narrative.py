"""Narrative: plain sentences generated from findings; every sentence names its findings.

Templates are always available. An optional `rewrite(sentences) -> sentences` callable (a
generative VLM/LLM) may reword them; its output is accepted only if every sentence still
names only existing finding ids and the set of cited ids is unchanged, otherwise the
template sentences are kept (and `rewrite_rejected` says why).
"""

from __future__ import annotations

from collections.abc import Callable

from vlens.analysis.findings import Findings


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * float(x):.0f}%"


def _counterfactual(f) -> str:
    cf = f.stats.get("counterfactual") or {}
    if not cf.get("confirmed"):
        return ""
    return (f" Swapping {cf['hidden']} for one without it changes {_pct(cf['flip_rate'])} of "
            f"these predictions (vs {_pct(cf['control_flip_rate'])} for one with it).")


def _sentence(f) -> str:
    return _base_sentence(f) + _counterfactual(f)


def _base_sentence(f) -> str:
    s, e = f.stats, f.evidence.get("numbers", {})
    tail = "" if f.confirmed else " (not confirmed on the held-out half)"
    if f.kind == "spurious_cue":
        return (f"Images showing '{f.concept}' are predicted '{f.cls}' far more often than "
                f"their labels justify ({_pct(e.get('rate_with'))} of non-'{f.cls}' images "
                f"with it vs {_pct(e.get('rate_without'))} without){tail}.")
    if f.kind == "concept_error":
        where = f"class '{f.cls}'" if f.cls else "every class"
        if e.get("err_with") is None and e.get("odds_ratio") is not None:  # across classes
            return (f"In {where}, images showing '{f.concept}' are misclassified more often "
                    f"(odds ratio {float(e['odds_ratio']):.1f} within classes){tail}.")
        return (f"In {where}, images showing '{f.concept}' are misclassified "
                f"{_pct(e.get('err_with'))} of the time vs {_pct(e.get('err_without'))} "
                f"without it{tail}.")
    if f.kind == "attention_cue":
        return (f"When predicting '{f.cls}', the attended region shows '{f.concept}' more than "
                f"the object in {_pct(e.get('rate'))} of images{tail}.")
    if f.kind == "shortcut":
        return (f"Hiding '{f.concept}' changes the prediction for "
                f"{_pct(e.get('flip_rate'))} of the tested images{tail}.")
    if f.kind == "slice":
        return (f"A group of {s.get('size')} '{f.cls}' images ({f.title.split(': ', 1)[-1]}) "
                f"is misclassified {_pct(s.get('error_rate'))} of the time{tail}.")
    if f.kind == "confusion_pair":
        return f"{f.title}{tail}."
    if f.kind == "label_error":
        return (f"{f.title} (estimated label-noise rate {_pct(s.get('noise_rate'))}); they are "
                f"candidates to re-check by hand, not confirmed errors{tail}.")
    return f"{f.title}{tail}."


def template_narrative(findings: Findings, max_sentences: int = 8) -> list[dict]:
    """One sentence per top finding (in score order) plus an opening accuracy sentence."""
    out = []
    run = findings.run
    if run.get("n_samples"):
        out.append({"text": f"The model was analysed on {run['n_samples']} images; accuracy "
                            f"{_pct(run.get('accuracy'))}, {run.get('n_errors')} errors, "
                            f"{len(findings.findings)} findings.",
                    "finding_ids": [f.id for f in findings.findings]})
    for f in findings.findings[:max_sentences]:
        out.append({"text": _sentence(f), "finding_ids": [f.id]})
    return [s for s in out if s["finding_ids"]]


def narrative(findings: Findings, rewrite: Callable[[list[dict]], list[dict]] | None = None,
              max_sentences: int = 8) -> tuple[list[dict], str | None]:
    """Template sentences, optionally reworded; returns (sentences, rejection reason)."""
    base = template_narrative(findings, max_sentences)
    if rewrite is None:
        return base, None
    known = {f.id for f in findings.findings}
    cited = {i for s in base for i in s["finding_ids"]}
    try:
        new = rewrite([dict(s) for s in base])
    except Exception as e:  # a failing LLM must not break the analysis
        return base, f"rewrite failed: {e}"
    if not isinstance(new, list) or not new:
        return base, "rewrite returned no sentences"
    for s in new:
        if not isinstance(s, dict) or not str(s.get("text", "")).strip():
            return base, "rewrite returned a sentence without text"
        ids = s.get("finding_ids") or []
        if not ids or not set(ids) <= known:
            return base, "rewrite dropped or invented finding ids"
    if {i for s in new for i in s["finding_ids"]} != cited:
        return base, "rewrite changed which findings are cited"
    return [{"text": str(s["text"]), "finding_ids": list(s["finding_ids"])} for s in new], None
