"""No-reference quality scores (NIQE, BRISQUE, PIQE) for restored photos that have no target.

Real rainy photos (RW_Rain, a user's own) have no clean ground truth, so PSNR/SSIM cannot be
computed; deraining papers report these blind scores instead. All three: lower is better. They
track people's judgement only loosely (see docs/protocol.md), so read them next to the pictures.

Why not a library: no maintained PyPI package computes them offline (pyiqa and piq download their
parameter files at run time; scikit-video's NIQE fails with current SciPy, which no longer has
``scipy.misc.imresize``; OpenCV's BRISQUE needs the opencv-contrib wheel, about 200 MB installed,
plus model files that wheel does not ship). So each method is written here after its published
description, with the standard parameters copied from registry packages into ``noref_params/``
(origins and licences in its SOURCES.md), and each is checked against a reference implementation
within 0.01 (tests/eval/test_noreference.py):

- NIQE (Mittal, Soundararajan, Bovik 2013) on the rounded Y channel, 96x96 blocks, the pristine
  model of the NIQE release; as BasicSR's ``calculate_niqe`` (a port of MATLAB's ``niqe``),
  including its float32 arithmetic;
- BRISQUE (Mittal, Moorthy, Bovik 2012) with the LIVE-trained SVR as OpenCV contrib's
  ``quality::QualityBRISQUE`` computes it (the authors' C++ release): 8-bit gray, bicubic
  half scale, float32 MSCN, the shape search that stops at the first minimum, scores clamped to
  [0, 100];
- PIQE (Venkatanath N et al. 2015), parameter-free, as MATLAB's ``piqe`` (16x16 blocks), checked
  against pypiqe 1.2 (a Python port of it).

Every function takes a uint8 ``HxWx3`` RGB image and returns a float; an image too small for the
metric raises :class:`NoReferenceSizeError`, one NIQE cannot score (fewer than two textured
blocks) :class:`NoReferenceError` (both :class:`InputError`, one line).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from scipy.ndimage import correlate
from scipy.special import gamma as gamma_fn

from utils.core.errors import InputError
from utils.eval.metrics import rgb_to_y

PARAMS_DIR = Path(__file__).with_name('noref_params')
METRICS = ('niqe', 'brisque', 'piqe')
NIQE_BLOCK = 96            # the block size the pristine model was fitted with
NIQE_MIN_BLOCKS = 2        # a covariance needs two blocks' features
BRISQUE_MIN_SIZE = 14      # the 7x7 window must fit at half scale
PIQE_BLOCK = 16


class NoReferenceError(InputError):
    """A no-reference metric is undefined on this image (one line, naming why)."""


class NoReferenceSizeError(NoReferenceError):
    """An image smaller than a no-reference metric's block or window."""


def _check_image(img: np.ndarray) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected a uint8 HxWx3 RGB image, got {img.dtype} {img.shape}')


def check_size(width: int, height: int, metrics: list[str] | tuple[str, ...] = METRICS) -> None:
    """Raise :class:`NoReferenceSizeError` if a ``width`` x ``height`` image is too small for
    one of ``metrics`` (so a folder can be checked from the image headers, before any work)."""
    for m in metrics:
        if m == 'niqe' and (height // NIQE_BLOCK) * (width // NIQE_BLOCK) < NIQE_MIN_BLOCKS:
            need = f'{NIQE_MIN_BLOCKS} blocks of {NIQE_BLOCK}x{NIQE_BLOCK} pixels (e.g. 192x96)'
        elif m == 'brisque' and min(width, height) < BRISQUE_MIN_SIZE:
            need = f'{BRISQUE_MIN_SIZE}x{BRISQUE_MIN_SIZE} pixels'
        elif m == 'piqe' and min(width, height) < PIQE_BLOCK:
            need = f'{PIQE_BLOCK}x{PIQE_BLOCK} pixels'
        else:
            continue
        raise NoReferenceSizeError(
            f'{width}x{height} is too small for {m.upper()}: it needs at least {need}')


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``: sampled, normalised to sum 1."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


# --- NIQE ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _niqe_params() -> tuple[np.ndarray, np.ndarray]:
    with np.load(PARAMS_DIR / 'niqe_pristine.npz') as f:
        return f['mu'], f['cov']


@functools.lru_cache(maxsize=1)
def _gamma_table() -> tuple[np.ndarray, np.ndarray]:
    """The shape grid 0.2:0.001:10 and its ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))."""
    grid = np.arange(0.2, 10.001, 0.001)
    return grid, gamma_fn(2 / grid) ** 2 / (gamma_fn(1 / grid) * gamma_fn(3 / grid))


def _cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize``'s bicubic kernel (a = -0.5)."""
    ax = np.abs(x)
    return np.where(ax <= 1, 1.5 * ax ** 3 - 2.5 * ax ** 2 + 1,
                    np.where(ax <= 2, -0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2, 0.0))


def _half_matlab(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)`` (bicubic, antialiased, symmetric borders), both axes.

    At scale 1/2 every output sample is the same 8-tap filter (the kernel stretched by 2) at
    stride 2: output ``j`` reads inputs ``2j-3 .. 2j+4``.
    """
    taps = 0.5 * _cubic(0.5 * (np.arange(3.5, -4, -1.0)))
    taps /= taps.sum()

    def along(x: np.ndarray, axis: int) -> np.ndarray:
        n = x.shape[axis]
        m = -(-n // 2)
        pad = [(0, 0)] * x.ndim
        pad[axis] = (3, 2 * m + 3 - n)
        xp = np.pad(x, pad, mode='symmetric')
        out = 0.0
        for k, w in enumerate(taps):
            sl = [slice(None)] * x.ndim
            sl[axis] = slice(k, k + 2 * m - 1, 2)
            out = out + w * xp[tuple(sl)]
        return out

    return along(along(img, 0), 1)


def _aggd(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shape and left/right scales of an asymmetric generalised Gaussian, per block.

    ``blocks`` is ``[N, ...]``; the shape is the grid point nearest the moment ratio (NIQE's
    ``estimateaggdparam``). Blocks with no negative or no positive values give NaN, as in MATLAB.
    """
    flat = blocks.reshape(len(blocks), -1)
    with np.errstate(invalid='ignore', divide='ignore'):
        neg = np.where(flat < 0, flat ** 2, 0.0)
        pos = np.where(flat > 0, flat ** 2, 0.0)
        left = np.sqrt(neg.sum(1) / (flat < 0).sum(1))
        right = np.sqrt(pos.sum(1) / (flat > 0).sum(1))
        gammahat = left / right
        rhat = np.mean(np.abs(flat), 1) ** 2 / np.mean(flat ** 2, 1)
        rhatnorm = rhat * (gammahat ** 3 + 1) * (gammahat + 1) / (gammahat ** 2 + 1) ** 2
    grid, ratio = _gamma_table()
    alpha = grid[np.argmin((ratio[None, :] - rhatnorm[:, None]) ** 2, axis=1)]
    alpha = np.where(np.isnan(rhatnorm), np.nan, alpha)
    with np.errstate(invalid='ignore'):
        scale = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left * scale, right * scale


def _niqe_features(blocks: np.ndarray) -> np.ndarray:
    """NIQE's 18 features of each MSCN block ``[N, h, w]``: its AGGD, and those of 4 products."""
    alpha, bl, br = _aggd(blocks)
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):          # circular within the block
        alpha, bl, br = _aggd(blocks * np.roll(blocks, shift, axis=(1, 2)))
        with np.errstate(invalid='ignore'):
            mean = (br - bl) * gamma_fn(2 / alpha) / gamma_fn(1 / alpha)
        feats += [alpha, mean, bl, br]
    return np.stack(feats, axis=1)


def _mscn(img: np.ndarray, window: np.ndarray, c: float) -> np.ndarray:
    mu = correlate(img, window, mode='nearest')
    sigma = np.sqrt(np.abs(correlate(img * img, window, mode='nearest') - mu * mu))
    return (img - mu) / (sigma + c)


def niqe(img: np.ndarray) -> float:
    """NIQE of a uint8 RGB image (lower is better; >= 0, no upper bound)."""
    _check_image(img)
    # the rounded MATLAB Y in float32, as the reference (BasicSR) computes: on a small image
    # (few blocks) float64 moves a shape estimate by a grid step and the score by ~0.02
    y = rgb_to_y(img).astype(np.float32)
    check_size(img.shape[1], img.shape[0], ['niqe'])
    nh, nw = y.shape[0] // NIQE_BLOCK, y.shape[1] // NIQE_BLOCK
    y = y[:nh * NIQE_BLOCK, :nw * NIQE_BLOCK]
    window = _gaussian_window()
    feats = []
    for scale in (1, 2):
        b = NIQE_BLOCK // scale
        norm = _mscn(y, window, 1.0)
        # blocks in MATLAB's column-major order (the order does not change the mean/covariance)
        blocks = norm.reshape(nh, b, nw, b).transpose(2, 0, 1, 3).reshape(-1, b, b)
        feats.append(_niqe_features(blocks))
        if scale == 1:
            y = (_half_matlab(y / 255.0) * 255.0).astype(np.float32)
    dist = np.concatenate(feats, axis=1)
    mu_pris, cov_pris = _niqe_params()
    complete = dist[~np.isnan(dist).any(axis=1)]
    if len(complete) < NIQE_MIN_BLOCKS:
        # a flat block (no positive or no negative coefficients) has no shape estimate
        raise NoReferenceError(
            f'NIQE is undefined here: only {len(complete)} of its {len(dist)} '
            f'{NIQE_BLOCK}x{NIQE_BLOCK} blocks have texture, it needs {NIQE_MIN_BLOCKS}')
    mu = np.nanmean(dist, axis=0)
    dist = complete
    cov = np.cov(dist, rowvar=False)
    diff = mu_pris - mu
    return float(np.sqrt(diff @ np.linalg.pinv((cov_pris + cov) / 2) @ diff))


# --- BRISQUE ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _brisque_model() -> dict:
    with np.load(PARAMS_DIR / 'brisque_live.npz') as f:
        return {k: f[k] for k in f.files}


def _gray_opencv(img: np.ndarray) -> np.ndarray:
    """OpenCV 5's 8-bit RGB -> gray: 0.299 R + 0.587 G + 0.114 B in 15-bit fixed point, rounded.

    Equal to ``cv2.cvtColor(..., COLOR_RGB2GRAY)`` of opencv-contrib-python-headless 5.1.0.95 on
    all 2^24 colours (the 14-bit constants 4899/9617/1868 differ on about 0.3 % of random ones).
    """
    rgb = img.astype(np.int32)
    return ((rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + (1 << 14)) >> 15
            ).astype(np.uint8)


def _cubic_opencv_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices ``[n_out, 4]`` and weights of OpenCV's INTER_CUBIC (a = -0.75)."""
    a = -0.75
    f = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    s = np.floor(f)
    x = (f - s).astype(np.float32).astype(np.float64)
    w0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    w1 = ((a + 2) * x - (a + 3)) * x * x + 1
    w2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    w = np.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=1).astype(np.float32)
    idx = np.clip(s[:, None].astype(np.int64) + np.arange(-1, 3), 0, n_in - 1)
    return idx, w


def _resize_cubic_opencv(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(img, (w, h), interpolation=INTER_CUBIC)`` of a float32 image."""
    h, w = size
    ix, wx = _cubic_opencv_weights(img.shape[1], w)
    rows = np.einsum('hwk,wk->hw', img[:, ix], wx, dtype=np.float32)
    iy, wy = _cubic_opencv_weights(img.shape[0], h)
    return np.einsum('hkw,hk->hw', rows[iy], wy, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _gaussian_taps_f32() -> np.ndarray:
    r = np.arange(7) - 3.0
    g = np.exp(-r ** 2 / (2 * (7 / 6) ** 2))
    return (g / g.sum()).astype(np.float32)


def _blur_opencv(img: np.ndarray) -> np.ndarray:
    """``cv2.GaussianBlur(img, (7, 7), 7/6, borderType=BORDER_REPLICATE)``, float32."""
    taps = _gaussian_taps_f32()
    out = img
    for axis in (1, 0):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (3, 3)
        xp = np.pad(out, pad, mode='edge')
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k in range(7):
            acc += taps[k] * (xp[:, k:k + n] if axis == 1 else xp[k:k + n])
        out = acc
    return out


@functools.lru_cache(maxsize=1)
def _opencv_gamma_search() -> tuple[np.ndarray, np.ndarray]:
    """The shape values OpenCV visits (0.2 plus 0.001 added repeatedly, < 10) and their ratios."""
    steps = np.full(9801, 0.001)
    steps[0] = 0.2
    grid = np.add.accumulate(steps)
    grid = grid[grid < 10]
    return grid, gamma_fn(2 / grid) ** 2 / (gamma_fn(1 / grid) * gamma_fn(3 / grid))


def _aggd_opencv(x: np.ndarray) -> tuple[float, float, float]:
    """OpenCV BRISQUE's AGGD fit: the first shape whose ratio error stops decreasing."""
    neg, pos = x[x < 0], x[x > 0]                             # float32 squares, double sums
    negsq = float(np.sum(neg * neg, dtype=np.float64))
    possq = float(np.sum(pos * pos, dtype=np.float64))
    left, right = np.sqrt(negsq / max(len(neg), 1)), np.sqrt(possq / max(len(pos), 1))
    n = x.size
    gammahat = left / right if right > 0 else np.inf
    abssum = float(np.sum(np.abs(x), dtype=np.float64))
    rhat = (abssum / n) ** 2 / ((negsq + possq) / n) if negsq + possq > 0 else 0.0
    rhatnorm = rhat * (gammahat ** 3 + 1) * (gammahat + 1) / (gammahat ** 2 + 1) ** 2 \
        if np.isfinite(gammahat) else np.inf
    grid, ratio = _opencv_gamma_search()
    diff = np.abs(ratio - rhatnorm)
    rises = np.nonzero(diff[1:] > diff[:-1])[0]
    shape = grid[rises[0]] if len(rises) else grid[-1]
    return float(shape), float(left), float(right)


def _brisque_features(gray01: np.ndarray) -> np.ndarray:
    feats = []
    for scale in (1, 2):
        if scale == 1:
            img = gray01
        else:
            img = _resize_cubic_opencv(gray01, (gray01.shape[0] // 2, gray01.shape[1] // 2))
        mu = _blur_opencv(img)
        var = _blur_opencv(img * img) - mu * mu
        sigma = np.sqrt(np.abs(var)).astype(np.float32) + np.float32(1 / 255)   # cv::pow(x, .5)
        mscn = ((img - mu) / sigma).astype(np.float32)
        shape, left, right = _aggd_opencv(mscn)
        feats += [shape, (left * left + right * right) / 2]
        for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)):      # neighbour, zero outside
            shifted = np.zeros_like(mscn)
            h, w = mscn.shape
            ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy),
                                                                       slice(-dy, h))
            shifted[yd, 0:w - dx] = mscn[ys, dx:w]
            shape, left, right = _aggd_opencv(mscn * shifted)
            const = np.sqrt(gamma_fn(1 / shape)) / np.sqrt(gamma_fn(3 / shape))
            mean = (right - left) * gamma_fn(2 / shape) / gamma_fn(1 / shape) * const
            feats += [shape, mean, left * left, right * right]
    return np.asarray(feats, dtype=np.float32)


def brisque(img: np.ndarray) -> float:
    """BRISQUE of a uint8 RGB image with the LIVE-trained SVR, in [0, 100] (lower is better)."""
    _check_image(img)
    check_size(img.shape[1], img.shape[0], ['brisque'])
    gray = _gray_opencv(img).astype(np.float32) * np.float32(1 / 255)
    model = _brisque_model()
    lo, hi = model['feature_range']
    x = (-1 + 2 * (_brisque_features(gray) - lo) / (hi - lo)).astype(np.float64)
    dist2 = np.sum((model['support_vectors'].astype(np.float64) - x) ** 2, axis=1)
    score = float(model['coefficients'] @ np.exp(-model['gamma'] * dist2) - model['rho'])
    return min(max(score, 0.0), 100.0)


# --- PIQE ---------------------------------------------------------------------------------------

def _sliding_std(edges: np.ndarray, window: int) -> np.ndarray:
    """Sample std of every ``window``-long run along the last axis."""
    runs = np.lib.stride_tricks.sliding_window_view(edges, window, axis=-1)
    return runs.std(axis=-1, ddof=1)


def piqe(img: np.ndarray) -> float:
    """PIQE of a uint8 RGB image, in [0, 100] (lower is better); needs no trained parameters."""
    _check_image(img)
    check_size(img.shape[1], img.shape[0], ['piqe'])
    b = PIQE_BLOCK
    gray = _gray_opencv(img).astype(np.float64)               # = MATLAB rgb2gray of uint8
    h, w = gray.shape
    gray = np.pad(gray, ((0, -h % b), (0, -w % b)), mode='symmetric')
    peak = gray.max()
    if peak == 0:
        return 100.0                                          # uniform: MATLAB's worst score
    gray = np.round(255 * (gray / peak))
    norm = _mscn(gray, _gaussian_window(), 1.0)
    nh, nw = norm.shape[0] // b, norm.shape[1] // b
    blocks = norm.reshape(nh, b, nw, b).transpose(0, 2, 1, 3).reshape(-1, b, b)
    var = blocks.reshape(len(blocks), -1).var(axis=1, ddof=1)
    active = var > 0.1
    # noticeable artifacts: some 6-long run of an edge of the block is nearly flat
    edges = np.stack([blocks[:, 0, :], blocks[:, :, b - 1], blocks[:, b - 1, :], blocks[:, :, 0]],
                     axis=1)
    impaired = (_sliding_std(edges, 6) < 0.1).any(axis=(1, 2))
    # noise: centre columns vs the rest (MATLAB drops columns c1 and then c2 of what is left)
    c1 = b // 2
    centre = np.concatenate([blocks[:, :, c1 - 1], blocks[:, :, c1]], axis=1)
    keep = [i for i in range(b) if i not in (c1 - 1, c1 + 1)]
    surround = blocks[:, :, keep].reshape(len(blocks), -1)
    with np.errstate(invalid='ignore', divide='ignore'):
        ratio = centre.std(axis=1, ddof=1) / surround.std(axis=1, ddof=1)
        ratio = np.nan_to_num(ratio, nan=0.0)
        sig = np.sqrt(var)
        beta = np.abs(sig - ratio) / np.maximum(sig, ratio)
    noisy = sig > 2 * beta
    scores = active * impaired * (1 - var) + active * noisy * var
    return float((scores.sum() + 1) / (active.sum() + 1) * 100)


NO_REFERENCE = {'niqe': niqe, 'brisque': brisque, 'piqe': piqe}
LABELS = {'niqe': 'NIQE', 'brisque': 'BRISQUE', 'piqe': 'PIQE'}


def parse_metrics(text: str) -> list[str]:
    """``'niqe,brisque'`` -> ``['niqe', 'brisque']``; ``'all'`` -> every metric; ``'none'`` -> [].

    Anything else is a ValueError naming the choices.
    """
    names = [n.strip().lower() for n in text.split(',') if n.strip()]
    if names in (['all'], ['none']):
        return list(METRICS) if names == ['all'] else []
    bad = [n for n in names if n not in NO_REFERENCE]
    if bad or not names:
        raise ValueError(f'{text!r}: no-reference metrics are {", ".join(METRICS)}, all or none')
    return list(dict.fromkeys(names))


def score_image(img: np.ndarray, metrics: list[str] | tuple[str, ...] = METRICS,
                name: str = 'image', skip_small: bool = False) -> dict[str, float]:
    """The chosen no-reference scores of one image.

    An image too small (or too flat) for a metric raises :class:`NoReferenceError` naming
    ``name``, or with ``skip_small`` scores NaN for that metric (a folder of mixed sizes still
    gets the others).
    """
    out = {}
    for m in metrics:
        try:
            out[m] = NO_REFERENCE[m](img)
        except NoReferenceError as err:
            if not skip_small:
                raise type(err)(f'{name}: {err}') from None
            out[m] = float('nan')
    return out
