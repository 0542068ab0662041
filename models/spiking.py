"""Spiking building blocks shared by every model in this package.

All spiking tensors are time-first, ``[T, B, C, H, W]``. Layers that are the same at every
step (convs, BN) are spikingjelly multi-step layers: they run on the flattened ``[T*B, ...]``
tensor. The LIF settings are the ones both papers use; they live here once so that every model
(and every test) agrees on them.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

# spikingjelly registers custom ops at import; on machines without Triton (every CPU machine)
# torch logs a harmless warning for each. Keep the scripts' output clean.
logging.getLogger('torch._library.triton').setLevel(logging.ERROR)
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

# The papers' LIF neuron (SpikeRain, ESDNet and VLIF-Net share it).
LIF_SETTINGS = dict(tau=2.0, v_threshold=0.15, v_reset=0.0, decay_input=False,
                    detach_reset=False, surrogate_alpha=4.0)

# tdBN initialises its weight to alpha * v_th (Zheng et al. 2021); only the init depends on it.
TDBN_ALPHA = 2 ** -0.5


def make_lif(**overrides) -> neuron.LIFNode:
    """A multi-step spikingjelly LIF neuron with the papers' settings (override any of them)."""
    cfg = {**LIF_SETTINGS, **overrides}
    return neuron.LIFNode(
        tau=float(cfg['tau']), v_threshold=float(cfg['v_threshold']),
        v_reset=None if cfg['v_reset'] is None else float(cfg['v_reset']),
        decay_input=bool(cfg['decay_input']), detach_reset=bool(cfg['detach_reset']),
        surrogate_function=surrogate.Sigmoid(alpha=float(cfg['surrogate_alpha'])),
        step_mode='m')


def reset_spiking_state(model: nn.Module) -> None:
    """Put every neuron's membrane potential back to its initial value.

    The one place that resets state: models call it around every forward, so spiking state never
    leaks from one image (or tile) into the next.
    """
    functional.reset_net(model)


def repeat_time(img: torch.Tensor, T: int) -> torch.Tensor:
    """Direct encoding: the real-valued image repeated T times, ``[B,C,H,W] -> [T,B,C,H,W]``."""
    return img.unsqueeze(0).repeat(T, 1, 1, 1, 1)


def conv2d(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, bias: bool = False
           ) -> layer.Conv2d:
    """Multi-step 2-D conv with 'same' padding for odd kernels (applied per time step)."""
    return layer.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2,
                        bias=bias, step_mode='m')


class StepBatchNorm2d(nn.Module):
    """Plain BatchNorm over ``T*B`` (statistics over T, B, H, W per channel).

    The BN is kept under ``.bn`` because SpikeRain's official checkpoints store it there
    (``...2.bn.weight``), so official weights load without renaming.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bn = layer.BatchNorm2d(channels, step_mode='m')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


def tdbn(channels: int, v_th: float = LIF_SETTINGS['v_threshold']) -> nn.Module:
    """spikingjelly's threshold-dependent BN (ESDNet, VLIF-Net): ordinary BN, tdBN init."""
    return layer.ThresholdDependentBatchNorm2d(alpha=TDBN_ALPHA, v_th=v_th,
                                               num_features=channels)


def lif_conv_bn(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                bias: bool = False, norm=StepBatchNorm2d) -> nn.Sequential:
    """The papers' basic unit: spikes from LIF, then conv, then BN (keys ``1.*`` and ``2.*``)."""
    return nn.Sequential(make_lif(), conv2d(in_ch, out_ch, kernel_size, stride, bias),
                         norm(out_ch))


def upsample_bilinear_steps(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Bilinear up-sampling of every time step (``align_corners=False``)."""
    T, B = x.shape[:2]
    y = F.interpolate(x.flatten(0, 1), scale_factor=scale, mode='bilinear', align_corners=False)
    return y.view(T, B, *y.shape[1:])


class DownSample(nn.Module):
    """LIF -> conv3x3 stride 2 -> BN: halves H and W, doubles channels (by default)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, norm=StepBatchNorm2d):
        super().__init__()
        self.maxpool_conv = lif_conv_bn(in_ch, out_ch or 2 * in_ch, 3, stride=2, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class UpSample(nn.Module):
    """Bilinear x2 -> LIF -> conv3x3 -> BN: doubles H and W, halves channels (by default)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, norm=StepBatchNorm2d):
        super().__init__()
        self.up = lif_conv_bn(in_ch, out_ch or in_ch // 2, 3, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(upsample_bilinear_steps(x))


class PatchEmbed(nn.Module):
    """conv3x3 from the image channels to the first level's width (key ``proj``)."""

    def __init__(self, in_ch: int, dim: int, bias: bool = False):
        super().__init__()
        self.proj = conv2d(in_ch, dim, 3, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def spiking_attention(T: int, channels: int) -> layer.MultiDimensionalAttention:
    """spikingjelly's multi-dimensional attention with the ESDNet/VLIF settings (no biases)."""
    return layer.MultiDimensionalAttention(T=T, C=channels, reduction_t=4, reduction_c=16,
                                           kernel_size=3)
