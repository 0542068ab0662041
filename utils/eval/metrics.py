"""PSNR, SSIM (and optional LPIPS) of one image pair, as deraining papers report them.

The published protocol (Restormer's ``evaluate_PSNR_SSIM.m``, reused by later papers): the
saved 8-bit images, converted to the Y channel of MATLAB's ``rgb2ycbcr`` and rounded to uint8;
no border crop; PSNR with peak 255; SSIM of Wang et al. (11x11 Gaussian window, sigma 1.5,
K1 0.01, K2 0.03, 'valid' region) computed by scikit-image; the mean over the test set.
``evaluation.py``, ``test.py --target_path`` and training validation all call these functions,
so every number in the project is computed the same way. Functions never modify their inputs.
Pairing folders, means and report files are in :mod:`utils.eval.folders`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.metrics import structural_similarity

from utils.core.errors import SpikeDerainError
from utils.data.image_io import uint8_to_tensor

# MATLAB rgb2ycbcr, Y row, scaled by 1000 so that the arithmetic is exact in integers.
_Y_COEFFS_X1000 = np.array([65481, 128553, 24966], dtype=np.int64)
SSIM_SETTINGS = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                     data_range=255.0, K1=0.01, K2=0.03)
SSIM_MIN_SIZE = 11       # the 11x11 window must fit in the 'valid' region


def rgb_to_y(img: np.ndarray, round_to_uint8: bool = True) -> np.ndarray:
    """Y of MATLAB ``rgb2ycbcr`` for uint8 RGB ``HxWx3``: 16 + (65.481R + 128.553G + 24.966B)/255.

    Rounded like MATLAB's conversion to uint8 (nearest, ties away from zero). The sum is
    computed in exact integers, because 194 RGB colours land exactly on .5 where NumPy's
    round-half-to-even would differ. Returned as float64 either way.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {img.shape}')
    if not round_to_uint8:
        rgb = img.astype(np.float64)
        return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    num = img.astype(np.int64) @ _Y_COEFFS_X1000           # = 255000 * (Y - 16)
    return (16 + (num + 127500) // 255000).astype(np.float64)


def _prepare(img: np.ndarray, crop_border: int, test_y: bool) -> np.ndarray:
    if img.dtype != np.uint8:
        raise ValueError(f'metrics are computed on saved 8-bit images; got dtype {img.dtype}')
    if crop_border < 0:
        raise ValueError(f'crop_border must be >= 0, got {crop_border}')
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
    if min(a.shape[:2]) < SSIM_MIN_SIZE:
        raise ValueError(f'SSIM needs images of at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} pixels '
                         f'(after crop_border), got {a.shape[0]}x{a.shape[1]}')
    if a.ndim == 2:
        return float(structural_similarity(a, b, **SSIM_SETTINGS))
    return float(np.mean([structural_similarity(a[..., c], b[..., c], **SSIM_SETTINGS)
                          for c in range(3)]))


# --- LPIPS (optional: the `lpips` package and its backbone weights) -------------------------

class LPIPSUnavailable(SpikeDerainError, RuntimeError):
    """LPIPS cannot run here (package or backbone weights missing); the message says how to fix."""


class LPIPSMetric:
    """LPIPS distance (Zhang et al. 2018) between two uint8 ``HxWx3`` images; lower is better.

    Imported lazily: ``lpips`` (which brings torchvision) is not a project dependency, and its
    backbone (AlexNet by default) is downloaded by torchvision on first use.
    """

    def __init__(self, net: str = 'alex', device: str = 'cpu'):
        try:
            import lpips
        except ImportError as err:
            raise LPIPSUnavailable(
                f'LPIPS needs the optional package `lpips` ({err}); install it with '
                f'`pip install lpips` (it brings torchvision). PSNR/SSIM do not need it') from None
        import torch
        try:
            self.model = lpips.LPIPS(net=net, verbose=False).eval().to(device)
        except (OSError, RuntimeError, ValueError) as err:
            hub = Path(torch.hub.get_dir()) / 'checkpoints'
            text = str(err).strip()
            first = text.splitlines()[0][:200] if text else type(err).__name__
            raise LPIPSUnavailable(
                f'LPIPS backbone weights ({net}) could not be loaded: {first}. torchvision '
                f'downloads them on first use into {hub}; offline, copy the file there from a '
                f'machine that has it (for alex: alexnet-owt-7be5be79.pth) or set TORCH_HOME') \
                from None
        self.device = device

    def __call__(self, img: np.ndarray, ref: np.ndarray) -> float:
        import torch
        _check_pair(img, ref)
        with torch.no_grad():
            a = uint8_to_tensor(img).to(self.device) * 2 - 1
            b = uint8_to_tensor(ref).to(self.device) * 2 - 1
            return float(self.model(a, b).item())
