"""PSNR/SSIM by the published protocol, checked against values derived independently here."""
import math
import sys
import types
import urllib.error
from fractions import Fraction

import numpy as np
import pytest
from scipy.signal import convolve2d
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from utils.eval.metrics import (LPIPSMetric, LPIPSUnavailable, calculate_psnr, calculate_ssim,
                                rgb_to_y)


def _rng_image(seed, h=40, w=52):
    """A photo-like uint8 image: smooth structure plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] * [1, 0.8, 0.6]
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _matlab_y(img):
    """Independent Y: float formula, then MATLAB's round (half away from zero)."""
    rgb = img.astype(np.float64)
    y = 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255
    return np.floor(y + 0.5)


def _matlab_ssim(a, b):
    """Wang et al.'s ssim_index.m: fspecial('gaussian', 11, 1.5), filter2 'valid', L = 255."""
    ax = np.arange(-5, 6)
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5 ** 2))
    win = g / g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    f = lambda x: convolve2d(x, win, mode='valid')  # noqa: E731 (symmetric window)
    mu1, mu2 = f(a), f(b)
    s1, s2, s12 = f(a * a) - mu1 ** 2, f(b * b) - mu2 ** 2, f(a * b) - mu1 * mu2
    num = (2 * mu1 * mu2 + c1) * (2 * s12 + c2)
    ssim_map = num / ((mu1 ** 2 + mu2 ** 2 + c1) * (s1 + s2 + c2))
    return ssim_map.mean()


def test_identical_images_give_inf_and_one():
    img = _rng_image(0)
    for test_y in (True, False):
        assert calculate_psnr(img, img.copy(), test_y=test_y) == math.inf
        assert calculate_ssim(img, img.copy(), test_y=test_y) == pytest.approx(1.0, abs=1e-12)


def test_constant_offset_on_y_gives_closed_form_psnr():
    # Gray levels v -> Y = round(16 + 219 v / 255) covers every Y in 16..235, so for each pixel
    # we can pick a gray level whose Y is exactly d higher: then MSE = d^2.
    levels = np.arange(256)
    y_of = np.floor(16 + 219 * levels / 255 + 0.5).astype(int)
    first_v = {y: int(levels[y_of == y][0]) for y in np.unique(y_of)}
    rng = np.random.default_rng(1)
    v = rng.integers(0, 200, (24, 30))
    d = 5
    a = np.repeat(v[..., None], 3, axis=2).astype(np.uint8)
    vb = np.vectorize(lambda x: first_v[y_of[x] + d])(v)
    b = np.repeat(vb[..., None], 3, axis=2).astype(np.uint8)
    assert np.all(rgb_to_y(b) - rgb_to_y(a) == d)
    assert calculate_psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / d ** 2), abs=1e-10)


def test_constant_offset_on_rgb_gives_closed_form_psnr():
    a = np.clip(_rng_image(2), 0, 240)
    b = a + np.uint8(3)
    assert calculate_psnr(a, b, test_y=False) == pytest.approx(20 * math.log10(255 / 3), abs=1e-10)


def test_agrees_with_independent_skimage_and_matlab_style_computation():
    for seed in range(3):
        ref = _rng_image(10 + seed)
        noisy = np.clip(ref + np.random.default_rng(seed).normal(0, 12, ref.shape), 0, 255)
        img = noisy.astype(np.uint8)
        ya, yb = _matlab_y(img), _matlab_y(ref)
        psnr = peak_signal_noise_ratio(yb, ya, data_range=255)
        ssim = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=255)
        assert calculate_psnr(img, ref) == pytest.approx(psnr, abs=1e-4)
        assert calculate_ssim(img, ref) == pytest.approx(ssim, abs=1e-4)
        assert calculate_ssim(img, ref) == pytest.approx(_matlab_ssim(ya, yb), abs=1e-4)


def test_rgb_ssim_is_mean_of_channels():
    ref, img = _rng_image(20), _rng_image(21)
    per = [_matlab_ssim(img[..., c].astype(float), ref[..., c].astype(float)) for c in range(3)]
    assert calculate_ssim(img, ref, test_y=False) == pytest.approx(np.mean(per), abs=1e-4)


def test_y_rounding_matches_matlab_on_exact_ties():
    # These colours give Y exactly k + 0.5 with k even: MATLAB's uint8 conversion rounds up,
    # NumPy's round-half-to-even would round down.
    ties = np.array([[[2, 44, 141], [5, 65, 25], [0, 204, 68]]], dtype=np.uint8)
    for (r, g, b), y in zip(ties[0].tolist(), rgb_to_y(ties)[0]):
        exact = 16 + (Fraction(65481) * r + Fraction(128553) * g + Fraction(24966) * b) / 255000
        assert exact.denominator == 2                       # a true tie
        assert y == math.floor(exact + Fraction(1, 2))      # half away from zero
    assert rgb_to_y(ties)[0, 0] != np.round(rgb_to_y(ties, round_to_uint8=False)[0, 0])


def test_y_matches_exact_rational_rounding_on_random_colours():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (1, 500, 3), dtype=np.uint8)
    got = rgb_to_y(img)[0]
    for (r, g, b), y in zip(img[0].tolist(), got):
        exact = 16 + (Fraction(65481) * r + Fraction(128553) * g + Fraction(24966) * b) / 255000
        assert y == math.floor(exact + Fraction(1, 2))


def test_crop_border_scores_the_cropped_interior():
    ref, img = _rng_image(4), _rng_image(5)
    c = 4
    assert calculate_psnr(img, ref, crop_border=c) == pytest.approx(
        calculate_psnr(img[c:-c, c:-c], ref[c:-c, c:-c]), abs=1e-12)
    assert calculate_ssim(img, ref, crop_border=c) == pytest.approx(
        calculate_ssim(img[c:-c, c:-c], ref[c:-c, c:-c]), abs=1e-12)
    assert calculate_psnr(img, ref, crop_border=c) != calculate_psnr(img, ref)


def test_inputs_not_modified_and_bad_inputs_rejected():
    ref, img = _rng_image(6), _rng_image(7)
    ref0, img0 = ref.copy(), img.copy()
    calculate_psnr(img, ref)
    calculate_ssim(img, ref)
    assert np.array_equal(ref, ref0) and np.array_equal(img, img0)
    with pytest.raises(ValueError, match='8-bit'):
        calculate_psnr(img.astype(np.float32), ref.astype(np.float32))
    with pytest.raises(ValueError, match='sizes differ'):
        calculate_psnr(img[:-1], ref)
    with pytest.raises(ValueError, match='at least 11x11'):
        calculate_ssim(img[:5, :7], ref[:5, :7])


def test_lpips_without_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'lpips', None)          # makes `import lpips` fail
    with pytest.raises(LPIPSUnavailable, match='pip install lpips'):
        LPIPSMetric()


def test_lpips_without_backbone_weights_says_where_they_go(monkeypatch):
    def offline(**kwargs):
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setitem(sys.modules, 'lpips', types.SimpleNamespace(LPIPS=offline))
    with pytest.raises(LPIPSUnavailable, match=r'could not be loaded.*checkpoints.*alexnet'):
        LPIPSMetric()
