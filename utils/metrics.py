"""PSNR and SSIM as deraining papers report them.

The published protocol (Restormer's ``evaluate_PSNR_SSIM.m``, reused by later papers): the
saved 8-bit images, converted to the Y channel of MATLAB's ``rgb2ycbcr`` and rounded to
uint8; PSNR with peak 255; SSIM of Wang et al. (11x11 Gaussian window, sigma 1.5, K1 0.01,
K2 0.03, 'valid' region) computed by scikit-image. Functions are pure: inputs are not modified.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def rgb_to_y(img: np.ndarray, round_to_uint8: bool = True) -> np.ndarray:
    """Y of MATLAB ``rgb2ycbcr`` for uint8 RGB ``HxWx3``: 16 + (65.481R + 128.553G + 24.966B)/255."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {img.shape}')
    rgb = img.astype(np.float64)
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    return np.round(y) if round_to_uint8 else y


def _prepare(img: np.ndarray, crop_border: int, test_y: bool) -> np.ndarray:
    if img.dtype != np.uint8:
        raise ValueError(f'metrics are computed on saved 8-bit images; got dtype {img.dtype}')
    out = rgb_to_y(img) if test_y else img.astype(np.float64)
    if crop_border > 0:
        out = out[crop_border:-crop_border, crop_border:-crop_border, ...]
    return out


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f'image sizes differ: {a.shape} vs {b.shape}')


def calculate_psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 0,
                   test_y: bool = True) -> float:
    """PSNR (dB, peak 255) between two uint8 ``HxWx3`` images; ``inf`` if identical."""
    _check_pair(img, ref)
    a, b = _prepare(img, crop_border, test_y), _prepare(ref, crop_border, test_y)
    mse = np.mean((a - b) ** 2)
    return float('inf') if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def calculate_ssim(img: np.ndarray, ref: np.ndarray, crop_border: int = 0,
                   test_y: bool = True) -> float:
    """SSIM (Wang et al., MATLAB settings) between two uint8 ``HxWx3`` images.

    On Y it is one plane; on RGB it is the mean of the three channels' SSIM.
    """
    _check_pair(img, ref)
    a, b = _prepare(img, crop_border, test_y), _prepare(ref, crop_border, test_y)
    if min(a.shape[:2]) < 11:
        raise ValueError(f'SSIM needs images of at least 11x11 pixels, got {a.shape[:2]}')
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0,
              K1=0.01, K2=0.03)
    if a.ndim == 2:
        return float(structural_similarity(a, b, **kw))
    return float(np.mean([structural_similarity(a[..., c], b[..., c], **kw) for c in range(3)]))
