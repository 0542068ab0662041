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

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter
from PIL import Image
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


# ----------------------------------------------------------------------------------------------
# Rain families: five ways of *making* rain, so a model can be judged on one it never saw
# ----------------------------------------------------------------------------------------------
# Each family renders rain by a different mechanism (not by other parameter values of one
# mechanism). ``heaviness`` in [0, 1] goes from drizzle to downpour inside every family; the
# ``light`` and ``heavy`` levels are fixed sub-ranges of it, used for evaluation. Across families
# the look varies the same way (blend, colour, brightness) and so does the camera (background
# defocus, sensor noise, JPEG), so a family cannot be recognised by those.
FAMILIES = ('streaks', 'particles', 'benchmark', 'lens', 'veil')
FAMILY_LEVELS = {'light': (0.05, 0.3), 'heavy': (0.65, 0.95)}
LOOK_BLENDS = ('screen', 'additive', 'alpha')


@dataclass(frozen=True)
class CameraRanges:
    """What the camera adds around every family's rain (probabilities and uniform ranges).

    Defocus blurs the scene itself (input and target alike). Noise is one realization added to
    both, so the model learns to keep a photo's grain, not to denoise. JPEG compresses input and
    target separately at one quality, as two shots of one camera would be.
    """
    defocus_probability: float = 0.2
    defocus: tuple[float, float] = (0.5, 1.8)          # Gaussian sigma, px
    noise_probability: float = 0.35
    read_noise: tuple[float, float] = (0.002, 0.012)   # sigma, in [0, 1] units
    shot_noise: tuple[float, float] = (0.0, 0.0004)    # variance per unit of signal
    jpeg_probability: float = 0.3
    jpeg_quality: tuple[int, int] = (70, 95)


CAMERA = CameraRanges()


def _lerp(low: float, high: float, t: float) -> float:
    return low + (high - low) * t


def _log_ramp(low: float, mid: float, high: float, t: float) -> float:
    """Log-interpolation low -> mid over t in [0, 0.5], mid -> high over [0.5, 1]: the heavy
    end can rise faster than the light end (benchmark-heavy rain is about 15 dB, light 28)."""
    a, b, u = (low, mid, 2 * t) if t <= 0.5 else (mid, high, 2 * t - 1)
    return math.exp(_lerp(math.log(a), math.log(b), u))


def _look(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A blend and an RGB rain colour: grey to white, slightly blue or warm."""
    blend = LOOK_BLENDS[int(rng.choice(3, p=[0.45, 0.2, 0.35]))]
    tint = np.array([rng.uniform(-0.06, 0.03), 0.0, rng.uniform(-0.02, 0.08)])
    colour = np.clip(rng.uniform(0.6, 1.0) * (1.0 + tint), 0.0, 1.0)
    return blend, colour.astype(np.float32)


def composite(clean: np.ndarray, layer: np.ndarray, blend: str,
              colour: np.ndarray) -> np.ndarray:
    """Rain ``layer`` (``HxW`` in [0, 1]) over ``clean`` (``HxWx3``) in a colour.

    ``screen`` and ``additive`` only brighten; ``alpha`` lays the rain colour over the scene,
    which darkens where the scene is brighter than the rain (rain against a bright sky).
    """
    s = layer[..., None]
    if blend == 'screen':
        out = 1.0 - (1.0 - clean) * (1.0 - s * colour)
    elif blend == 'additive':
        out = clean + s * colour
    elif blend == 'alpha':
        out = clean * (1.0 - s) + colour * s
    else:
        raise ValueError(f'unknown blend {blend!r}; use one of {", ".join(LOOK_BLENDS)}')
    return np.clip(out, 0.0, 1.0)


def _streaks_family(clean: np.ndarray, rng: np.random.Generator, h: float) -> np.ndarray:
    """Sparse seeds smeared by a tapered line kernel, in depth layers (the project's original
    model, Rain200-like), without haze or lens drops: those are other families."""
    shape = clean.shape[:2]
    n = int(rng.integers(1, 2 + round(3 * h)))
    density = _log_ramp(1.5e-3, 4.2e-3, 2.5e-2, h) * rng.uniform(0.7, 1.3)
    length = rng.uniform(10, 30) + 40 * h * rng.random()
    width = rng.uniform(0.3, 0.7) + 1.0 * h * rng.random()
    angle, jitter = rng.uniform(-35, 35), rng.uniform(0, 10)
    opacity = min(1.0, rng.uniform(0.4, 0.75) + 0.25 * h)
    layer = np.zeros(shape, np.float32)
    for i in range(n):
        d = i / (n - 1) if n > 1 else 0.0
        shrink = 1.0 - 0.6 * d
        streaks = streak_layer(shape, rng, density * (1 + d) / n ** 0.5, max(2.0, length * shrink),
                               angle + rng.uniform(-jitter, jitter), max(0.2, width * shrink),
                               (0.5 * opacity * shrink, opacity * shrink))
        layer = 1.0 - (1.0 - layer) * (1.0 - streaks)
    return composite(clean, layer, *_look(rng))


def _splat_segments(shape: tuple[int, int], p0: np.ndarray, p1: np.ndarray,
                    weight: np.ndarray) -> np.ndarray:
    """Line segments ``p0 -> p1`` (``N x 2`` as y, x) drawn with bilinear splats, ``weight``
    per pixel of length (so a segment's ink is ``weight * length``)."""
    h, w = shape
    length = np.hypot(*(p1 - p0).T)
    steps = np.maximum(2, np.ceil(length * 1.5).astype(int) + 1)
    idx = np.repeat(np.arange(len(p0)), steps)
    t = (np.arange(idx.size) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(steps - 1, steps)
    pts = p0[idx] + (p1 - p0)[idx] * t[:, None]
    ink = np.repeat(weight * np.maximum(length, 1.0) / steps, steps)
    y0, x0 = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
    fy, fx = pts[:, 0] - y0, pts[:, 1] - x0
    out = np.zeros(h * w, np.float64)
    for oy, ox, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                        (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + oy, x0 + ox
        keep = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        out += np.bincount(yy[keep] * w + xx[keep], (ink * wgt)[keep], minlength=h * w)
    return out.reshape(h, w)


def _particles_family(clean: np.ndarray, rng: np.random.Generator, h: float) -> np.ndarray:
    """Drops as particles in a 3-D volume in front of a pinhole camera: each falls (with wind)
    during the exposure and its projected path is the streak. Depth sets size, length, density
    and defocus (a focus distance and an aperture); wind toward the camera makes streaks fan out
    from a vanishing point (perspective)."""
    hh, ww = clean.shape[:2]
    f = max(hh, ww) * rng.uniform(0.6, 1.4)                  # focal length, px
    cy, cx = hh / 2 + rng.uniform(-0.2, 0.2) * hh, ww / 2 + rng.uniform(-0.2, 0.2) * ww
    z_near, z_far = 0.5, rng.uniform(10.0, 25.0)             # metres
    # drops per volume, so the near (large, bright) drops do not depend on how far one sees
    count = int(hh * ww * _log_ramp(0.12, 0.29, 4.0, h) * (z_far / 15) ** 3)
    zn3, zf3 = z_near ** 3, z_far ** 3                        # uniform in the view volume
    z = (rng.random(count) * (zf3 - zn3) + zn3) ** (1 / 3)
    y, x = rng.uniform(-0.3 * hh, 1.1 * hh, count), rng.uniform(-0.2 * ww, 1.2 * ww, count)
    world = np.stack([(y - cy) * z / f, (x - cx) * z / f, z], 1)
    diameter = np.clip(rng.lognormal(math.log(_lerp(0.8, 2.2, h)), 0.4, count), 0.3, 5.0) / 1e3
    fall = 9.65 - 10.3 * np.exp(-600 * diameter)              # terminal speed, m/s
    wind = np.array([0.0, rng.normal(0, 2.0), rng.normal(0, 1.5)])
    exposure = math.exp(rng.uniform(math.log(1 / 400), math.log(1 / 40)))
    move = (np.stack([fall, np.zeros(count), np.zeros(count)], 1) + wind
            + rng.normal(0, 0.3, (count, 3))) * exposure
    end = world + move
    end[:, 2] = np.maximum(end[:, 2], 0.5 * world[:, 2])   # a drop cannot reach the lens
    p0 = np.stack([y, x], 1)
    p1 = np.stack([end[:, 0] * f / end[:, 2] + cy, end[:, 1] * f / end[:, 2] + cx], 1)
    # Drops are far below a pixel at these image sizes; ``gain`` stands for the sensor
    # resolution the photo was shrunk from (a drop lights a whole pixel of the small image).
    width = np.clip(f * diameter / z * rng.uniform(4.0, 10.0), 0.3, 6.0)
    length = np.hypot(*(p1 - p0).T)
    alpha = np.clip(rng.uniform(1.5, 4.0) * width / np.maximum(length, 1.0), 0.12, 0.9)
    alpha *= rng.uniform(0.6, 1.0, count)
    focus, aperture = rng.uniform(1.0, 10.0), rng.uniform(0.002, 0.012)
    blur = np.hypot(width / 2.5, np.minimum(f * aperture * np.abs(1 / z - 1 / focus) / 2.5, 10))
    ink = alpha * width
    layer = np.zeros((hh, ww), np.float64)
    edges = (0.0, 0.6, 1.2, 2.4, 4.8, np.inf)
    for lo, hi in zip(edges[:-1], edges[1:]):
        # streaks longer than half the frame are a blur too faint to see: left out
        sel = (blur >= lo) & (blur < hi) & (length < 0.5 * max(hh, ww))
        if not sel.any():
            continue
        drawn = _splat_segments((hh, ww), p0[sel], p1[sel], ink[sel])
        sigma = float(np.median(blur[sel]))
        layer += gaussian_filter(drawn, sigma) if sigma > 0.3 else drawn
    layer = np.clip(layer, 0.0, 1.0).astype(np.float32)
    return composite(clean, layer, *_look(rng))


def _box_line_kernel(length: float, angle: float) -> np.ndarray:
    """Photoshop-style motion blur: a uniform (untapered) line, normalised to sum 1."""
    kernel = line_kernel(length, angle, 0.0)
    kernel = (kernel > 0.05).astype(np.float64) * np.maximum(kernel, 0.5)
    return kernel / kernel.sum()


def _benchmark_family(clean: np.ndarray, rng: np.random.Generator, h: float) -> np.ndarray:
    """The recipe behind Rain100/Rain200 (Photoshop rain): a dense noise field at a grain size,
    levels that keep its brightest part, a small blur, a uniform motion blur, then levels again
    for contrast. Heavy rain stacks up to five layers of different directions (Rain100H)."""
    hh, ww = clean.shape[:2]
    n = 1 if h < 0.4 else int(rng.integers(1, 2 + round(4 * (h - 0.4) / 0.6)))
    base_angle = rng.uniform(-30, 30)
    layer = np.zeros((hh, ww), np.float32)
    for i in range(n):
        grain = rng.uniform(1.0, 1.8)
        small = rng.random((int(hh / grain) + 2, int(ww / grain) + 2))
        noise = np.asarray(Image.fromarray(small.astype(np.float32)).resize(
            (int(round((small.shape[1]) * grain)), int(round(small.shape[0] * grain))),
            Image.BILINEAR))[:hh, :ww]
        keep = _log_ramp(0.025, 0.045, 0.4, h) * rng.uniform(0.7, 1.3)
        drops = np.clip((noise - (1 - keep)) / keep, 0.0, 1.0)
        drops = gaussian_filter(drops, rng.uniform(0.3, 0.6))
        angle = base_angle + (rng.uniform(-25, 25) if i else 0.0)
        length = rng.uniform(10, 25) + 30 * h * rng.random()
        streak = fftconvolve(drops, _box_line_kernel(length, angle), mode='same')
        white = max(float(np.quantile(streak, 0.995)), 1e-4) * rng.uniform(0.6, 1.0)
        black = white * rng.uniform(0.1, 0.4)
        streak = np.clip((streak - black) / (white - black), 0.0, 1.0) ** rng.uniform(0.8, 1.6)
        streak *= rng.uniform(0.4, 0.7) if i else rng.uniform(0.5, 0.9)
        layer = 1.0 - (1.0 - layer) * (1.0 - streak.astype(np.float32))
    return composite(clean, layer, *_look(rng))


def _lens_family(clean: np.ndarray, rng: np.random.Generator, h: float) -> np.ndarray:
    """Water on the lens or the window: out-of-focus drops that refract an inverted, shrunk and
    blurred view of the scene (dark rim, a highlight), and smears where drops ran down."""
    hh, ww = clean.shape[:2]
    scale = max(hh, ww) / 256
    blurred = gaussian_filter(clean, (rng.uniform(1.5, 4.0),) * 2 + (0.0,))
    out = clean.copy()
    for _ in range(int(rng.integers(0, 1 + round(5 * h)))):        # smears (running drops)
        cx, top = rng.uniform(0, ww), rng.uniform(-0.2 * hh, 0.6 * hh)
        half, run = rng.uniform(2, 6) * scale, rng.uniform(0.2, 0.8) * hh
        yy, xx = np.mgrid[0:hh, 0:ww]
        wiggle = cx + 3 * scale * np.sin(yy / (rng.uniform(8, 30) * scale) + rng.uniform(0, 6))
        across = np.clip(1 - np.abs(xx - wiggle) / half, 0, 1)
        along = ((yy >= top) & (yy <= top + run)).astype(np.float64)
        a = (rng.uniform(0.3, 0.7) * across * along)[..., None]
        out = out * (1 - a) + np.clip(blurred + 0.04, 0, 1) * a
    area = hh * ww / 1e4
    count = int(area * _log_ramp(6, 13.4, 150, h) * rng.uniform(0.7, 1.3))
    rmax = _lerp(8, 22, h) * scale
    for _ in range(count):
        r = math.exp(rng.uniform(math.log(2.0 * scale), math.log(rmax)))
        cy, cx = rng.uniform(0, hh), rng.uniform(0, ww)
        ry, rx = r * rng.uniform(0.7, 1.0), r
        y0, y1 = max(0, int(cy - ry - 2)), min(hh, int(cy + ry + 3))
        x0, x1 = max(0, int(cx - rx - 2)), min(ww, int(cx + rx + 3))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        rn = np.hypot((yy - cy) / ry, (xx - cx) / rx)                # 0 centre, 1 edge
        alpha = np.clip((1 - rn) / rng.uniform(0.1, 0.4), 0, 1)[..., None]
        k = rng.uniform(0.3, 0.9)                                     # refraction: inverted view
        sy = np.clip(cy - (yy - cy) * k * 1.5, 0, hh - 1)
        sx = np.clip(cx - (xx - cx) * k * 1.5, 0, ww - 1)
        inside = blurred[sy.round().astype(int), sx.round().astype(int)]
        shade = 1 - rng.uniform(0.1, 0.4) * np.clip(rn, 0, 1)[..., None] ** 3
        glint = np.exp(-((yy - cy + 0.4 * ry) ** 2 + (xx - cx + 0.3 * rx) ** 2)
                       / (2 * (0.15 * r) ** 2))[..., None] * rng.uniform(0.2, 0.6)
        drop = np.clip(inside * shade + glint, 0, 1)
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + drop * alpha
    return np.clip(out, 0.0, 1.0)


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Low-frequency noise scaled to [0, 1]."""
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.min()) / max(float(np.ptp(field)), 1e-9)


def _veil_family(clean: np.ndarray, rng: np.random.Generator, h: float) -> np.ndarray:
    """Rain accumulation as atmospheric scattering, ``I = J t + A (1 - t)``, with
    ``t = exp(-beta d)`` over a made-up depth map (a ground plane up to a horizon, sky beyond,
    uneven with smooth noise), plus the fine texture of distant rain that grows with depth."""
    hh, ww = clean.shape[:2]
    rows = np.arange(hh, dtype=np.float64)[:, None] / hh
    horizon = rng.uniform(0.1, 0.7)
    ground = np.clip(0.08 / np.maximum(rows - horizon, 0.08 / 1.0), 0, 1)
    depth = np.broadcast_to(np.where(rows > horizon, ground, 1.0), (hh, ww))
    depth = np.clip(depth * (0.7 + 0.6 * _smooth_noise((hh, ww), rng, max(hh, ww) / 8)), 0, 1.3)
    beta = _lerp(0.05, 1.4, h) * rng.uniform(0.7, 1.3)
    t = np.exp(-beta * depth)[..., None]
    air = np.clip(rng.uniform(0.65, 0.95) * (1 + np.array([-0.03, 0.0, 0.04])
                                             * rng.uniform(0, 1)), 0, 1)
    foggy = clean * t + air * (1 - t)
    # Distant rain: noise smeared along one direction (an elongated Gaussian), bright part only.
    angle = math.radians(rng.uniform(-25, 25))
    size = int(6 * _lerp(4, 10, h))
    yy, xx = np.mgrid[-size:size + 1, -size:size + 1]
    along = yy * math.cos(angle) + xx * math.sin(angle)
    across = -yy * math.sin(angle) + xx * math.cos(angle)
    kernel = np.exp(-along ** 2 / (2 * _lerp(4, 10, h) ** 2) - across ** 2 / (2 * 0.6 ** 2))
    texture = fftconvolve(rng.standard_normal((hh, ww)), kernel / np.sqrt((kernel ** 2).sum()),
                          mode='same')
    amount = _lerp(0.01, 0.08, h) * rng.uniform(0.5, 1.0)
    texture = np.clip(texture, 0, None) * amount * (1 - t[..., 0])
    return np.clip(foggy + texture[..., None], 0.0, 1.0)


FAMILY_RENDERERS = {'streaks': _streaks_family, 'particles': _particles_family,
                    'benchmark': _benchmark_family, 'lens': _lens_family, 'veil': _veil_family}


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='JPEG', quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def family_pair(img: np.ndarray, family: str, heaviness: float, seed: int | Sequence[int] = 0,
                camera: CameraRanges = CAMERA) -> tuple[np.ndarray, np.ndarray]:
    """``(rainy, target)`` uint8 from an ``HxWx3`` uint8 photo: rain of ``family`` at
    ``heaviness`` in [0, 1], inside one camera (see :class:`CameraRanges`). The target is the
    photo as that camera saw it without rain. Same inputs -> identical output."""
    if family not in FAMILY_RENDERERS:
        raise ValueError(f'unknown rain family {family!r}; use one of {", ".join(FAMILIES)}')
    if not 0.0 <= heaviness <= 1.0:
        raise ValueError(f'heaviness must be in [0, 1], got {heaviness}')
    img = _check_image(img)
    rng = np.random.default_rng(seed)
    cam = np.random.default_rng(rng.integers(2 ** 63))    # the camera draws apart from the rain
    clean = img.astype(np.float32) / 255.0
    if cam.random() < camera.defocus_probability:
        clean = gaussian_filter(clean, (cam.uniform(*camera.defocus),) * 2 + (0.0,))
    rainy = FAMILY_RENDERERS[family](clean, rng, float(heaviness)).astype(np.float32)
    if cam.random() < camera.noise_probability:
        var = cam.uniform(*camera.read_noise) ** 2 + cam.uniform(*camera.shot_noise) * clean
        noise = cam.standard_normal(clean.shape).astype(np.float32) * np.sqrt(var)
        clean, rainy = clean + noise, rainy + noise
    clean8, rainy8 = _to_uint8(clean), _to_uint8(rainy)
    if cam.random() < camera.jpeg_probability:
        quality = int(cam.integers(camera.jpeg_quality[0], camera.jpeg_quality[1] + 1))
        clean8, rainy8 = _jpeg(clean8, quality), _jpeg(rainy8, quality)
    return rainy8, clean8


# ----------------------------------------------------------------------------------------------
# Kinds: what --rain names (a family, a family at a level, the presets, the original random model)
# ----------------------------------------------------------------------------------------------
LEGACY_KINDS = ('random', *RAIN_PRESETS)        # the original model: the streaks family's kin
RAIN_KINDS = (*LEGACY_KINDS, *FAMILIES,
              *(f'{f}:{level}' for f in FAMILIES for level in FAMILY_LEVELS))
ALL_FAMILIES = 'families'                       # shorthand for every family at any heaviness


def family_of(kind: str) -> str:
    """The family a kind belongs to: ``'lens:heavy'`` -> ``'lens'``; the presets and ``random``
    are made by seeds and line kernels, so they count as ``'streaks'``."""
    if kind in LEGACY_KINDS:
        return 'streaks'
    family = kind.split(':')[0]
    if family not in FAMILIES:
        raise ValueError(f'rain kind {kind!r} unknown')
    return family


def parse_rain_kinds(rain: str | Sequence[str], holdout: str | None = None) -> tuple[str, ...]:
    """``'random,light'`` (or a sequence) -> checked kinds; ``families`` expands to all five
    families. ``holdout`` drops every kind of that family (leave-one-family-out training).
    ValueError naming what is wrong."""
    kinds = tuple(k.strip() for k in rain.split(',')) if isinstance(rain, str) else tuple(rain)
    kinds = tuple(k2 for k in kinds for k2 in (FAMILIES if k == ALL_FAMILIES else (k,)))
    bad = [k for k in kinds if k not in RAIN_KINDS]
    if not kinds or bad:
        what = ', '.join(bad) if bad else repr(rain)
        raise ValueError(f'rain kind {what} unknown; use one or more of '
                         f'{", ".join(RAIN_KINDS[:3 + len(FAMILIES)])}, FAMILY:light, '
                         f'FAMILY:heavy or {ALL_FAMILIES}, separated by commas')
    if holdout is not None:
        if holdout not in FAMILIES:
            raise ValueError(f'held-out family {holdout!r} unknown; use one of '
                             f'{", ".join(FAMILIES)}')
        kinds = tuple(k for k in kinds if family_of(k) != holdout)
        if not kinds:
            raise ValueError(f'every rain kind in {rain!r} is of the held-out family {holdout}: '
                             f'nothing left to train on')
    return kinds


def make_rain_pair(img: np.ndarray, kind: str, seed: int | Sequence[int] = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(rainy, target)`` uint8 for one kind. Families draw their heaviness from the seed
    (over [0, 1], or the ``:light``/``:heavy`` sub-range); the original kinds keep the photo as
    target."""
    if kind == 'random':
        return add_random_rain(img, seed), _check_image(img)
    if kind in RAIN_PRESETS:
        return add_rain(img, kind, seed), _check_image(img)
    family, _, level = kind.partition(':')
    if family not in FAMILIES or (level and level not in FAMILY_LEVELS):
        raise ValueError(f'rain kind {kind!r} unknown; use one of {", ".join(RAIN_KINDS)}')
    heaviness = np.random.default_rng(seed).uniform(*FAMILY_LEVELS.get(level, (0.0, 1.0)))
    return family_pair(img, family, float(heaviness), [*np.atleast_1d(seed), 7919])


def make_rainy(img: np.ndarray, kind: str, seed: int | Sequence[int] = 0) -> np.ndarray:
    """The rainy half of :func:`make_rain_pair` (for the original kinds, the whole story)."""
    return make_rain_pair(img, kind, seed)[0]
