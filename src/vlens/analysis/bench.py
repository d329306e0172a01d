"""Scoring findings against planted truth (used by `vlens bench` on generated worlds).

`planted` = {"biases": [{"class", "concept", "kind"?}], "slices": [{"class"?, "sample_ids"}],
"label_errors": [ids]}; every part is optional.
- bias recall@k: share of planted biases matched by one of the top-k findings; a finding
  matches when its concept names the planted concept (case-insensitive) for the right class
  (and, if the planted entry gives a kind, that kind);
- slices, in the dcbench sense (Domino's metric): for each planted slice, precision@10 of
  the best discovered slice (its top-10 ranked members) and recall of that slice's listed
  members; the same for the baseline slices, side by side;
- label errors: precision and recall of the candidate ids, and precision@k of the ranked
  list (k = 10, 25, 50; None when fewer than k candidates); the number of candidates is
  always given (without planted noise, each one is a false positive).
"""

from __future__ import annotations

from vlens.analysis.findings import Findings


def _norm(x) -> str:
    return str(x).strip().lower() if x is not None else ""


def _matches(f: dict, bias: dict) -> bool:
    if _norm(f.get("concept")) != _norm(bias.get("concept")):
        return False
    if bias.get("class") is not None and _norm(f.get("class")) != _norm(bias["class"]):
        return False
    return not bias.get("kind") or f.get("kind") == bias["kind"]


def slice_scores(slices: list[dict], truth: list[dict], k: int = 10) -> list[dict]:
    """Best precision@k and the recall of the same slice, for each planted slice."""
    out = []
    for t in truth:
        members = set(map(str, t["sample_ids"]))
        best = {"precision_at_k": 0.0, "recall": 0.0, "slice": None}
        for s in slices:
            ids = [str(i) for i in s.get("sample_ids", [])]
            if not ids:
                continue
            prec = sum(i in members for i in ids[:k]) / k
            rec = len(members.intersection(ids)) / max(len(members), 1)
            if (prec, rec) > (best["precision_at_k"], best["recall"]):
                best = {"precision_at_k": prec, "recall": rec, "slice": s.get("id")}
        out.append({"class": t.get("class"), "size": len(members), **best})
    return out


def score_findings(findings, planted: dict, ks=(1, 3, 5, 10)) -> dict:
    """Score a `Findings` (or its dict) against the planted truth; see module doc."""
    d = findings.to_dict() if isinstance(findings, Findings) else findings
    fl = sorted(d.get("findings", []), key=lambda f: -float(f.get("score") or 0))
    out: dict = {}
    biases = planted.get("biases") or []
    if biases:
        ranks = []
        for b in biases:
            r = next((i + 1 for i, f in enumerate(fl) if _matches(f, b)), None)
            ranks.append(r)
        out["bias_ranks"] = ranks
        for k in ks:
            out[f"bias_recall@{k}"] = sum(r is not None and r <= k for r in ranks) / len(ranks)
    if planted.get("slices"):
        ours = slice_scores(d.get("slices", []), planted["slices"])
        base = slice_scores(d.get("baseline_slices", []), planted["slices"])
        out["slices"] = ours
        out["baseline_slices"] = base
        out["slice_precision@10"] = sum(s["precision_at_k"] for s in ours) / len(ours)
        out["slice_recall"] = sum(s["recall"] for s in ours) / len(ours)
        out["baseline_precision@10"] = sum(s["precision_at_k"] for s in base) / len(base)
        out["baseline_recall"] = sum(s["recall"] for s in base) / len(base)
    # always: on a world without injected label noise every candidate is a false positive
    out["label_error_candidates"] = len(d.get("label_error_candidates", []))
    if "label_errors" in planted:
        truth = set(map(str, planted["label_errors"]))
        ranked = [str(c["id"]) for c in d.get("label_error_candidates", [])]
        cand = set(ranked)
        hit = len(truth & cand)
        for k in (10, 25, 50):
            out[f"label_error_precision@{k}"] = (sum(i in truth for i in ranked[:k]) / k
                                                 if len(ranked) >= k else None)
        out["label_error_precision"] = hit / len(cand) if cand else 0.0
        out["label_error_recall"] = hit / len(truth) if truth else 0.0
    return out
