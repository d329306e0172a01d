"""Saliency throughput (issue 7, P2): our batched CAMs vs pytorch-grad-cam and Captum.

    python3 benchmarks/bench_saliency.py --out bench_saliency.json [--threads 2] [--repeats 5]
    python3 benchmarks/bench_saliency.py --device cuda --out bench_saliency_cuda.json

Same model, batch and device for every contender; random weights unless said (nothing is
downloaded). Images/s = batch / MEDIAN wall time (`--clock process`: CPU time of the
process, for a shared CPU, with `--threads 1`) of a call over `--repeats` timed calls
after one warm-up call (the best call is in the JSON too); the contenders take turns in every
round so a burst of load from other processes hits them alike. Ratios use the medians.
Sections:

1. Grad-CAM: ours (defaults: channels-last input on the CPU) and ours with the default
   layout (`channels_last=False`) vs `pytorch_grad_cam.GradCAM` vs Captum `LayerGradCam`
   + bilinear upsample + ReLU + min-max, on torchvision resnet18 at 224 px and the vlens
   demo CNN at 64 px, batch 32; plus the model's forward-only throughput in both layouts
   (the floor: Grad-CAM needs one forward).
2. Score-CAM: ours exact (one forward per channel and image, like the reference) vs
   `pytorch_grad_cam.ScoreCAM`, both with 64 images per forward, on the TRAINED demo CNN
   (shipped weights, 64 channels at the target layer) and images of the demo test world,
   64 px, batch 8; plus Faster Score-CAM (`max_channels=k`, top-k channels by variance) and
   how close its maps are to the exact ones (Pearson r per map, mean and min over images;
   top-10% pixel overlap). With `--device cuda` also resnet18 at 224 px (random weights).
3. Every registered explainer with its default parameters on the demo CNN (64 px, batch 32;
   the perturbation methods, which run hundreds of forwards per image, on batch 4, median of
   3 calls (no warm-up; fewer if `--demo-repeats` is smaller); rollout on a small timm ViT).
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

DEVICE = torch.device("cpu")
CLOCK = time.perf_counter  # --clock process: CPU time of this process (see main)


class Adapter:
    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.device = DEVICE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _stats(times: list[float], batch: int) -> dict[str, float]:
    med = statistics.median(times)
    return {"img_s": batch / med, "img_s_best": batch / min(times), "s_per_batch": med,
            "calls": len(times)}


def timed_many(fns: dict[str, Callable[[], object]], repeats: int, batch: int,
               warm: bool = True) -> dict[str, dict[str, float]]:
    """Contenders take turns in every round, so a burst of load from other processes hits
    them alike (the machine this runs on may be shared). Median over `repeats` calls."""
    if warm:
        for fn in fns.values():
            fn()
            _sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync()
            t0 = CLOCK()
            fn()
            _sync()
            times[k].append(CLOCK() - t0)
    return {k: _stats(v, batch) for k, v in times.items()}


def demo_cnn(channels: list[int] | None = None) -> nn.Module:
    from vlens.world.demo_model import DemoCNN

    torch.manual_seed(0)
    return DemoCNN({"channels": channels} if channels else None).eval().to(DEVICE)


def resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval().to(DEVICE)


def world_batch(n: int) -> tuple[nn.Module, torch.Tensor]:
    """The shipped (trained) demo model and `n` images of the demo test world."""
    from vlens.world.config import WorldConfig
    from vlens.world.demo_model import _generate_arrays, load_demo_model, to_tensor

    model, meta = load_demo_model()
    images, _ = _generate_arrays(WorldConfig.load("demo_test"), n, 0)
    return model.to(DEVICE), to_tensor(images, meta).to(DEVICE)


def per_sample(cls: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda o: o[torch.arange(len(cls), device=o.device), cls]


def gradcam_section(name: str, model: nn.Module, layer: str, size: int, batch: int,
                    repeats: int) -> dict:
    from captum.attr import LayerAttribution, LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from vlens.saliency import get_explainer
    from vlens.saliency._util import normalize_maps

    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    xcl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        cls = model(x).argmax(1)
    module = dict(model.named_modules())[layer]
    adapter, tgt = Adapter(model), per_sample(cls)
    ours = get_explainer("gradcam", target_layer=layer)
    ours_plain = get_explainer("gradcam", target_layer=layer, channels_last=False)
    pgc = GradCAM(model=model, target_layers=[module])
    targets = [ClassifierOutputTarget(int(c)) for c in cls]
    lgc = LayerGradCam(model, module)

    def captum() -> torch.Tensor:
        a = lgc.attribute(x, target=cls)
        a = LayerAttribution.interpolate(a, (size, size), interpolate_mode="bilinear")
        return normalize_maps(torch.relu(a[:, 0]))

    def forward(inp: torch.Tensor) -> Callable[[], None]:
        def f() -> None:
            with torch.no_grad():
                model(inp)
        return f

    res = {
        "model": name, "input": size, "batch": batch, "layer": layer,
        **timed_many({
            "forward_only": forward(x),
            "forward_only_channels_last": forward(xcl),
            "vlens": lambda: ours.explain(adapter, x, tgt),
            "vlens_default_layout": lambda: ours_plain.explain(adapter, x, tgt),
            "pytorch_grad_cam": lambda: pgc(input_tensor=x, targets=targets),
            "captum": captum,
        }, repeats, batch),
    }
    pgc.activations_and_grads.release()
    v, vp = res["vlens"]["img_s"], res["vlens_default_layout"]["img_s"]
    res["ratio_vs_pytorch_grad_cam"] = v / res["pytorch_grad_cam"]["img_s"]
    res["ratio_vs_captum"] = v / res["captum"]["img_s"]
    res["ratio_vs_forward_only"] = v / res["forward_only"]["img_s"]
    res["ratio_default_layout_vs_pytorch_grad_cam"] = vp / res["pytorch_grad_cam"]["img_s"]
    res["ratio_default_layout_vs_captum"] = vp / res["captum"]["img_s"]
    return res


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Pearson r per map (mean, min) and overlap of the top-10% pixels (mean)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    ac, bc = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    r = (ac * bc).sum(1) / (ac.norm(dim=1) * bc.norm(dim=1)).clamp_min(1e-12)
    k = max(1, a.shape[1] // 10)
    ta, tb = a.topk(k, dim=1).indices, b.topk(k, dim=1).indices
    overlap = torch.tensor([len(set(p.tolist()) & set(q.tolist())) / k
                            for p, q in zip(ta, tb, strict=True)])
    return {"pearson_mean": r.mean().item(), "pearson_min": r.min().item(),
            "top10_overlap_mean": overlap.mean().item()}


def scorecam_section(name: str, model: nn.Module, x: torch.Tensor, layer: str,
                     ks: list[int], repeats: int, chunk: int = 64) -> dict:
    import pytorch_grad_cam.score_cam as pgc_score
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from vlens.saliency import get_explainer

    # silence its per-image progress bars (only in that module; tqdm itself is untouched)
    pgc_score.tqdm = types.SimpleNamespace(tqdm=lambda it, **kw: it)
    batch, size = x.shape[0], x.shape[-1]
    module = dict(model.named_modules())[layer]
    with torch.no_grad():
        cls = model(x).argmax(1)
    adapter, tgt = Adapter(model), per_sample(cls)
    cam = ScoreCAM(model=model, target_layers=[module])
    cam.batch_size = chunk
    targets = [ClassifierOutputTarget(int(c)) for c in cls]
    exact = get_explainer("scorecam", target_layer=layer, batch_size=chunk)
    plain = get_explainer("scorecam", target_layer=layer, batch_size=chunk, channels_last=False)
    fns: dict[str, Callable[[], object]] = {
        "vlens_exact": lambda: exact.explain(adapter, x, tgt),
        "vlens_exact_default_layout": lambda: plain.explain(adapter, x, tgt),
        "pytorch_grad_cam": lambda: cam(input_tensor=x, targets=targets),
    }
    fast = {k: get_explainer("scorecam", target_layer=layer, batch_size=chunk, max_channels=k)
            for k in ks}
    for k, ex in fast.items():
        fns[f"vlens_fast_k{k}"] = lambda ex=ex: ex.explain(adapter, x, tgt)
    res: dict = {"model": name, "input": size, "batch": batch, "layer": layer,
                 "images_per_forward": chunk, **timed_many(fns, repeats, batch)}
    store: dict[str, torch.Tensor] = {}
    h = module.register_forward_hook(lambda m, i, o: store.__setitem__("c", o.shape[1]))
    with torch.no_grad():
        model(x[:1])
    h.remove()
    res["channels"] = int(store["c"])
    ref = exact.explain(adapter, x, tgt).cpu()
    pgc_map = torch.from_numpy(cam(input_tensor=x, targets=targets))
    cam.activations_and_grads.release()
    res["exact_vs_pytorch_grad_cam_agreement"] = agreement(ref, pgc_map)
    base = res["pytorch_grad_cam"]["img_s"]
    res["ratio_exact_vs_pytorch_grad_cam"] = res["vlens_exact"]["img_s"] / base
    res["ratio_exact_default_layout_vs_pytorch_grad_cam"] = (
        res["vlens_exact_default_layout"]["img_s"] / base)
    for k, ex in fast.items():
        res[f"ratio_fast_k{k}_vs_pytorch_grad_cam"] = res[f"vlens_fast_k{k}"]["img_s"] / base
        res[f"fast_k{k}_vs_exact_agreement"] = agreement(ex.explain(adapter, x, tgt).cpu(), ref)
    return res


EXPENSIVE = {"rise", "occlusion", "scorecam", "integrated_gradients", "smoothgrad"}


def methods_section(batch: int, repeats: int, small_batch: int = 4) -> dict:
    import timm

    from vlens.saliency import EXPLAINERS, get_explainer

    cnn = Adapter(demo_cnn())
    x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    torch.manual_seed(0)
    vit = Adapter(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                                    patch_size=8, embed_dim=96, depth=6, num_heads=3,
                                    num_classes=6).eval().to(DEVICE))
    out = {}
    for name in EXPLAINERS.names():
        model = vit if name == "rollout" else cnn
        ex = get_explainer(name)
        # perturbation methods cost hundreds of forwards per image: fewer images and calls
        n = small_batch if name in EXPENSIVE else batch
        xs = x[:n]
        cheap = name not in EXPENSIVE
        r = timed_many({name: lambda ex=ex, model=model, xs=xs: ex.explain(
            model, xs, lambda o: o[:, 0])}, repeats if cheap else min(3, repeats), n,
            warm=cheap)[name]
        r["batch"] = n
        r["model"] = "timm vit (64px, patch 8, dim 96, depth 6)" if name == "rollout" \
            else "demo_cnn (64px)"
        out[name] = r
        print(f"  {name:22s} {r['img_s']:9.2f} img/s  batch {n:3d}  ({r['model']})", flush=True)
    return out


def main() -> None:
    global DEVICE, CLOCK
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_saliency.json")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls on resnet18")
    ap.add_argument("--demo-repeats", type=int, default=7, help="timed calls on the demo CNN")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--skip-resnet", action="store_true", help="demo CNN only (quick)")
    ap.add_argument("--clock", default="wall", choices=["wall", "process"],
                    help="process: CPU seconds of this process instead of wall time; with "
                    "--threads 1 the least sensitive to other processes on a shared CPU")
    ap.add_argument("--sections", nargs="+", default=["gradcam", "scorecam", "methods"],
                    choices=["gradcam", "scorecam", "methods"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    DEVICE = torch.device(args.device)
    if args.clock == "process":
        if args.device != "cpu":
            ap.error("--clock process measures CPU time: use it with --device cpu")
        CLOCK = time.process_time
    report: dict = {
        "device": args.device, "threads": args.threads, "clock": args.clock,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "load_avg_at_start": os.getloadavg(), "gradcam": [], "scorecam": [],
    }
    def save() -> None:  # after every section, so a run cut short still leaves its numbers
        report["load_avg_at_end"] = os.getloadavg()
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)

    if "gradcam" in args.sections:
        cases = [("demo_cnn", demo_cnn, "features", 64, args.demo_repeats)]
        if not args.skip_resnet:
            cases.insert(0, ("resnet18", resnet18, "layer4", 224, args.repeats))
        print(f"Grad-CAM, batch {args.batch}, img/s (median of the timed calls):")
        print(f"{'model':10s} {'fwd':>8s} {'fwd-cl':>8s} {'vlens':>8s} {'vl-plain':>8s} "
              f"{'pgc':>8s} {'captum':>8s} {'x pgc':>6s} {'x captum':>8s} {'x fwd':>6s}")
        for name, make, layer, size, reps in cases:
            r = gradcam_section(name, make(), layer, size, args.batch, reps)
            report["gradcam"].append(r)
            print(f"{name:10s} {r['forward_only']['img_s']:8.1f} "
                  f"{r['forward_only_channels_last']['img_s']:8.1f} {r['vlens']['img_s']:8.1f} "
                  f"{r['vlens_default_layout']['img_s']:8.1f} "
                  f"{r['pytorch_grad_cam']['img_s']:8.1f} {r['captum']['img_s']:8.1f} "
                  f"{r['ratio_vs_pytorch_grad_cam']:6.2f} {r['ratio_vs_captum']:8.2f} "
                  f"{r['ratio_vs_forward_only']:6.2f}", flush=True)
            save()
    if "scorecam" in args.sections:
        model, x = world_batch(8)
        cases = [("demo_cnn (trained)", model, x, "features", [16, 8],
                  max(3, args.demo_repeats // 2))]
        if args.device == "cuda" and not args.skip_resnet:
            xr = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            cases.append(("resnet18", resnet18(), xr.to(DEVICE), "layer4", [64, 32],
                          args.repeats))
        for name, model, x, layer, ks, reps in cases:
            s = scorecam_section(name, model, x, layer, ks, reps)
            report["scorecam"].append(s)
            fast = ", ".join(
                f"k={k}: {s[f'vlens_fast_k{k}']['img_s']:.1f} img/s = "
                f"{s[f'ratio_fast_k{k}_vs_pytorch_grad_cam']:.2f}x, r = "
                f"{s[f'fast_k{k}_vs_exact_agreement']['pearson_mean']:.3f}" for k in ks)
            print(f"Score-CAM {name}, {s['channels']} channels, batch {s['batch']}: exact "
                  f"{s['vlens_exact']['img_s']:.1f} img/s (default layout "
                  f"{s['vlens_exact_default_layout']['img_s']:.1f}), pytorch-grad-cam "
                  f"{s['pytorch_grad_cam']['img_s']:.1f} img/s, ratio "
                  f"{s['ratio_exact_vs_pytorch_grad_cam']:.2f}; Faster Score-CAM {fast}",
                  flush=True)
            save()
    if "methods" in args.sections:
        print(f"Every explainer, defaults, batch {args.batch}:")
        report["methods"] = methods_section(args.batch, args.demo_repeats)
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
