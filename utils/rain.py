"""Synthetic rain streaks, for demo data and tests where the real benchmarks are not at hand.

A streak layer is sparse random seeds, thickened by a small Gaussian and smeared along one
direction by a line kernel (the camera's exposure of a falling drop); several layers at nearby
angles and lengths give depth. The layer is blended over the clean image by `screen` (never
brighter than white, like light added by a bright drop) or `additive`. Everything is drawn from
one seeded generator, so the same seed gives bit-identical output.

Two ways to draw rain: the fixed ``light``/``heavy`` presets (Rain200L/H-like, for demo data),
and :func:`add_random_rain`, which draws every parameter per sample from the documented ranges of
:class:`RandomRainRanges` (drizzle to downpour, 1-4 depth layers, motion blur, haze, lens drops,
three blend modes) so that a model trained on it meets rain it has not seen.
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


def _check_image(img) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 uint8 image, got {img.dtype} {img.shape}')
    return img


def add_rain(img: np.ndarray, style: str | RainStyle = 'light', seed: int | Sequence[int] = 0,
             blend: str | None = None) -> np.ndarray:
    """Rainy version of an ``HxWx3`` uint8 image (uint8); same inputs -> identical output.

    ``seed`` is anything ``numpy.random.default_rng`` takes, e.g. ``[seed, image_id, sample]``.
    """
    style = get_style(style)
    if blend is not None:
        style = replace(style, blend=blend)
    img = _check_image(img)
    rng = np.random.default_rng(seed)
    streaks = render_streaks(img.shape[:2], style, rng)
    rainy = blend_rain(img.astype(np.float32) / 255.0, streaks, style.blend, style.haze)
    return np.clip(np.round(rainy * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Randomized rain: every parameter drawn per sample, for training that transfers to other rain
# ----------------------------------------------------------------------------------------------
RANDOM_BLENDS = ('screen', 'additive', 'alpha')


@dataclass(frozen=True)
class RandomRainRanges:
    """The ranges :func:`sample_rain_params` draws from (all uniform unless noted).

    Sizes are in pixels of the image the rain is drawn on. Layer ``i`` of ``n`` sits at depth
    ``d = i/(n-1)`` (0 nearest); far layers get shorter, thinner, fainter and denser streaks,
    scaled by ``1 - depth_shrink * d`` (``1 + d`` for density).
    """
    # seeds/pixel/layer, log-uniform: drizzle..downpour
    density: tuple[float, float] = (0.0003, 0.012)
    layers: tuple[int, int] = (1, 4)                  # streak layers, inclusive
    length: tuple[float, float] = (6.0, 70.0)         # nearest layer's streak length
    width: tuple[float, float] = (0.3, 1.8)           # nearest layer's Gaussian sigma across
    angle: tuple[float, float] = (-40.0, 40.0)        # image-wide direction, degrees from vertical
    angle_jitter: tuple[float, float] = (0.0, 10.0)   # max per-layer deviation from it
    motion_blur: tuple[float, float] = (0.0, 1.5)     # extra isotropic blur sigma of the rain
    opacity: tuple[float, float] = (0.25, 1.0)        # peak strength of the nearest streaks
    brightness: tuple[float, float] = (0.65, 1.0)     # grey level of the rain (alpha blend)
    depth_shrink: float = 0.6                         # how much the farthest layer shrinks
    haze: tuple[float, float] = (0.0, 0.3)            # veil strength; scaled by density
    haze_light: tuple[float, float] = (0.6, 1.0)      # grey level of the veiling light
    drops_probability: float = 0.25                   # chance of lens drops/splashes
    drops: tuple[int, int] = (1, 12)                  # drops per 100x100 pixels, inclusive
    drop_radius: tuple[float, float] = (1.5, 8.0)
    blend_weights: tuple[float, float, float] = (0.45, 0.25, 0.30)   # screen, additive, alpha


RANDOM_RAIN = RandomRainRanges()


@dataclass(frozen=True)
class RainParams:
    """One drawn rain sample: what :func:`render_random_rain` draws."""
    # (density, length, width, angle, opacity) per layer
    layers: tuple[tuple[float, float, float, float, float], ...]
    motion_blur: float
    brightness: float
    haze: float
    haze_light: float
    drops: int
    drop_radius: tuple[float, float]
    blend: str


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def sample_rain_params(rng: np.random.Generator, shape: tuple[int, int],
                       ranges: RandomRainRanges = RANDOM_RAIN) -> RainParams:
    """Draw every parameter of one rain sample from ``ranges``."""
    r = ranges
    n = int(rng.integers(r.layers[0], r.layers[1] + 1))
    density = _log_uniform(rng, *r.density)
    # 0 for drizzle, 1 for the densest rain: heavier rain is longer, more opaque and hazier.
    heaviness = math.log(density / r.density[0]) / math.log(r.density[1] / r.density[0])
    length = rng.uniform(*r.length)
    width = rng.uniform(*r.width)
    angle = rng.uniform(*r.angle)
    jitter = rng.uniform(*r.angle_jitter)
    opacity = rng.uniform(*r.opacity)
    layers = []
    for i in range(n):
        d = i / (n - 1) if n > 1 else 0.0
        shrink = 1.0 - r.depth_shrink * d
        layers.append((density * (1.0 + d) / n ** 0.5, max(2.0, length * shrink),
                       max(0.2, width * shrink), angle + rng.uniform(-jitter, jitter),
                       opacity * (1.0 - 0.5 * r.depth_shrink * d)))
    haze = rng.uniform(*r.haze) * heaviness
    has_drops = rng.random() < r.drops_probability
    area = shape[0] * shape[1] / 1e4
    drops = int(round(rng.integers(r.drops[0], r.drops[1] + 1) * area)) if has_drops else 0
    w = np.asarray(r.blend_weights, np.float64)
    blend = RANDOM_BLENDS[int(rng.choice(len(RANDOM_BLENDS), p=w / w.sum()))]
    return RainParams(tuple(layers), float(rng.uniform(*r.motion_blur)),
                      float(rng.uniform(*r.brightness)), float(haze),
                      float(rng.uniform(*r.haze_light)), drops, r.drop_radius, blend)


def _drop_layer(img: np.ndarray, rng: np.random.Generator, count: int,
                radius: tuple[float, float]) -> np.ndarray:
    """Drops on the lens: soft discs showing a blurred, brighter view of the scene behind."""
    h, w = img.shape[:2]
    blurred = gaussian_filter(img, sigma=(3.0, 3.0, 0.0))
    out = img.copy()
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(count):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        rad = rng.uniform(*radius)
        dist = np.hypot(yy - cy, (xx - cx) * rng.uniform(0.7, 1.0))
        alpha = np.clip((rad - dist) / max(1.0, 0.3 * rad), 0.0, 1.0)[..., None]
        lit = np.clip(blurred + rng.uniform(0.03, 0.15), 0.0, 1.0)
        out = out * (1.0 - alpha * 0.9) + lit * alpha * 0.9
    return out


def render_random_rain(clean: np.ndarray, params: RainParams,
                       rng: np.random.Generator) -> np.ndarray:
    """Rain drawn by ``params`` over ``HxWx3`` float [0, 1]; returns float [0, 1]."""
    shape = clean.shape[:2]
    streaks = np.zeros(shape, np.float32)
    for density, length, width, angle, opacity in params.layers:
        layer = streak_layer(shape, rng, density, length, angle, width, (0.5 * opacity, opacity))
        streaks = 1.0 - (1.0 - streaks) * (1.0 - layer)
    if params.motion_blur > 0.05:
        streaks = gaussian_filter(streaks, params.motion_blur)
        streaks = streaks / max(float(streaks.max()), 1e-6) * min(1.0, float(streaks.max()) * 1.5)
    s = streaks[..., None]
    if params.blend == 'screen':
        rainy = 1.0 - (1.0 - clean) * (1.0 - s * params.brightness)
    elif params.blend == 'additive':
        rainy = clean + s * params.brightness
    else:
        rainy = clean * (1.0 - s) + params.brightness * s
    if params.haze > 0:
        rainy = rainy * (1.0 - params.haze) + params.haze * params.haze_light
    if params.drops:
        rainy = _drop_layer(np.clip(rainy, 0.0, 1.0), rng, params.drops, params.drop_radius)
    return np.clip(rainy, 0.0, 1.0)


def add_random_rain(img: np.ndarray, seed: int | Sequence[int] = 0,
                    ranges: RandomRainRanges = RANDOM_RAIN) -> np.ndarray:
    """Rainy version of an ``HxWx3`` uint8 image with every rain parameter drawn from ``ranges``.

    Same image and seed -> identical output.
    """
    img = _check_image(img)
    rng = np.random.default_rng(seed)
    params = sample_rain_params(rng, img.shape[:2], ranges)
    rainy = render_random_rain(img.astype(np.float32) / 255.0, params, rng)
    return np.clip(np.round(rainy * 255.0), 0, 255).astype(np.uint8)


RAIN_KINDS = ('random', *RAIN_PRESETS)


def parse_rain_kinds(rain: str | Sequence[str]) -> tuple[str, ...]:
    """``'random,light'`` (or a sequence) -> checked kinds; ValueError naming the unknown ones."""
    kinds = tuple(k.strip() for k in rain.split(',')) if isinstance(rain, str) else tuple(rain)
    bad = [k for k in kinds if k not in RAIN_KINDS]
    if not kinds or bad:
        what = ', '.join(bad) if bad else repr(rain)
        raise ValueError(f'rain kind {what} unknown; use one or more of '
                         f'{", ".join(RAIN_KINDS)} separated by commas')
    return kinds


def make_rainy(img: np.ndarray, kind: str, seed: int | Sequence[int] = 0) -> np.ndarray:
    """Rain of one kind: ``'random'`` or a preset name (``'light'``, ``'heavy'``)."""
    if kind == 'random':
        return add_random_rain(img, seed)
    return add_rain(img, kind, seed)
