"""Vectorised drawing: procedural background textures and shape masks on coordinate grids.

Textures are generated once per (background, image size) from a fixed seed and cached; each
image takes a random crop/flip of a texture twice its size, so drawing a background costs a
slice. Shapes are implicit functions evaluated on a supersampled coordinate grid restricted to
the object's bounding window, which gives anti-aliased coverage in a few numpy operations.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

SUPERSAMPLE = 3


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float | tuple) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to [0, 1] (wraps at the borders)."""
    n = gaussian_filter(rng.standard_normal((h, w)), sigma, mode="wrap")
    n -= n.min()
    return n / max(float(n.max()), 1e-9)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]


@lru_cache(maxsize=64)
def texture(background: str, size: int) -> np.ndarray:
    """A float32 (2*size, 2*size, 3) texture in [0, 255] for `background` (deterministic)."""
    t = 2 * size
    rng = np.random.default_rng([sum(map(ord, background)), size])
    yy, xx = np.mgrid[0:t, 0:t].astype(np.float32) / t
    c = np.array
    if background == "grass":
        blades = _smooth_noise(rng, t, t, (size / 10, 0.6))  # tall thin streaks
        patches = _smooth_noise(rng, t, t, size / 6)
        img = _mix(c([30.0, 95, 25]), c([120.0, 190, 60]), 0.65 * blades + 0.35 * patches)
    elif background == "water":
        waves = 0.5 + 0.5 * np.sin(2 * np.pi * (yy * 9 + 0.6 * _smooth_noise(rng, t, t, size / 5)))
        img = _mix(
            c([20.0, 60, 140]), c([90.0, 160, 220]), 0.7 * waves + 0.3 * _smooth_noise(rng, t, t, 2)
        )
    elif background == "sand":
        ripples = 0.5 + 0.5 * np.sin(
            2 * np.pi * ((xx + yy) * 6 + _smooth_noise(rng, t, t, size / 4))
        )
        grain = rng.random((t, t))
        img = _mix(c([190.0, 160, 105]), c([235.0, 210, 160]), 0.45 * ripples + 0.55 * grain)
    elif background == "snow":
        drifts = _smooth_noise(rng, t, t, size / 5)
        img = _mix(c([185.0, 200, 220]), c([250.0, 252, 255]), drifts)
        sparkle = rng.random((t, t)) > 0.985
        img[sparkle] = 255.0
    elif background == "brick":
        bh = max(size // 8, 4)
        bw = 2 * bh
        row = (np.arange(t) // bh)[:, None]
        xs = np.arange(t)[None, :] + (row % 2) * (bw // 2)
        mortar = (np.arange(t)[:, None] % bh == 0) | (xs % bw == 0)
        brick_id = row * 1000 + xs // bw
        shade = (np.sin(brick_id * 12.9898) * 43758.5453) % 1.0
        img = _mix(c([140.0, 50, 35]), c([190.0, 85, 60]), 0.6 * shade + 0.4 * rng.random((t, t)))
        img[mortar] = c([175.0, 170, 160])
    elif background == "sky":
        clouds = _smooth_noise(rng, t, t, size / 6)
        clouds = np.clip((clouds - 0.55) * 4, 0, 1)
        grad = np.tile((0.5 - 0.5 * np.cos(2 * np.pi * yy[:, :1])), (1, t))
        img = _mix(c([60.0, 120, 215]), c([150.0, 200, 245]), grad)
        img = img * (1 - clouds[..., None]) + 250.0 * clouds[..., None]
    else:
        raise ValueError(f"unknown background {background!r}")
    img = np.clip(img, 0, 255).astype(np.float32)
    img.setflags(write=False)
    return img


def background_patch(background: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random (size, size, 3) float32 crop of the background texture (a fresh copy)."""
    tex = texture(background, size)
    y, x = rng.integers(0, size, 2)
    patch = tex[y : y + size, x : x + size]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return patch.copy()


def _polygon_inside(px: np.ndarray, py: np.ndarray, n: int, phase: float) -> np.ndarray:
    """Inside a regular convex n-gon of circumradius 1 (intersection of half-planes)."""
    apothem = np.cos(np.pi / n)
    inside = np.ones(px.shape, bool)
    for k in range(n):
        a = phase + np.pi / n + 2 * np.pi * k / n  # edge-normal angle
        inside &= px * np.cos(a) + py * np.sin(a) <= apothem
    return inside


def shape_inside(shape: str, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Boolean membership of points (unit coordinates, y down, radius ~1) in `shape`."""
    if shape == "circle":
        return px * px + py * py <= 0.92
    if shape == "square":
        return np.maximum(np.abs(px), np.abs(py)) <= 0.75
    if shape == "diamond":
        return np.abs(px) * 0.8 + np.abs(py) <= 0.95
    if shape == "triangle":
        return _polygon_inside(px, py + 0.15, 3, -np.pi / 2)
    if shape == "hexagon":
        return _polygon_inside(px, py, 6, 0.0)
    if shape == "cross":
        ax, ay = np.abs(px), np.abs(py)
        return ((ax <= 0.3) & (ay <= 0.95)) | ((ay <= 0.3) & (ax <= 0.95))
    if shape == "star":
        # 5-pointed star: radius bound as a function of angle, exact straight edges.
        theta = np.arctan2(py, px) + np.pi / 2
        r = np.hypot(px, py)
        seg = np.pi / 5
        phi = np.mod(theta, 2 * seg) - seg  # angle from the nearest point, in [-seg, seg)
        r_in = 0.42
        # edge from the outer vertex (angle 0, r=1) to the inner vertex (angle seg, r_in)
        ox, oy = 1.0, 0.0
        ix, iy = r_in * np.cos(seg), r_in * np.sin(seg)
        nx, ny = iy - oy, ox - ix  # normal of that edge
        d = nx * ox + ny * oy
        aphi = np.abs(phi)
        bound = d / (nx * np.cos(aphi) + ny * np.sin(aphi))
        return r <= bound
    if shape == "heart":
        x, y = px * 1.15, -(py * 1.15) + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    raise ValueError(f"unknown shape {shape!r}")


def shape_coverage(
    shape: str, size: int, cx: float, cy: float, radius: float, angle: float
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Anti-aliased coverage in [0, 1] of a shape, cropped to its window.

    Returns (coverage (h, w) float32, window (y0, y1, x0, x1)) with the window clipped to
    the image; pixel (i, j) has its centre at (j + 0.5, i + 0.5).
    """
    r = radius * 1.05
    x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, size)
    y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, size)
    s = SUPERSAMPLE
    ys = (np.arange(y0 * s, y1 * s, dtype=np.float32) + 0.5) / s
    xs = (np.arange(x0 * s, x1 * s, dtype=np.float32) + 0.5) / s
    dx = (xs[None, :] - cx) / radius
    dy = (ys[:, None] - cy) / radius
    ca, sa = np.cos(angle), np.sin(angle)
    px = dx * ca + dy * sa
    py = -dx * sa + dy * ca
    inside = shape_inside(shape, px, py).astype(np.float32)
    h, w = y1 - y0, x1 - x0
    cov = inside.reshape(h, s, w, s).mean(axis=(1, 3))
    return cov, (y0, y1, x0, x1)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an (H, W, 3) float image over the two spatial axes."""
    return gaussian_filter(img, (sigma, sigma, 0), mode="nearest")
