"""`analyze(input, config, hooks) -> Findings`: every dataset-level finding, checked.

Order of work: run summary and XAI matrix; concept thresholds; one streaming pass for the
(split, label, pred, concept) counts (and one over the grounding matrix); tests on the
discovery half with one Benjamini-Hochberg correction over all of them; confirmation of
each selected test on the held-out half; descriptive findings (confusion pairs, label-error
candidates); slices; optional hooks; ids by score; narrative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vlens.analysis import concepts as cx
from vlens.analysis import label_errors, mistakes
from vlens.analysis import slices as sl
from vlens.analysis.config import AnalysisConfig, Hooks
from vlens.analysis.findings import Finding, Findings, final_score, strength
from vlens.analysis.inputs import AnalysisInput
from vlens.analysis.narrative import narrative
from vlens.analysis.stats import bh_fdr
from vlens.analysis.tables import binarise, concept_thresholds, count_tables
from vlens.analysis.utility import utility_k
from vlens.errors import ConfigError, DataError


def _thresholds(mat, names, cfg: AnalysisConfig) -> np.ndarray:
    thr = concept_thresholds(mat, cfg.threshold_method, cfg.threshold_quantile,
                             cfg.threshold_value, cfg.chunk)
    unknown = set(cfg.thresholds) - set(names)
    if unknown:
        raise ConfigError(f"thresholds given for unknown concept(s): {sorted(unknown)}")
    for k, v in cfg.thresholds.items():
        thr[names.index(k)] = v * 255.0 if mat.dtype == np.uint8 else v
    return thr


def _select_concepts(inp: AnalysisInput, cfg: AnalysisConfig) -> None:
    if cfg.concepts is None or inp.concepts is None:
        return
    missing = [c for c in cfg.concepts if c not in inp.concept_names]
    if missing:
        raise ConfigError(f"concept(s) not in the run: {missing}")
    cols = [inp.concept_names.index(c) for c in cfg.concepts]
    inp.concepts = inp.concepts[:, cols]
    inp.concept_names = list(cfg.concepts)


class _Ctx:
    """Shared state while building findings (input, config, thresholds, tables)."""

    def __init__(self, inp: AnalysisInput, cfg: AnalysisConfig):
        self.inp, self.cfg = inp, cfg
        self.out: list[Finding] = []

    def ids_where(self, mask: np.ndarray, j: int | None = None) -> list[str]:
        rows = np.flatnonzero(mask)
        if j is not None and len(rows):
            col = self.inp.concepts[rows, j:j + 1]
            rows = rows[binarise(col, self.thr[j:j + 1])[:, 0].astype(bool)]
        return self.inp.ids[rows[: self.cfg.max_ids]].tolist()

    def add(self, kind, title, cls, concept, s, stats, confirmed, confirmation, evidence):
        self.out.append(Finding(id="", kind=kind, title=title, cls=cls, concept=concept,
                                score=final_score(s, confirmed), stats=stats,
                                confirmed=confirmed, confirmation=confirmation,
                                evidence=evidence))


def _concept_findings(ctx: _Ctx) -> None:
    inp, cfg, names, classes = ctx.inp, ctx.cfg, ctx.inp.concept_names, ctx.inp.classes
    t = ctx.tables
    ce = [cx.concept_error_arrays(*t.merged(s)) for s in (0, 1, None)]
    sp = [cx.spurious_arrays(*t.merged(s)) for s in (0, 1, None)]
    own = np.zeros((len(classes), len(names)), dtype=bool)
    ok = ctx.ccols >= 0
    own[np.flatnonzero(ok), ctx.ccols[ok]] = True
    att = None
    if inp.grounding is not None and (ctx.gcols >= 0).any():
        gthr = concept_thresholds(inp.grounding, cfg.threshold_method,
                                  cfg.threshold_quantile, cfg.threshold_value, cfg.chunk)
        cnt, nv = cx.attention_counts(inp.grounding, inp.pred, inp.split, ctx.gcols,
                                      len(classes), cfg.chunk, gthr)
        att = [cx.attention_arrays(c_, n_, cfg.attention_p0)
               for c_, n_ in ((cnt[0], nv[0]), (cnt[1], nv[1]), (cnt.sum(0), nv.sum(0)))]
    # class-name concepts ("looks like class d") explain confusions and label errors, which
    # have their own findings; they are not tested as biases unless asked
    cls_col = np.zeros(len(names), dtype=bool)
    if not cfg.test_class_concepts:
        cls_col[ctx.ccols[ok]] = True
    # one BH over every test performed on the discovery half
    tested = [np.where((ce[0]["support"] > 0) & ~cls_col, ce[0]["p"], np.nan),
              np.where((ce[0]["support"].sum(0) > 0) & ~cls_col, ce[0]["cmh_p"], np.nan),
              np.where((sp[0]["support"] > 0) & ~own & ~cls_col, sp[0]["p"], np.nan)]
    if att is not None:
        gown = np.zeros_like(att[0]["p"], dtype=bool)
        gok = ctx.gcols >= 0
        gown[np.flatnonzero(gok), ctx.gcols[gok]] = True
        tested.append(np.where((att[0]["n"] > 0) & ~gown, att[0]["p"], np.nan))
    flat = bh_fdr(np.concatenate([x.ravel() for x in tested]))
    qs, pos = [], 0
    for x in tested:
        qs.append(flat[pos:pos + x.size].reshape(x.shape))
        pos += x.size
    err = ~inp.correct
    spur_keys: set[tuple[int, int]] = set()

    def conf_dict(stat, value, p):
        return {"split": "holdout", "statistic": stat, "value": float(value), "p_value": float(p)}

    # spurious cues
    d, c1, a = sp
    sel = ((qs[2] <= cfg.alpha) & (d["support"] >= cfg.min_support)
           & (d["flips"] >= cfg.min_events) & (d["lift"] >= cfg.min_lift)
           & (d["share_lift"] >= cfg.min_lift))
    for c, j in zip(*np.nonzero(sel), strict=True):
        spur_keys.add((int(c), int(j)))
        confirmed = bool(c1["p"][c, j] <= cfg.confirm_alpha and c1["lift"][c, j] > 1)
        cname, con = classes[c], names[j]
        ctx.add("spurious_cue",
                f"Images with '{con}' are predicted '{cname}' far more often than labels justify",
                cname, con, strength(d["lift"][c, j], qs[2][c, j]),
                {"lift": d["lift"][c, j], "support": d["support"][c, j],
                 "flips": d["flips"][c, j], "p_value": d["p"][c, j], "q_value": qs[2][c, j],
                 "odds_ratio": d["odds"][c, j], "share_lift": d["share_lift"][c, j]},
                confirmed, conf_dict("lift", c1["lift"][c, j], c1["p"][c, j]),
                {"sample_ids": ctx.ids_where((inp.pred == c) & (inp.label != c), j),
                 "numbers": {k: a[k][c, j] for k in ("p_pred_given_concept",
                                                     "p_label_given_concept", "rate_with",
                                                     "rate_without", "lift", "support")}})
    # concept x error within class (errors explained by a spurious cue fold into it)
    d, c1, a = ce
    sel = ((qs[0] <= cfg.alpha) & (d["support"] >= cfg.min_support)
           & (d["errors_with"] >= cfg.min_events) & (d["lift"] >= cfg.min_lift))
    n_all, present_all = t.merged(None)
    found_concepts = set()
    for c, j in zip(*np.nonzero(sel), strict=True):
        dest = present_all[c, :, j].copy()
        dest[c] = -1
        b = int(np.argmax(dest))
        if (b, int(j)) in spur_keys:
            continue
        found_concepts.add(int(j))
        confirmed = bool(c1["p"][c, j] <= cfg.confirm_alpha and c1["lift"][c, j] > 1)
        cname, con = classes[c], names[j]
        ctx.add("concept_error",
                f"Class '{cname}' images with '{con}' are misclassified more often",
                cname, con, strength(d["lift"][c, j], qs[0][c, j]),
                {"lift": d["lift"][c, j], "support": d["support"][c, j],
                 "errors": d["errors_with"][c, j], "p_value": d["p"][c, j],
                 "q_value": qs[0][c, j]},
                confirmed, conf_dict("lift", c1["lift"][c, j], c1["p"][c, j]),
                {"sample_ids": ctx.ids_where((inp.label == c) & err, j),
                 "numbers": {"err_with": a["err_with"][c, j],
                             "err_without": a["err_without"][c, j], "lift": a["lift"][c, j],
                             "support": a["support"][c, j],
                             "most_often_predicted_as": classes[b]}})
    # stratified (CMH) across classes, only when no class-level finding names the concept
    sel = ((qs[1] <= cfg.alpha) & (d["support"].sum(0) >= cfg.min_support)
           & (d["errors_with"].sum(0) >= cfg.min_events) & (d["cmh_or"] >= cfg.min_lift))
    for j in np.flatnonzero(sel):
        if int(j) in found_concepts or any(k[1] == j for k in spur_keys):
            continue
        confirmed = bool(c1["cmh_p"][j] <= cfg.confirm_alpha and c1["cmh_or"][j] > 1)
        con = names[j]
        ctx.add("concept_error", f"Images with '{con}' are misclassified more often in "
                "every class", None, con, strength(d["cmh_or"][j], qs[1][j]),
                {"odds_ratio": d["cmh_or"][j], "support": d["support"][:, j].sum(),
                 "errors": d["errors_with"][:, j].sum(), "p_value": d["cmh_p"][j],
                 "q_value": qs[1][j], "test": "cmh"},
                confirmed, conf_dict("odds_ratio", c1["cmh_or"][j], c1["cmh_p"][j]),
                {"sample_ids": ctx.ids_where(err, j),
                 "numbers": {"odds_ratio": a["cmh_or"][j]}})
    if att is None:
        return
    d, c1, a = att
    gnames = inp.grounding_names
    sel = ((qs[3] <= cfg.alpha) & (d["n"] >= cfg.min_support)
           & (d["rate"] >= cfg.attention_min_rate) & (d["lift"] >= cfg.min_lift))
    for c, j in zip(*np.nonzero(sel), strict=True):
        confirmed = bool(c1["p"][c, j] <= cfg.confirm_alpha and c1["lift"][c, j] > 1)
        cname, con = classes[c], gnames[j]
        ctx.add("attention_cue",
                f"When predicting '{cname}', the model looks at '{con}' more than the object",
                cname, con, strength(d["lift"][c, j], qs[3][c, j]),
                {"rate": d["rate"][c, j], "lift": d["lift"][c, j], "support": d["n"][c, j],
                 "p_value": d["p"][c, j],
                 "q_value": qs[3][c, j], "p0": cfg.attention_p0},
                confirmed, conf_dict("rate", c1["rate"][c, j], c1["p"][c, j]),
                {"sample_ids": inp.ids[np.flatnonzero(inp.pred == c)][: cfg.max_ids].tolist(),
                 "numbers": {"rate": a["rate"][c, j], "n": a["n"][c, j]}})


def _pairs_and_labels(ctx: _Ctx, res: Findings) -> None:
    inp, cfg = ctx.inp, ctx.cfg
    n_all, present_all = ctx.tables.merged(None) if ctx.tables else (None, None)
    cm = mistakes.confusion_counts(inp)
    errs_per_class = cm.sum(1) - np.diag(cm)
    cm_split = [np.bincount(inp.label[inp.split == s] * len(inp.classes)
                            + inp.pred[inp.split == s], minlength=cm.size).reshape(cm.shape)
                for s in (0, 1)]
    for a_, b_, count in mistakes.top_confusions(inp, cfg.n_confusion_pairs, cfg.min_pair_count):
        cons = (mistakes.pair_concepts(n_all, present_all, a_, b_, inp.concept_names)
                if n_all is not None else [])
        ids = inp.ids[np.flatnonzero((inp.label == a_) & (inp.pred == b_))][: cfg.max_ids]
        entry = {"true": inp.classes[a_], "pred": inp.classes[b_], "count": count,
                 "concepts": [[c, round(dv, 4)] for c, dv, _, _ in cons],
                 "sample_ids": ids.tolist()}
        res.confusion_pairs.append(entry)
        cue = next((f for f in ctx.out if f.kind == "spurious_cue" and f.cls == inp.classes[b_]
                    and cons and f.concept == cons[0][0]), None)
        if cue is not None:  # explained by a spurious cue: evidence there, no new finding
            cue.evidence.setdefault("numbers", {}).setdefault("confusion_pairs", []).append(
                {"true": inp.classes[a_], "count": count})
            continue
        share = count / max(errs_per_class[a_], 1)
        confirmed = bool(cm_split[1][a_, b_] >= max(1, cfg.min_pair_count // 2))
        top = f" (more often with {cons[0][0]})" if cons else ""
        ctx.add("confusion_pair", f"'{inp.classes[a_]}' is mistaken for '{inp.classes[b_]}' "
                f"{count} times{top}", inp.classes[a_], cons[0][0] if cons else None,
                0.3 * share, {"count": count, "share_of_class_errors": share},
                confirmed, {"split": "holdout", "statistic": "count",
                            "value": int(cm_split[1][a_, b_])},
                {"sample_ids": ids.tolist(), "numbers": {"pred": inp.classes[b_],
                                                        "concepts": entry["concepts"]}})
    cands, info = label_errors.label_error_candidates(
        inp, ctx.ccols, max_candidates=cfg.max_label_errors,
        min_posterior=cfg.label_error_min_posterior, max_fit=cfg.max_fit, seed=cfg.seed)
    res.label_error_candidates = cands
    if not cands:
        return
    n_flag = info["n_flagged"]
    t0, t1 = info["tests"]
    n_err = int((~inp.correct).sum())
    pairs = pd.Series([(c["label"], c["suggested"]) for c in cands]).value_counts()
    views = " and the ".join(v if v == "model" else v.upper() for v in info["views"])
    p0 = t0["p_value"] if t0 else 1.0
    confirmed = bool(t1 is not None and t1["p_value"] <= cfg.confirm_alpha)
    ctx.add("label_error", f"{n_flag} images may be mislabelled: the {views} make the "
            "given label unlikely", None, None,
            0.3 * strength(1.0 / max(1e-9, 1.0 - min(0.99, 10 * info["noise_rate"])), p0),
            {"count": n_flag, "noise_rate": info["noise_rate"], "p_value": p0,
             "share_of_samples": n_flag / max(inp.n, 1),
             "share_of_errors": n_flag / max(n_err, 1)},
            confirmed, {"split": "holdout", "statistic": "noise_rate",
                        "value": t1["eps"] if t1 else None,
                        "p_value": t1["p_value"] if t1 else None},
            {"sample_ids": [c["id"] for c in cands[: cfg.max_ids]],
             "numbers": {"weights": info.get("weights"), "noise_rate": info["noise_rate"],
                         "flagged_by_half": info["n_flagged_by_half"],
                         "top_pairs": [[a, b, int(k)] for (a, b), k in
                                       pairs.head(5).items()]}})


def _slices(ctx: _Ctx, res: Findings, hooks: Hooks) -> None:
    inp, cfg = ctx.inp, ctx.cfg
    if inp.embeddings is None or not cfg.slices:
        return
    z = sl.reduce_embeddings(inp.embeddings, cfg.pca_dim, cfg.seed)
    zs = z
    if cfg.slice_concept_dim > 0 and inp.concepts is not None and inp.concepts.shape[1] > 1:
        zs = np.c_[z, sl.concept_features(inp.concepts, cfg.slice_concept_dim, cfg.seed,
                                          chunk=cfg.chunk)]
    err = ~inp.correct
    found = sl.error_slices(zs, inp.label, err, inp.split, inp.classes, inp.ids,
                            cfg.max_components, cfg.error_weight, cfg.min_slice_errors,
                            alpha=cfg.alpha, max_fit=cfg.max_fit, seed=cfg.seed,
                            min_lift=cfg.min_lift)
    sl.describe_slices(found, inp.ids, inp.label, inp.correct, hooks.describe)
    n_all, present_all = ctx.tables.merged(None) if ctx.tables else (None, None)
    class_err = np.bincount(inp.label[err], minlength=len(inp.classes)) / np.maximum(
        np.bincount(inp.label, minlength=len(inp.classes)), 1)
    for i, s in enumerate(found, 1):
        c = s["class_index"]
        prev = present_all[c, c] / max(n_all[c, c], 1) if n_all is not None else None
        s["concepts"] = sl.name_slice(s["member_rows"], inp.concepts, ctx.thr, prev,
                                      inp.concept_names)
        name = ", ".join(k for k, _ in s["concepts"]) or f"cluster {i}"
        sid = f"s{i:02d}"
        entry = {"id": sid, "name": name, "class": s["class"], "size": s["size"],
                 "error_rate": s["error_rate"], "concepts": s["concepts"],
                 "sample_ids": inp.ids[s["member_rows"][: cfg.max_ids]].tolist(),
                 "scores": [round(float(x), 4) for x in s["member_scores"][: cfg.max_ids]],
                 "confirmed": s["confirmed"], "confirmation": s["confirmation"]}
        if "description" in s:
            entry["description"] = s["description"]
        res.slices.append(entry)
        lift = s["error_rate"] / max(class_err[c], 1e-9)
        ctx.add("slice", f"Slice of '{s['class']}' errors: {name}", s["class"],
                s["concepts"][0][0] if s["concepts"] else None,
                strength(lift, s["p_value"]),
                {"size": s["size"], "error_rate": s["error_rate"], "lift": lift,
                 "p_value": s["p_value"], "slice_id": sid},
                s["confirmed"], s["confirmation"],
                {"sample_ids": entry["sample_ids"], "numbers": {"concepts": s["concepts"]}})
    if cfg.baseline_slices:
        for i, s in enumerate(sl.domino_baseline(
                z, inp.label, inp.pred, err, inp.confidence, len(inp.classes),
                cfg.n_baseline_slices, max_fit=cfg.max_fit, seed=cfg.seed), 1):
            res.baseline_slices.append({
                "id": f"b{i:02d}", "size": s["size"], "error_rate": s["error_rate"],
                "sample_ids": inp.ids[s["member_rows"][: cfg.max_ids]].tolist()})


def _consolidate_attention(ctx: _Ctx) -> None:
    """One claim, one finding. An attention cue naming the same (class, concept) as a
    spurious cue or concept-error finding corroborates it: its numbers move into that
    finding's evidence. The remaining attention cues of one predicted class become a single
    finding led by the strongest concept, listing the others, so one class whose attended
    regions differ from the rest does not crowd out every other finding."""
    others = {(f.cls, f.concept): f for f in ctx.out
              if f.kind in ("spurious_cue", "concept_error")}
    by_class: dict[str | None, list[Finding]] = {}
    kept: list[Finding] = []
    for f in ctx.out:
        if f.kind != "attention_cue":
            kept.append(f)
            continue
        host = others.get((f.cls, f.concept))
        if host is not None:
            nums = host.evidence.setdefault("numbers", {})
            nums["attended_rate"] = f.stats.get("rate")
            nums["attended_lift"] = f.stats.get("lift")
            continue
        by_class.setdefault(f.cls, []).append(f)
    for group in by_class.values():
        group.sort(key=lambda f: -f.score)
        lead, rest = group[0], group[1:]
        if rest:
            also = [[f.concept, f.stats.get("lift")] for f in rest]
            lead.evidence.setdefault("numbers", {})["also_attended"] = also
            lead.title += " (also: " + ", ".join(f"'{f.concept}'" for f in rest[:3])
            lead.title += ", ...)" if len(rest) > 3 else ")"
        kept.append(lead)
    ctx.out[:] = kept


def _counterfactuals(ctx: _Ctx, hooks: Hooks) -> None:
    """Counterfactual check of the top cue findings (concept C pushes predictions to K).

    The samples predicted K that show C are edited twice by the hook, which swaps their
    background for that of donor images: once with donors *without* C (the cue removed) and
    once with donors *with* C (the same edit, the cue kept: the control). The result goes
    into the cue finding's `stats["counterfactual"]`; it is `confirmed` when removing the cue
    flips the prediction far more often than the control edit (difference >=
    `shortcut_min_flip_rate`, exact one-sided McNemar test on the paired outcomes < alpha),
    and the finding's title then says so. Any edit flips unsure predictions; only the
    difference tests the cue.
    """
    if hooks.occlude is None or ctx.inp.concepts is None or ctx.thr is None:
        return
    from scipy.stats import binomtest

    inp, cfg = ctx.inp, ctx.cfg
    what = getattr(hooks.occlude, "what", None)
    rng = np.random.default_rng(0)
    cues = sorted((f for f in ctx.out if f.kind in ("spurious_cue", "attention_cue")
                   and f.cls in inp.classes and f.concept in inp.concept_names),
                  key=lambda f: -f.score)[: cfg.max_counterfactual]
    done = set()
    for f in cues:
        if (f.cls, f.concept) in done:
            continue
        done.add((f.cls, f.concept))
        k, j = inp.classes.index(f.cls), inp.concept_names.index(f.concept)
        has = binarise(inp.concepts[:, j:j + 1], ctx.thr[j:j + 1])[:, 0].astype(bool)
        cue_ids = inp.ids[(inp.pred == k) & has][: cfg.counterfactual_n].tolist()

        def pool(mask):
            ids = inp.ids[mask]
            return rng.choice(ids, min(len(ids), 500), replace=False).tolist() if len(ids) \
                else []

        without, with_ = pool(~has), pool(has)
        if not cue_ids or not without or not with_:
            continue
        new_out = list(hooks.occlude(cue_ids, f.concept, donors=without))
        new_keep = list(hooks.occlude(cue_ids, f.concept, donors=with_))
        if len(new_out) != len(cue_ids) or len(new_keep) != len(cue_ids):
            raise DataError(f"occlude returned {len(new_out)}/{len(new_keep)} predictions "
                            f"for {len(cue_ids)} samples")
        pairs = [(a != f.cls, b != f.cls) for a, b in zip(new_out, new_keep, strict=True)
                 if a is not None and b is not None]
        n = len(pairs)
        if not n:
            continue
        r = sum(a for a, _ in pairs) / n
        c = sum(b for _, b in pairs) / n
        only_out = sum(a and not b for a, b in pairs)
        only_keep = sum(b and not a for a, b in pairs)
        p = float(binomtest(only_out, only_out + only_keep, 0.5, alternative="greater").pvalue
                  ) if only_out + only_keep else 1.0
        ok = bool(r - c >= cfg.shortcut_min_flip_rate and p < cfg.alpha)
        hidden = what or f"the region of '{f.concept}'"
        f.stats["counterfactual"] = {"hidden": hidden, "flip_rate": r, "control_flip_rate": c,
                                     "n": n, "p_value": p, "confirmed": ok}
        f.evidence.setdefault("numbers", {}).update(
            {"swap_flip_rate": r, "control_flip_rate": c, "swap_n": n, "swap_p": p})
        if ok:
            f.title += (f"; swapping {hidden} for one without it flips {r:.0%} of {n} such "
                        f"predictions (vs {c:.0%} for one with it)")


def analyze(inp: AnalysisInput, config: AnalysisConfig | None = None,
            hooks: Hooks | None = None) -> Findings:
    """Compute every finding for one run (see module doc).

    BLAS runs single-threaded inside: every product here is small (mixtures on <= 10k rows),
    and multi-threaded BLAS on such sizes spends its time spinning (measured 15x slower
    with 2 threads on a busy 2-core machine).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _analyze(inp, config, hooks)


def _analyze(inp: AnalysisInput, config: AnalysisConfig | None,
             hooks: Hooks | None) -> Findings:
    cfg = config or AnalysisConfig()
    hooks = hooks or Hooks()
    _select_concepts(inp, cfg)
    err = ~inp.correct
    res = Findings(run={**inp.run_info, "n_samples": int(inp.n), "n_errors": int(err.sum()),
                        "accuracy": float(inp.correct.mean()) if inp.n else None,
                        "n_concepts": len(inp.concept_names)})
    if inp.focus is not None:
        res.xai_matrix = mistakes.xai_matrix(inp, cfg.focus_threshold, cfg.max_ids)
    ctx = _Ctx(inp, cfg)
    ctx.tables = None
    ctx.ccols = inp.class_columns(inp.concept_names, cfg.class_concepts)
    ctx.gcols = inp.class_columns(inp.grounding_names, cfg.class_concepts)
    if inp.concepts is not None and inp.concepts.shape[1] > 0:
        ctx.thr = _thresholds(inp.concepts, inp.concept_names, cfg)
        ctx.tables = count_tables(inp.label, inp.pred, inp.split, len(inp.classes),
                                  inp.concepts, ctx.thr, cfg.chunk)
        _concept_findings(ctx)
    else:
        ctx.thr = None
    _consolidate_attention(ctx)
    _pairs_and_labels(ctx, res)
    _slices(ctx, res, hooks)
    _counterfactuals(ctx, hooks)
    if hooks.utility is not None:
        u = hooks.utility
        res.utility_k = utility_k(u["guess_explanation"], u["guess_image"], u["model_pred"],
                                  u.get("k", 3))
    ctx.out.sort(key=lambda f: (-f.score, f.kind, f.cls or "", f.concept or ""))
    res.findings = ctx.out[: cfg.max_findings]
    for i, f in enumerate(res.findings, 1):
        f.id = f"f{i:03d}"
    res.narrative, reason = narrative(res, hooks.rewrite)
    if reason:
        res.run["narrative_rewrite_rejected"] = reason
    return res
