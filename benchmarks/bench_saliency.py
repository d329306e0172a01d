"""Saliency throughput (issue 7, P2): our batched CAMs vs pytorch-grad-cam and Captum.

    python3 benchmarks/bench_saliency.py --out bench_saliency.json [--threads 2] [--repeats 3]

Same model, batch and device (CPU) for every contender; random weights (nothing is
downloaded). Images/s = batch / wall time of one call, best of `--repeats` after one warm-up
call (best-of is the least sensitive to other processes on a shared machine; the median is
reported too); in sections 1 and 2 the contenders take turns in every round. Sections:

1. Grad-CAM: ours vs `pytorch_grad_cam.GradCAM` vs Captum `LayerGradCam` + bilinear upsample
   + ReLU + min-max, on torchvision resnet18 at 224 px and the vlens demo CNN at 64 px,
   batch 32, plus the model's forward-only throughput as the floor to compare with.
2. Score-CAM: ours vs `pytorch_grad_cam.ScoreCAM` on a narrow demo CNN (32 channels at the
   target layer), 64 px, batch 8, both with 64 images per forward; plus ours with
   `max_channels=8` (only the 8 most active channels: 4x fewer forwards, a different map).
3. Every registered explainer with its default parameters on the demo CNN (64 px, batch 32;
   the perturbation methods, which run hundreds of forwards per image, on batch 4 and one
   timed call without warm-up; rollout on a small timm ViT).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import types
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402
from torch import nn  # noqa: E402


class Adapter:
    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.device = torch.device("cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def timed(fn: Callable[[], object], repeats: int, batch: int, warm: bool = True
          ) -> dict[str, float]:
    if warm:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {
        "img_s": batch / min(times),
        "img_s_median": batch / statistics.median(times),
        "s_per_batch": min(times),
    }


def timed_many(fns: dict[str, Callable[[], object]], repeats: int, batch: int
               ) -> dict[str, dict[str, float]]:
    """Like `timed`, but contenders take turns in every round, so a burst of load from
    other processes hits them alike (the machine this runs on may be shared)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: {"img_s": batch / min(v), "img_s_median": batch / statistics.median(v),
                "s_per_batch": min(v)} for k, v in times.items()}


def demo_cnn(channels: list[int] | None = None) -> nn.Module:
    from vlens.world.demo_model import DemoCNN

    torch.manual_seed(0)
    return DemoCNN({"channels": channels} if channels else None).eval()


def gradcam_section(name: str, model: nn.Module, layer: str, size: int, batch: int,
                    repeats: int) -> dict:
    from captum.attr import LayerAttribution, LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from vlens.saliency import get_explainer
    from vlens.saliency._util import normalize_maps

    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cls = model(x).argmax(1)
    module = dict(model.named_modules())[layer]
    ours = get_explainer("gradcam", target_layer=layer)
    adapter = Adapter(model)
    pgc = GradCAM(model=model, target_layers=[module])
    targets = [ClassifierOutputTarget(int(c)) for c in cls]
    lgc = LayerGradCam(model, module)

    def captum() -> torch.Tensor:
        a = lgc.attribute(x, target=cls)
        a = LayerAttribution.interpolate(a, (size, size), interpolate_mode="bilinear")
        return normalize_maps(torch.relu(a[:, 0]))

    def forward_only() -> None:
        with torch.no_grad():
            model(x)

    res = {
        "model": name, "input": size, "batch": batch, "layer": layer,
        **timed_many({
            "forward_only": forward_only,
            "vlens": lambda: ours.explain(adapter, x, lambda o: o[torch.arange(batch), cls]),
            "pytorch_grad_cam": lambda: pgc(input_tensor=x, targets=targets),
            "captum": captum,
        }, repeats, batch),
    }
    pgc.activations_and_grads.release()
    res["ratio_vs_pytorch_grad_cam"] = res["vlens"]["img_s"] / res["pytorch_grad_cam"]["img_s"]
    res["ratio_vs_captum"] = res["vlens"]["img_s"] / res["captum"]["img_s"]
    return res


def scorecam_section(batch: int, repeats: int) -> dict:
    import pytorch_grad_cam.score_cam as pgc_score
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from vlens.saliency import get_explainer

    # silence its per-image progress bars (only in that module; tqdm itself is untouched)
    pgc_score.tqdm = types.SimpleNamespace(tqdm=lambda it, **kw: it)
    model = demo_cnn([16, 32, 32, 32])
    x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cls = model(x).argmax(1)
    ours = get_explainer("scorecam", target_layer="features", batch_size=64)
    cam = ScoreCAM(model=model, target_layers=[model.features])
    cam.batch_size = 64
    targets = [ClassifierOutputTarget(int(c)) for c in cls]
    adapter = Adapter(model)
    top = get_explainer("scorecam", target_layer="features", batch_size=64, max_channels=8)
    res = {
        "model": "demo_cnn[16,32,32,32]", "input": 64, "batch": batch, "channels": 32,
        **timed_many({
            "vlens": lambda: ours.explain(adapter, x, lambda o: o[torch.arange(batch), cls]),
            "pytorch_grad_cam": lambda: cam(input_tensor=x, targets=targets),
            "vlens_max_channels_8": lambda: top.explain(
                adapter, x, lambda o: o[torch.arange(batch), cls]),
        }, repeats, batch),
    }
    cam.activations_and_grads.release()
    res["ratio_vs_pytorch_grad_cam"] = res["vlens"]["img_s"] / res["pytorch_grad_cam"]["img_s"]
    res["ratio_max_channels_8_vs_pytorch_grad_cam"] = (
        res["vlens_max_channels_8"]["img_s"] / res["pytorch_grad_cam"]["img_s"])
    return res


EXPENSIVE = {"rise", "occlusion", "scorecam", "integrated_gradients", "smoothgrad"}


def methods_section(batch: int, repeats: int, small_batch: int = 4) -> dict:
    import timm

    from vlens.saliency import EXPLAINERS, get_explainer

    cnn = Adapter(demo_cnn())
    x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    vit = Adapter(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                                    patch_size=8, embed_dim=96, depth=6, num_heads=3,
                                    num_classes=6).eval())
    out = {}
    for name in EXPLAINERS.names():
        model = vit if name == "rollout" else cnn
        ex = get_explainer(name)
        # perturbation methods cost hundreds of forwards per image: fewer images, one call
        n = small_batch if name in EXPENSIVE else batch
        xs = x[:n]
        r = timed(lambda ex=ex, model=model, xs=xs: ex.explain(model, xs, lambda o: o[:, 0]),
                  1 if name in EXPENSIVE else repeats, n, warm=name not in EXPENSIVE)
        r["batch"] = n
        r["model"] = "timm vit (64px, patch 8, dim 96, depth 6)" if name == "rollout" \
            else "demo_cnn (64px)"
        out[name] = r
        print(f"  {name:22s} {r['img_s']:9.2f} img/s  batch {n:3d}  ({r['model']})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_saliency.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--demo-repeats", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--skip-resnet", action="store_true", help="demo CNN only (quick)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torchvision

    report: dict = {
        "device": "cpu", "threads": args.threads, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(), "gradcam": [],
    }
    cases = [("demo_cnn", demo_cnn(), "features", 64)]
    if not args.skip_resnet:
        torch.manual_seed(0)
        cases.insert(0, ("resnet18", torchvision.models.resnet18(weights=None).eval(),
                         "layer4", 224))
    print(f"{'Grad-CAM':10s} {'model':10s} {'fwd-only':>9s} {'vlens':>9s} {'pgc':>9s} "
          f"{'captum':>9s} {'x pgc':>7s} {'x captum':>8s}   (img/s, best of {args.repeats})")
    for name, model, layer, size in cases:
        reps = args.demo_repeats if name == "demo_cnn" else args.repeats
        r = gradcam_section(name, model, layer, size, args.batch, reps)
        report["gradcam"].append(r)
        print(f"{'':10s} {name:10s} {r['forward_only']['img_s']:9.1f} {r['vlens']['img_s']:9.1f} "
              f"{r['pytorch_grad_cam']['img_s']:9.1f} {r['captum']['img_s']:9.1f} "
              f"{r['ratio_vs_pytorch_grad_cam']:7.2f} {r['ratio_vs_captum']:8.2f}", flush=True)
    s = scorecam_section(8, max(1, args.repeats - 1))
    report["scorecam"] = s
    print(f"Score-CAM  {s['model']} batch {s['batch']}: vlens {s['vlens']['img_s']:.1f} img/s, "
          f"pytorch-grad-cam {s['pytorch_grad_cam']['img_s']:.1f} img/s, "
          f"ratio {s['ratio_vs_pytorch_grad_cam']:.2f}; vlens max_channels=8 "
          f"{s['vlens_max_channels_8']['img_s']:.1f} img/s, "
          f"ratio {s['ratio_max_channels_8_vs_pytorch_grad_cam']:.2f}", flush=True)
    print(f"Every explainer, defaults, batch {args.batch}:")
    report["methods"] = methods_section(args.batch, args.repeats)
    report["load_avg_at_end"] = os.getloadavg()
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
