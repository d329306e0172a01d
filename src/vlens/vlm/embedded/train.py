"""Train the image tower contrastively against the frozen MiniLM text tower (LiT-style).

The loss is a multi-positive InfoNCE: in a batch, caption j is a *true* partner of image i
whenever every attribute it mentions matches what image i shows (many short captions such as
"a photo of grass" fit several images), undecidable pairs are left out, and the loss pushes
up the total softmax mass on true partners, in both directions (image->text, text->image),
with a learnable temperature. Caption embeddings are computed once and cached on disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlens.vlm.embedded import text as T
from vlens.vlm.embedded import vocab as V
from vlens.vlm.embedded.data import VIEW_PROBS, ViewSet, captions_for, make_views
from vlens.vlm.embedded.model import ImageTower, TowerConfig, load_weights, save_weights

TRAIN_SEED_BASE = 10_000  # world seed of the training split = base + seed
CALIB_SEED_BASE = 20_000  # world seed of the calibration split = base + seed
CAPTIONS_PER_IMAGE = 2


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def multi_positive_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with several positives per row/column; targets -1 are ignored."""
    neg_inf = torch.finfo(logits.dtype).min
    valid = targets >= 0
    pos = targets == 1
    lv = logits.masked_fill(~valid, neg_inf)
    lp = logits.masked_fill(~pos, neg_inf)
    row = torch.logsumexp(lv, 1) - torch.logsumexp(lp, 1)
    col = torch.logsumexp(lv, 0) - torch.logsumexp(lp, 0)
    return 0.5 * (row.mean() + col.mean())


def family_prompt_bank(words_per_value: int = 4) -> dict[str, torch.Tensor]:
    """Per family: (values, words, 384) ensemble embeddings of each value's words/synonyms."""
    bank = {}
    for fam, vals in V.FAMILIES.items():
        words = [[V.WORDS[fam][v][k % len(V.WORDS[fam][v])] for k in range(words_per_value)]
                 for v in vals]
        flat = [w for ws in words for w in ws]
        prompts = [t.format(w) for w in flat for t in V.ENSEMBLE]
        e = T.embed_cached(prompts).reshape(len(flat), len(V.ENSEMBLE), -1).mean(1)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        bank[fam] = torch.from_numpy(e.reshape(len(vals), words_per_value, -1).astype(np.float32))
    return bank


def family_loss(img: torch.Tensor, scale: torch.Tensor, codes: np.ndarray,
                bank: dict[str, torch.Tensor], rng: np.random.Generator,
                weights: dict[str, float] | None = None) -> torch.Tensor:
    """Per family, InfoNCE of each image against the prompts of all values of the family.

    The negatives are the family's other values, the positive its true value, each value's
    prompt worded with a randomly drawn synonym; families a view cannot show are skipped.
    """
    losses, total = [], 0.0
    for fam, emb in bank.items():
        c = torch.from_numpy(codes[:, V.FIDX[fam]].astype(np.int64)).to(img.device)
        keep = c >= 0
        if not bool(keep.any()):
            continue
        word = torch.from_numpy(rng.integers(emb.shape[1], size=len(emb))).to(emb.device)
        pick = emb[torch.arange(len(emb), device=emb.device), word]
        pick = nn.functional.normalize(pick, dim=-1)
        logits = scale * img[keep] @ pick.T
        w = (weights or {}).get(fam, 1.0)
        losses.append(w * nn.functional.cross_entropy(logits, c[keep]))
        total += w
    return torch.stack(losses).sum() / total


def cached_concept_embeddings(concepts: list[str]) -> np.ndarray:
    """`backend.concept_embeddings`, through the on-disk text cache (same vectors)."""
    prompts = [t.format(c) for c in concepts for t in V.ENSEMBLE]
    e = T.embed_cached(prompts).reshape(len(concepts), len(V.ENSEMBLE), -1).mean(1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def augment(x: torch.Tensor, rng: np.random.Generator, shift: int = 4) -> torch.Tensor:
    """Random horizontal flips and shifts of up to `shift` px (edge pixels repeated).

    The world draws every shape upright (+-25 degrees), so a mirror image is still the same
    shape; shifts make the tower see each object at new positions (less memorising).
    """
    flip = torch.from_numpy(rng.random(len(x)) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if shift <= 0:
        return x
    h, w = x.shape[-2:]
    pad = nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, len(x)))
    return torch.stack([pad[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(zip(dy, dx,
                                                                                      strict=True))])


def fit_calibration(tower: ImageTower, seed: int, n: int = 600) -> tuple[float, float]:
    """Fit sigmoid((cos - b) * s) to "is this concept true of this image" on held-out images."""
    from sklearn.linear_model import LogisticRegression

    views = make_views(n, seed=CALIB_SEED_BASE + seed, view_probs={"full": 1.0})
    dev = next(tower.parameters()).device
    with torch.no_grad():
        img = tower(to_tensor(views.images).to(dev)).cpu().numpy()
    xs, ys = [], []
    for fam in ("shape", "color", "background", "size", "lighting", "tag", "blur", "noise",
                "occlusion"):
        vals = [v for v in V.FAMILIES[fam] if v != "black"]
        cos = img @ cached_concept_embeddings(vals).T
        truth = np.array([[vv[fam] == v for v in vals] for vv in views.values])
        xs.append(cos.ravel())
        ys.append(truth.ravel())
    x, y = np.concatenate(xs)[:, None], np.concatenate(ys)
    lr = LogisticRegression(class_weight="balanced").fit(x, y)
    s = float(lr.coef_[0, 0])
    return float(-lr.intercept_[0] / s), s


def prepare(n: int, seed: int, log: Callable[[str], None] = print,
            view_probs: dict[str, float] | None = None,
            ) -> tuple[ViewSet, np.ndarray, np.ndarray, dict[str, torch.Tensor]]:
    """Training views, their caption embeddings (n, k, 384) and codes, and the prompt bank.

    Every text embedding goes through the on-disk cache, so a second call (or a call on a
    machine given a copy of the cache, `VLENS_CACHE`) needs no text model.
    """
    t0 = time.time()
    views = make_views(n, seed=TRAIN_SEED_BASE + seed, view_probs=view_probs)
    texts, ccodes = captions_for(views, CAPTIONS_PER_IMAGE, seed)
    flat = [t for row in texts for t in row]
    log(f"generated {n} views in {time.time() - t0:.0f}s; embedding {len(set(flat))} captions")
    emb = T.embed_cached(flat).reshape(n, CAPTIONS_PER_IMAGE, -1)
    bank = family_prompt_bank()
    for fam in ("shape", "color", "background", "size", "lighting", "tag", "blur", "noise",
                "occlusion"):  # the calibration's concepts, cached too
        cached_concept_embeddings([v for v in V.FAMILIES[fam] if v != "black"])
    log(f"captions ready at {time.time() - t0:.0f}s")
    return views, emb, ccodes, bank


def train(
    out: str | Path,
    n: int = 40_000,
    epochs: int = 8,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 3e-3,
    threads: int = 2,
    family_weight: float = 1.0,
    init: str | Path | None = None,
    family_weights: dict[str, float] | None = None,
    device: str = "cpu",
    shift: int = 4,
    view_probs: dict[str, float] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Generate data, train, calibrate and write weights to `out`; returns a summary."""
    t0, c0 = time.time(), time.process_time()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch.device(device)
    views, emb_np, ccodes, bank = prepare(n, seed, log, view_probs)
    emb = torch.from_numpy(emb_np).to(dev)
    bank = {k: v.to(dev) for k, v in bank.items()}
    x_all = torch.from_numpy(views.images).permute(0, 3, 1, 2).contiguous().to(dev)
    if init:  # continue from earlier weights (a second stage of training)
        tower, cfg, _ = load_weights(init)
        prior = [*cfg.train.get("stages", []), {k: v for k, v in cfg.train.items()
                                                if k != "stages"}]
    else:
        cfg, prior = TowerConfig(), []
        tower = ImageTower(cfg)
    tower.to(dev)
    opt = torch.optim.AdamW(tower.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * (n // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    t_fit = time.time()
    for ep in range(epochs):
        tower.train()
        perm = rng.permutation(n)
        tot = 0.0
        for b in range(n // batch_size):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            j = rng.integers(CAPTIONS_PER_IMAGE, size=len(idx))
            tgt = torch.from_numpy(V.pair_targets(views.codes[idx], ccodes[idx, j])).to(dev)
            x = augment(x_all[idx].float().div_(255.0), rng, shift)
            img = tower(x)
            scale = tower.logit_scale.exp().clamp(max=100.0)
            jj = torch.from_numpy(j).to(dev)
            ii = torch.from_numpy(idx).to(dev)
            loss = multi_positive_loss(scale * img @ emb[ii, jj].T, tgt)
            loss = loss + family_weight * family_loss(
                img, scale, views.codes[idx], bank, rng, family_weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach())
        log(f"epoch {ep + 1}/{epochs} loss {tot / (n // batch_size):.3f} "
            f"T={1 / float(tower.logit_scale.detach().exp()):.3f} at {time.time() - t0:.0f}s")
    fit_s = time.time() - t_fit
    tower.eval()
    cfg.calib_bias, cfg.calib_scale = fit_calibration(tower, seed)
    tower.cpu()
    train_s = time.time() - t0
    cfg.train = {"n": n, "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr,
                 "threads": threads, "device": device, "shift": shift, "steps": steps,
                 "family_weight": family_weight, "seconds": round(train_s, 1),
                 "fit_seconds": round(fit_s, 1),
                 "cpu_seconds": round(time.process_time() - c0, 1),
                 "world_seed": TRAIN_SEED_BASE + seed,
                 "family_weights": family_weights or {}, "init": str(init) if init else None,
                 "view_probs": view_probs or dict(VIEW_PROBS)}
    if prior:
        cfg.train["stages"] = prior
    path = save_weights(tower, cfg, out)
    log(f"trained in {train_s:.0f}s; calibration b={cfg.calib_bias:.3f} s={cfg.calib_scale:.2f}")
    return {"weights": str(path), "seconds": train_s, **asdict(cfg)}
