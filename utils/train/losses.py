"""Training losses, and combinations of them from a short string such as ``ssim+0.1*l1``.

The papers train with 1 - SSIM where SSIM is the differentiable Gaussian-window version of the
official code: an 11x11 window (sigma 1.5) applied to each RGB channel with zero padding, so the
SSIM map has the image's size, averaged over everything. PSNR loss is ESDNet's: the mean over the
batch of -PSNR (in dB) per image, which is minimised by maximising PSNR. Losses are computed in
float32 even under mixed precision, because SSIM's variance terms lose too much in fp16.
"""
from __future__ import annotations

import functools

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.core.errors import UsageError


class LossSpecError(UsageError):
    """A loss string that cannot be parsed; the message lists the known loss names."""


@functools.lru_cache(maxsize=32)
def _window_on(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    """The depthwise window on ``device``, made once: copying it to a GPU every step is a host
    sync (a pageable copy) per training step."""
    window = gaussian_window(size, sigma).to(device)
    return window.expand(channels, 1, size, size).contiguous()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 2-D Gaussian window ``[size, size]`` (outer product of a 1-D one)."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(pred: torch.Tensor, target: torch.Tensor, window_size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two ``[B,C,H,W]`` batches in [0, 1] (differentiable, per channel)."""
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f'ssim expects two [B,C,H,W] tensors of one shape, got '
                         f'{list(pred.shape)} and {list(target.shape)}')
    pred, target = pred.float(), target.float()
    channels = pred.shape[1]
    window = _window_on(window_size, float(sigma), channels, pred.device)

    def blur(x):
        return F.conv2d(x, window, padding=window_size // 2, groups=channels)

    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p ** 2
    var_t = blur(target * target) - mu_t ** 2
    cov = blur(pred * target) - mu_p * mu_t
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))
    return ssim_map.mean()


class SSIMLoss(nn.Module):
    """1 - SSIM, the loss of the official SpikeRain and ESDNet training scripts."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - ssim(pred, target)


class PSNRLoss(nn.Module):
    """-PSNR in dB per image (peak 1), averaged over the batch; 1e-8 keeps log finite."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mse = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        return (10.0 / math.log(10.0)) * torch.log(mse + 1e-8).mean()


class L1Loss(nn.Module):
    """Mean absolute error."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred.float(), target.float())


class MSELoss(nn.Module):
    """Mean squared error."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred.float(), target.float())


class CharbonnierLoss(nn.Module):
    """sqrt(d^2 + eps^2), a smooth L1 that has a gradient at zero."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = pred.float() - target.float()
        return torch.sqrt(diff * diff + self.eps ** 2).mean()


LOSSES = {'ssim': SSIMLoss, 'psnr': PSNRLoss, 'l1': L1Loss, 'mse': MSELoss,
          'charbonnier': CharbonnierLoss}


class CombinedLoss(nn.Module):
    """A weighted sum of named losses; ``terms`` keeps (weight, name) for logs and configs."""

    def __init__(self, terms: list[tuple[float, str]]):
        super().__init__()
        self.terms = terms
        self.losses = nn.ModuleList(LOSSES[name]() for _, name in terms)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = None
        for (weight, _), loss in zip(self.terms, self.losses):
            value = weight * loss(pred, target)
            total = value if total is None else total + value
        return total

    def extra_repr(self) -> str:
        return ' + '.join(f'{w:g}*{n}' for w, n in self.terms)


_TERM = re.compile(r'^(?:(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?'
                   r'(?P<name>[a-z_][a-z0-9_]*)$')


def build_loss(spec: str) -> CombinedLoss:
    """Parse ``'ssim'``, ``'ssim+0.1*l1'``, ``'0.5*charbonnier + 0.5*ssim'`` into a loss.

    Names: ssim (1 - SSIM), psnr (-PSNR), l1, mse, charbonnier. Weights must be positive.
    """
    known = ', '.join(LOSSES)
    if not isinstance(spec, str) or not spec.strip():
        raise LossSpecError(f'empty loss; use names from: {known} (e.g. ssim+0.1*l1)')
    terms = []
    for raw in spec.lower().split('+'):
        match = _TERM.match(raw.strip())
        if match is None or match['name'] not in LOSSES:
            raise LossSpecError(f'loss {spec!r}: cannot read term {raw.strip()!r}; '
                                f'use [weight*]name with names from: {known}')
        weight = float(match['weight']) if match['weight'] else 1.0
        if weight <= 0:
            raise LossSpecError(f'loss {spec!r}: weight of {match["name"]!r} must be > 0')
        terms.append((weight, match['name']))
    return CombinedLoss(terms)
