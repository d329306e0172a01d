"""The demo vision model: a small CNN trained on a biased world, so it really learns the bias.

Weights ship as ``weights/demo.safetensors`` with ``weights/demo.json`` (class names, input
size, normalisation, architecture, the command that reproduces them and the per-group
accuracies measured when they were trained). Input: RGB scaled to [0, 1], then
``(x - mean) / std`` per channel, at ``input_size`` (H, W).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vlens.errors import ModelError
from vlens.world.config import RareSliceBias, ShortcutBias, SpuriousBias, WorldConfig
from vlens.world.generator import bias_groups, make_item

WEIGHTS = "demo.safetensors"
META = "demo.json"
MEAN = [0.5, 0.5, 0.5]
STD = [0.25, 0.25, 0.25]
DEFAULT_ARCH: dict[str, Any] = {
    "channels": [8, 16, 32, 64],
    "stem_stride": 2,
    "num_classes": 6,
    "in_channels": 3,
}


class DemoCNN(nn.Module):
    """Conv-BN-ReLU-pool blocks, global max pooling and a linear head.

    `config`: ``channels`` (one entry per block), ``stem_stride`` (stride of the first conv:
    2 halves the cost on CPU), ``num_classes``, ``in_channels``.
    The last block is named ``features`` so saliency methods can hook it (Grad-CAM layer).
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = {**DEFAULT_ARCH, **(config or {})}
        chans = [self.config["in_channels"], *self.config["channels"]]
        blocks = []
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
            layers: list[nn.Module] = [
                nn.Conv2d(
                    a,
                    b,
                    3,
                    padding=1,
                    stride=self.config["stem_stride"] if i == 0 else 1,
                    bias=False,
                ),
                nn.BatchNorm2d(b),
                nn.ReLU(inplace=False),
            ]
            if 0 < i < len(chans) - 2:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.stem = nn.Sequential(*blocks[:-1])
        self.features = blocks[-1]
        # max pooling: the object covers a small part of the image, an average would be
        # dominated by the background texture
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(chans[-1], self.config["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(self.stem(x))).flatten(1))


def to_tensor(images: Sequence[np.ndarray] | np.ndarray, meta: dict[str, Any]) -> torch.Tensor:
    """uint8 (n, H, W, 3) images -> normalised float (n, 3, H, W), as the model expects."""
    x = torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).float().div_(255.0)
    x = x.permute(0, 3, 1, 2)
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def _generate_arrays(cfg: WorldConfig, n: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    items = [make_item(cfg, seed, i) for i in range(n)]
    return np.stack([it.image for it in items]), [it.attrs for it in items]


def train_demo_model(
    train_config: WorldConfig | str = "demo_train",
    n: int = 4000,
    epochs: int = 8,
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    batch_size: int = 32,
    lr: float = 3e-3,
    arch: dict[str, Any] | None = None,
    eval_n: int = 3000,
    eval_seed: int = 1,
    threads: int | None = 1,
    log: Callable[[str], None] | None = None,
) -> Path | tuple[nn.Module, dict[str, Any]]:
    """Train `DemoCNN` on `n` images of `train_config` (labels as recorded, noise included).

    With `out_dir` the weights + meta are written there and the weights path is returned;
    without it, ``(model, meta)``. The meta records per-group accuracies on the paired test
    config (`eval_n` images, seed `eval_seed`). `threads` caps torch's threads while
    training (1 is fastest on a busy machine; None leaves torch's setting alone).
    """
    log = log or (lambda s: None)
    prev_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(
            train_config, n, epochs, seed, out_dir, batch_size, lr, arch, eval_n, eval_seed, log
        )
    finally:
        torch.set_num_threads(prev_threads)


def _train(
    train_config: WorldConfig | str,
    n: int,
    epochs: int,
    seed: int,
    out_dir: str | Path | None,
    batch_size: int,
    lr: float,
    arch: dict[str, Any] | None,
    eval_n: int,
    eval_seed: int,
    log: Callable[[str], None],
) -> Path | tuple[nn.Module, dict[str, Any]]:
    cfg = WorldConfig.load(train_config)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    images, attrs = _generate_arrays(cfg, n, seed)
    classes = list(cfg.classes)
    y = torch.tensor([classes.index(a["label"]) for a in attrs])
    meta: dict[str, Any] = {
        "class_names": classes,
        "input_size": [cfg.image_size, cfg.image_size],
        "mean": MEAN,
        "std": STD,
        "arch": {**DEFAULT_ARCH, **(arch or {}), "num_classes": len(classes)},
        "train_config": cfg.to_dict(),
        "test_config": cfg.test,
        "train": {"n": n, "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr},
        "train_command": (
            f"vlens world train-demo --out DIR --config {cfg.name} -n {n} "
            f"--epochs {epochs} --batch-size {batch_size} --lr {lr} --seed {seed}"
        ),
    }
    x = to_tensor(images, meta)
    log(f"generated {n} training images in {time.perf_counter() - t0:.1f}s")
    model = DemoCNN(meta["arch"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    t1 = time.perf_counter()
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total, correct = 0.0, 0
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            out = model(x[idx])
            loss = nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += int((out.argmax(1) == y[idx]).sum())
        log(f"epoch {ep + 1}/{epochs}: loss {total / n:.3f} train acc {correct / n:.3f}")
    model.eval()
    meta["train"]["seconds"] = round(time.perf_counter() - t1, 1)
    if cfg.test and eval_n:
        res = evaluate_groups(model, meta, cfg.test, n=eval_n, seed=eval_seed)
        meta["eval"] = res
        log(f"test ({cfg.test}) overall acc {res['overall']:.3f}; gaps {res['gaps']}")
    if out_dir is None:
        return model, meta
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    (out / META).write_text(json.dumps(meta, indent=1) + "\n")
    return out / WEIGHTS


def load_demo_model(path: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load the demo model (default: the shipped weights) in eval mode, with its meta.

    `path` is a ``.safetensors`` file (meta beside it as ``<stem>.json``) or a folder
    holding ``demo.safetensors`` + ``demo.json``.
    """
    if path is None:
        root = resources.files("vlens.world") / "weights"
        wpath, mpath = Path(str(root / WEIGHTS)), Path(str(root / META))
    else:
        p = Path(path)
        wpath = p / WEIGHTS if p.is_dir() else p
        mpath = wpath.with_suffix(".json")
    if not wpath.is_file() or not mpath.is_file():
        raise ModelError(f"demo model weights/meta not found: {wpath} / {mpath}")
    meta = json.loads(mpath.read_text())
    model = DemoCNN(meta["arch"])
    try:
        model.load_state_dict(load_file(str(wpath)))
    except Exception as e:  # safetensors raises its own error type for corrupt files
        raise ModelError(f"cannot load demo weights {wpath}: {e}") from None
    return model.eval(), meta


@torch.no_grad()
def predict(
    model: nn.Module, meta: dict[str, Any], images: np.ndarray, batch: int = 256
) -> np.ndarray:
    """Predicted class indices for uint8 (n, H, W, 3) images."""
    model.eval()
    out = [
        model(to_tensor(images[s : s + batch], meta)).argmax(1)
        for s in range(0, len(images), batch)
    ]
    return torch.cat(out).numpy() if out else np.zeros(0, int)


def _what(b: Any) -> str:
    return f"{b.attribute}={b.value}" if isinstance(b, SpuriousBias) else "tag"


def _bias_subgroups(b: Any, attrs: dict[str, Any]) -> str:
    """Readable four-way split of a spurious/shortcut bias: '<class|other> & <has|not>'."""
    cls = attrs["true_label"]
    has = attrs[b.attribute] == b.value if isinstance(b, SpuriousBias) else bool(attrs["tag"])
    what = _what(b)
    who = b.cls if cls == b.cls else f"not {b.cls}"
    return f"{b.name}: {who} & {'' if has else 'not '}{what}"


def evaluate_groups(
    model: nn.Module,
    meta: dict[str, Any],
    test_config: WorldConfig | str | None = None,
    n: int = 3000,
    seed: int = 1,
) -> dict[str, Any]:
    """Accuracy (against true labels) overall and per group of the training biases.

    Groups come from the biases of the config the model was trained on (``meta``): for a
    spurious/shortcut bias on class C and attribute A, the four cells C&A (aligned), C&not A,
    not C & A (both conflicting) and not C & not A; for a rare slice, inside vs outside.
    A bias's cells hold only items that do not conflict with the *other* spurious/shortcut
    biases (so a tag on a star does not blur the star-on-water comparison); the
    ``class=<name>`` cells and `overall` use every item.
    `gaps` are aligned-minus-conflicting differences (fractions; 0.25 = 25 points; None
    when a cell is empty).
    """
    train_cfg = WorldConfig.model_validate(meta["train_config"])
    cfg = WorldConfig.load(test_config or meta.get("test_config") or "demo_test")
    classes = meta["class_names"]
    images, attrs = _generate_arrays(cfg, n, seed)
    pred = predict(model, meta, images)
    truth = np.array([classes.index(a["true_label"]) for a in attrs])
    ok = pred == truth
    cells: dict[str, list[int]] = {}
    paired = [b for b in train_cfg.biases if isinstance(b, SpuriousBias | ShortcutBias)]
    for i, a in enumerate(attrs):
        sides = bias_groups(a, paired)
        for b in train_cfg.biases:
            others = [sides[f"bias_{o.name}"] for o in paired if o is not b]
            if "conflicting" in others:  # isolate this bias: others must not interfere
                continue
            if isinstance(b, SpuriousBias | ShortcutBias):
                key = _bias_subgroups(b, a)
            else:
                g = bias_groups(a, [b])[f"bias_{b.name}"]
                key = f"{b.name}: {g}"
            cells.setdefault(key, []).append(i)
        cells.setdefault(f"class={a['true_label']}", []).append(i)
    groups = {k: {"acc": float(ok[v].mean()), "n": len(v)} for k, v in sorted(cells.items())}
    gaps = {}
    for b in train_cfg.biases:
        if isinstance(b, SpuriousBias | ShortcutBias):
            what = _what(b)

            def acc(who: str, has: bool, b: Any = b, what: str = what) -> float | None:
                cell = groups.get(f"{b.name}: {who} & {'' if has else 'not '}{what}")
                return None if cell is None else cell["acc"]

            def diff(x: float | None, y: float | None) -> float | None:
                return None if x is None or y is None else x - y

            gaps[f"{b.name}: {b.cls} with vs without {what}"] = diff(
                acc(b.cls, True), acc(b.cls, False)
            )
            gaps[f"{b.name}: others without vs with {what}"] = diff(
                acc(f"not {b.cls}", False), acc(f"not {b.cls}", True)
            )
        elif isinstance(b, RareSliceBias):
            k = f"{b.name}: "
            if f"{k}other" in groups and f"{k}slice" in groups:
                gaps[f"{b.name}: outside vs inside slice"] = (
                    groups[f"{k}other"]["acc"] - groups[f"{k}slice"]["acc"]
                )
    return {
        "test_config": cfg.name,
        "n": n,
        "seed": seed,
        "overall": float(ok.mean()),
        "groups": groups,
        "gaps": gaps,
    }
