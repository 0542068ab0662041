"""Synthetic rain streaks, for demo data and tests where the real benchmarks are not at hand.

A streak layer is sparse random seeds, thickened by a small Gaussian and smeared along one
direction by a line kernel (the camera's exposure of a falling drop); several layers at nearby
angles and lengths give depth. The layer is blended over the clean image by `screen` (never
brighter than white, like light added by a bright drop) or `additive`. Everything is drawn from
one seeded generator, so the same seed gives bit-identical output.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

BLENDS = ('screen', 'additive')


@dataclass(frozen=True)
class RainStyle:
    """Ranges a rain sample is drawn from. Lengths/thickness are in pixels of the output image."""
    density: float                   # streak seeds per pixel, per layer
    layers: int                      # independent streak layers (depth)
    length: tuple[float, float]      # streak length range
    angle: tuple[float, float]       # image-wide direction range, degrees from vertical
    angle_spread: float              # per-layer deviation from the image-wide direction
    thickness: float                 # Gaussian sigma across the streak
    intensity: tuple[float, float]   # peak brightness range of one streak, in [0, 1]
    blend: str = 'screen'
    haze: float = 0.0                # uniform veil of scattered light (heavy rain), in [0, 1]


RAIN_PRESETS: dict[str, RainStyle] = {
    # Rain200L-like: sparse, thin, one direction.
    'light': RainStyle(density=0.003, layers=1, length=(15, 30), angle=(-20, 20),
                       angle_spread=0, thickness=0.5, intensity=(0.35, 0.7)),
    # Rain200H-like: dense, longer, thicker, several layers at slightly different angles.
    'heavy': RainStyle(density=0.0025, layers=3, length=(25, 45), angle=(-30, 30),
                       angle_spread=8, thickness=0.9, intensity=(0.4, 0.85), haze=0.05),
}


def get_style(style: str | RainStyle) -> RainStyle:
    if isinstance(style, RainStyle):
        return style
    if style not in RAIN_PRESETS:
        raise ValueError(f'unknown rain style {style!r}; use one of {", ".join(RAIN_PRESETS)}')
    return RAIN_PRESETS[style]


def line_kernel(length: float, angle: float, thickness: float) -> np.ndarray:
    """A streak's shape: a line of ``length`` px at ``angle`` degrees from vertical, peak 1.

    The ends taper (sine window) so streaks fade in and out like real motion blur.
    """
    half = int(math.ceil(length / 2 + 3 * thickness)) + 1
    size = 2 * half + 1
    kernel = np.zeros((size, size), np.float64)
    theta = math.radians(angle)
    dy, dx = math.cos(theta), math.sin(theta)
    steps = max(2, int(length * 4))
    t = np.linspace(-length / 2, length / 2, steps)
    weight = np.sin(np.linspace(0, math.pi, steps + 2)[1:-1])
    ys, xs = half + t * dy, half + t * dx
    # Bilinear splatting keeps sub-pixel angles smooth.
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for oy, ox, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                      (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(kernel, (y0 + oy, x0 + ox), w * weight)
    if thickness > 0:
        kernel = gaussian_filter(kernel, thickness)
    return kernel / kernel.max()


def streak_layer(shape: tuple[int, int], rng: np.random.Generator, density: float,
                 length: float, angle: float, thickness: float,
                 intensity: tuple[float, float]) -> np.ndarray:
    """One layer of parallel streaks, ``HxW`` float32 in [0, 1]."""
    h, w = shape
    kernel = line_kernel(length, angle, thickness)
    pad = kernel.shape[0] // 2
    # Seed a margin around the image too, so streaks enter from outside the frame.
    ph, pw = h + 2 * pad, w + 2 * pad
    seeds = (rng.random((ph, pw)) < density) * rng.uniform(*intensity, size=(ph, pw))
    layer = fftconvolve(seeds, kernel, mode='same')[pad:pad + h, pad:pad + w]
    return np.clip(layer, 0.0, 1.0).astype(np.float32)


def render_streaks(shape: tuple[int, int], style: str | RainStyle,
                   rng: np.random.Generator) -> np.ndarray:
    """All layers of one rain sample combined by screen, ``HxW`` float32 in [0, 1]."""
    style = get_style(style)
    base_angle = rng.uniform(*style.angle)
    total = np.zeros(shape, np.float32)
    for _ in range(style.layers):
        angle = base_angle + rng.uniform(-style.angle_spread, style.angle_spread)
        layer = streak_layer(shape, rng, style.density, rng.uniform(*style.length), angle,
                             style.thickness, style.intensity)
        total = 1.0 - (1.0 - total) * (1.0 - layer)
    return total


def blend_rain(clean: np.ndarray, streaks: np.ndarray, blend: str = 'screen',
               haze: float = 0.0) -> np.ndarray:
    """Blend an ``HxW`` streak layer over ``HxWx3`` float [0, 1]; result never darker."""
    if blend not in BLENDS:
        raise ValueError(f'unknown blend {blend!r}; use one of {", ".join(BLENDS)}')
    s = streaks[..., None]
    if haze > 0:
        clean = clean + (1.0 - clean) * haze
    if blend == 'screen':
        return 1.0 - (1.0 - clean) * (1.0 - s)
    return np.clip(clean + s, 0.0, 1.0)


def add_rain(img: np.ndarray, style: str | RainStyle = 'light', seed: int | Sequence[int] = 0,
             blend: str | None = None) -> np.ndarray:
    """Rainy version of an ``HxWx3`` uint8 image (uint8); same inputs -> identical output.

    ``seed`` is anything ``numpy.random.default_rng`` takes, e.g. ``[seed, image_id, sample]``.
    """
    style = get_style(style)
    if blend is not None:
        style = replace(style, blend=blend)
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 uint8 image, got {img.dtype} {img.shape}')
    rng = np.random.default_rng(seed)
    streaks = render_streaks(img.shape[:2], style, rng)
    rainy = blend_rain(img.astype(np.float32) / 255.0, streaks, style.blend, style.haze)
    return np.clip(np.round(rainy * 255.0), 0, 255).astype(np.uint8)
