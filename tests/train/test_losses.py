"""Training losses: SSIM as the official code computes it, PSNR loss, and loss strings."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from utils.train.losses import LossSpecError, build_loss, gaussian_window, ssim


def _ssim_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """Independent SSIM: scipy correlation with a zero-padded 11x11 Gaussian, per channel."""
    x = np.arange(11) - 5
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    win = np.outer(g, g)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    maps = []
    for c in range(a.shape[0]):
        def f(z):
            return ndimage.correlate(z, win, mode='constant', cval=0.0)
        mu_a, mu_b = f(a[c]), f(b[c])
        va, vb = f(a[c] ** 2) - mu_a ** 2, f(b[c] ** 2) - mu_b ** 2
        cov = f(a[c] * b[c]) - mu_a * mu_b
        maps.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2))
                    / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(maps))


def test_ssim_matches_independent_computation():
    torch.manual_seed(0)
    a = torch.rand(1, 3, 23, 31, dtype=torch.float64)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    ours = ssim(a.float(), b.float()).item()
    ref = _ssim_numpy(a[0].numpy(), b[0].numpy())
    assert ours == pytest.approx(ref, abs=2e-5)


def test_ssim_window_is_normalised_gaussian():
    w = gaussian_window(11, 1.5)
    assert w.shape == (11, 11)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert w[5, 5] == w.max()


def test_ssim_loss_is_zero_for_identical_images_and_has_gradients():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 16, 16)
    loss = build_loss('ssim')
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    pred = torch.rand(2, 3, 16, 16, requires_grad=True)
    value = loss(pred, target)
    value.backward()
    assert value.item() > 0.1
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_psnr_loss_is_minus_psnr():
    target = torch.zeros(2, 3, 8, 8)
    pred = torch.full_like(target, 0.1)            # mse 0.01 -> PSNR 20 dB
    assert build_loss('psnr')(pred, target).item() == pytest.approx(-20.0, abs=1e-3)


def test_l1_mse_charbonnier_values():
    target = torch.zeros(1, 3, 4, 4)
    pred = torch.full_like(target, 0.5)
    assert build_loss('l1')(pred, target).item() == pytest.approx(0.5)
    assert build_loss('mse')(pred, target).item() == pytest.approx(0.25)
    assert build_loss('charbonnier')(target, target).item() == pytest.approx(1e-3, rel=1e-3)
    assert build_loss('charbonnier')(pred, target).item() == pytest.approx(
        math.sqrt(0.25 + 1e-6), rel=1e-5)


def test_weighted_combination_is_the_weighted_sum():
    torch.manual_seed(1)
    pred, target = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    combined = build_loss(' ssim + 0.1*L1 ')
    expected = build_loss('ssim')(pred, target) + 0.1 * build_loss('l1')(pred, target)
    assert combined(pred, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert combined.terms == [(1.0, 'ssim'), (0.1, 'l1')]
    assert build_loss('2e-1*psnr').terms == [(0.2, 'psnr')]


@pytest.mark.parametrize('spec', ['', 'ssim+', 'perceptual', '0*l1', '-1*l1', 'l1*0.5'])
def test_bad_loss_strings_name_the_problem(spec):
    with pytest.raises(LossSpecError, match='ssim|loss'):
        build_loss(spec)


def test_ssim_window_is_made_once_per_device():
    # a window copied to the GPU every step would be a host sync per training step (issue 16)
    from utils.train.losses import _window_on, ssim
    _window_on.cache_clear()
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    first = ssim(a, b)
    assert torch.equal(ssim(a, b), first)
    info = _window_on.cache_info()
    assert info.misses == 1 and info.hits == 1
