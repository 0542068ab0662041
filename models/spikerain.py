"""SpikeRain (WACV 2026): a spiking U-Net of Dense Spiking Residual Blocks.

Module and attribute names follow the official implementation so that its checkpoints load
as they are. Shapes: spiking tensors ``[T,B,C,H,W]``; C is the level width (dim, 2dim, 4dim).
Each block's ``fast_forward(x, run)`` (:mod:`models.acceleration`) sits beside its ``forward``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SpikingRestorer
from .native_lif import native_gated_residual
from .spiking import (DownSample, PatchEmbed, StepBatchNorm2d, UpSample, conv2d, lif_conv_bn,
                      make_lif, repeat_time)

if TYPE_CHECKING:
    from .acceleration import FastRunner

GROWTH = 24        # DSRB dense-layer growth (hard-coded in the official code)
DENSE_LAYERS = 4


class MDSA(nn.Module):
    """Multi-Dimensional Spiking Attention: three sigmoid gates on real values, no neurons.

    Works on ``[B,C,T,H,W]``: (a) one scalar gate per sample from the global mean,
    (b) a channel gate (squeeze-excite, reduction 16), (c) a 3x3 spatial gate per time step.
    """

    def __init__(self, channels: int, reduction_c: int = 16):
        super().__init__()
        hidden = channels // reduction_c
        if hidden < 1:
            raise ValueError(f'MDSA needs channels >= {reduction_c}, got {channels}')
        self.temporal_fc = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(1, 1, 1), nn.Sigmoid())
        self.channel_fc = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(channels, hidden, 1),
                                        nn.ReLU(inplace=True), nn.Conv3d(hidden, channels, 1),
                                        nn.Sigmoid())
        self.spatial_conv = nn.Sequential(nn.Conv3d(1, 1, (1, 3, 3), padding=(0, 1, 1)),
                                          nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(1, 2, 0, 3, 4)                                  # [B,C,T,H,W]
        x = x * self.temporal_fc(x.mean(dim=1, keepdim=True))         # [B,1,1,1,1] gate
        x = x * self.channel_fc(x)                                    # [B,C,1,1,1] gate
        x = x * self.spatial_conv(x.mean(dim=1, keepdim=True))        # [B,1,T,H,W] gate
        return x.permute(2, 0, 1, 3, 4)                               # [T,B,C,H,W]

    def fast_forward(self, z: torch.Tensor, run: FastRunner,
                     residual: torch.Tensor) -> torch.Tensor:
        """``self(z) + residual``; with ``fast_attention`` its three gates come from one
        set of sums. On the bf16 path ``z`` (a conv's output) stays bfloat16, read as it is."""
        if not run.opts.fast_attention:
            z = z.float()
            return run.layout((self(run.steps(z)) + run.steps(residual)).flatten(0, 1))
        T, (N, C, H, W) = run.T, z.shape
        B = N // T
        # a bfloat16 z is summed in float32 and rounded once (a float32 sum would copy it)
        chan_sum = z.sum(dim=(2, 3)).float().view(T, B, C).sum(dim=0)   # [B,C]
        chan_mean = chan_sum / (T * H * W)
        tfc, cfc = self.temporal_fc[1], self.channel_fc
        g_t = torch.sigmoid(chan_mean.mean(dim=1, keepdim=True) * tfc.weight.view(1, 1)
                            + tfc.bias.view(1, 1))                      # [B,1]
        h = F.relu(F.linear(g_t * chan_mean, cfc[1].weight.flatten(1), cfc[1].bias))
        g_c = torch.sigmoid(F.linear(h, cfc[3].weight.flatten(1), cfc[3].bias))
        scale = g_t * g_c                                              # [B,C]
        # mean over C of z·scale, per pixel: a [pixels, C] x [C] product in channels-last
        pix = torch.matmul(run.steps(z).permute(0, 1, 3, 4, 2).flatten(2, 3),
                           (scale.view(1, B, C, 1) / C).to(z.dtype)).float()   # [T,B,HW,1]
        sconv = self.spatial_conv[0]
        g_s = torch.sigmoid(F.conv2d(pix.reshape(N, 1, H, W), sconv.weight.view(1, 1, 3, 3),
                                     sconv.bias, padding=1))           # [N,1,H,W]
        scale = scale.repeat(T, 1)                                      # [N,C]
        out = None if run.grad else native_gated_residual(residual, z, g_s, scale)
        return torch.addcmul(residual, z * g_s, scale.view(N, C, 1, 1)) if out is None else out


class DSRB(nn.Module):
    """Dense Spiking Residual Block: 4 dense LIF-conv-BN layers, LIF-1x1 fusion, MDSA, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.layers = nn.ModuleList(
            lif_conv_bn(channels + GROWTH * j, GROWTH, 3) for j in range(DENSE_LAYERS))
        self.lff = nn.Sequential(make_lif(), conv2d(channels + GROWTH * DENSE_LAYERS, channels, 1))
        self.attn = MDSA(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for dense in self.layers:
            features = torch.cat([features, dense(features)], dim=2)  # C + 24(j+1) channels
        return self.attn(self.lff(features)) + x

    def fast_forward(self, x: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """Dense block: each channel becomes spikes once. The LIF is element-wise and starts from
        rest, so LIF(concat(parts)) == concat(LIF(part)): the block keeps its parts, each made
        once, and every conv reads the concatenation of those it needs (at inference without
        building it, :meth:`FastRunner.conv_cat`)."""
        if not run.opts.fused_lif:
            return run.module(self, x)
        lff_lif, lff_conv = self.lff
        parts = [run.lif(lff_lif, x, log=False)]
        for layer in self.layers:
            y = run.norm(run.conv_cat(parts, layer[1], bf16_out=True), layer[2])
            parts.append(run.lif(layer[0], y, log=False))
        if run.record is not None:      # dense LIF j saw the first j + 1 parts
            for j, neuron in enumerate([layer[0] for layer in self.layers] + [lff_lif]):
                run.log(neuron, torch.cat(parts[:j + 1], dim=1))
        return self.attn.fast_forward(run.conv_cat(parts, lff_conv, bf16_out=True), run,
                                      residual=x)


class TemporalFusion(nn.Module):
    """Learned softmax weights over the T steps: ``[T,B,C,H,W] -> [B,C,H,W]``."""

    def __init__(self, T: int):
        super().__init__()
        self.weights = nn.Parameter(torch.full((T,), 1.0 / T))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.weights, dim=0)
        return (x * w.view(-1, 1, 1, 1, 1)).sum(dim=0)

    def fast_forward(self, x: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """The same sum as T multiply-adds over ``[B,C,H,W]`` steps, added in step order as the
        reduction does (the same bits): reducing dim 0 of a channels-last ``[T,B,C,H,W]`` view
        was a strided reduction, about 8 % of a forward."""
        w = torch.softmax(self.weights, dim=0)
        steps = run.steps(x)
        out = steps[0] * w[0]
        for t in range(1, steps.shape[0]):
            out.add_(steps[t] * w[t])
        return run.layout(out)


class ARFE(nn.Module):
    """Adaptive Residual Feature Enhancement: a gated mix of channel and spatial attention."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = channels // reduction
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1),
                                nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid())
        self.sa = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(hidden, 1, 5, padding=2), nn.Sigmoid())
        self.gate = nn.Sequential(nn.Conv2d(3 * channels, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ca = self.ca(x) * x
        sa = self.sa(x) * x
        g = self.gate(torch.cat([x, ca, sa], dim=1))
        return g * ca + (1 - g) * sa + x

    def fast_forward(self, x: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """The gate's conv reads ``[x, ca, sa]`` without the concatenation
        (:meth:`FastRunner.conv_cat`); with ``fast_arithmetic`` the mix is one multiply-add,
        ``sa + x + g·(ca - sa)``, instead of five passes."""
        ca = self.ca(x) * x
        sa = x * self.sa(x)          # x first: the product keeps its channels-last layout
        g = torch.sigmoid(run.conv_cat([x, ca, sa], self.gate[0]))
        if not run.opts.fast_arithmetic:
            return g * ca + (1 - g) * sa + x
        return torch.addcmul(sa + x, g, ca.sub_(sa))


class SpikeRain(SpikingRestorer):
    """SpikeRain: three-level spiking U-Net (widths dim, 2dim, 4dim), T steps, ARFE head.

    ``en_num_blocks``/``de_num_blocks`` have four entries as in the official code; only the
    first three are used (there are three levels), and the decoder reads them in reverse.
    """

    # Nothing mixes the time steps before the temporal fusion (MDSA's gates are global or per
    # step), so without spiking state the T steps are identical: the ANN twin uses T = 1.
    ann_single_step = True

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 32,
                 en_num_blocks: Sequence[int] = (2, 2, 4, 4),
                 de_num_blocks: Sequence[int] = (1, 1, 1, 1), bias: bool = False, T: int = 4):
        super().__init__()
        if dim < 16:
            raise ValueError(f'SpikeRain needs dim >= 16 (MDSA reduces channels by 16), got {dim}')
        self.in_channels, self.T = inp_channels, T
        self.patch_embed = PatchEmbed(inp_channels, dim)
        self.encoder_level1 = nn.Sequential(*[DSRB(dim) for _ in range(en_num_blocks[0])])
        self.downsample_1_to_2 = DownSample(dim)
        self.encoder_level2 = nn.Sequential(*[DSRB(2 * dim) for _ in range(en_num_blocks[1])])
        self.downsample_2_to_3 = DownSample(2 * dim)
        self.encoder_level3 = nn.Sequential(*[DSRB(4 * dim) for _ in range(en_num_blocks[2])])
        self.decoder_level3 = nn.Sequential(*[DSRB(4 * dim) for _ in range(de_num_blocks[2])])
        self.upsample_3_to_2 = UpSample(4 * dim)
        self.reduce_channels_2 = lif_conv_bn(4 * dim, 2 * dim, 1, bias=bias, norm=StepBatchNorm2d)
        self.decoder_level2 = nn.Sequential(*[DSRB(2 * dim) for _ in range(de_num_blocks[1])])
        self.upsample_2_to_1 = UpSample(2 * dim)
        self.decoder_level1 = nn.Sequential(*[DSRB(2 * dim) for _ in range(de_num_blocks[0])])
        self.temporal_fusion = TemporalFusion(T)
        self.refinement = ARFE(2 * dim)
        self.output_conv = nn.Conv2d(2 * dim, out_channels, 3, padding=1, bias=True)

    def forward_padded(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(repeat_time(img, self.T))                  # [T,B,C,H,W]
        e1 = self.encoder_level1(x)
        e2 = self.encoder_level2(self.downsample_1_to_2(e1))            # 2C, H/2
        d3 = self.decoder_level3(self.encoder_level3(self.downsample_2_to_3(e2)))  # 4C, H/4
        d2 = torch.cat([self.upsample_3_to_2(d3), e2], dim=2)           # 4C, H/2
        d2 = self.decoder_level2(self.reduce_channels_2(d2))            # 2C
        d1 = torch.cat([self.upsample_2_to_1(d2), e1], dim=2)           # 2C, H
        d1 = self.decoder_level1(d1)
        fused = self.refinement(self.temporal_fusion(d1))               # [B,2C,H,W]
        return self.output_conv(fused) + img

    # ---- fast path (models.acceleration) ------------------------------------------------
    def fast_forward(self, img: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """``forward_padded`` on time-flattened tensors with fused neurons (see
        :mod:`models.acceleration`); in a dense block every channel becomes spikes once."""
        x = self.patch_embed.fast_forward(img, run)
        e1 = run.blocks(self.encoder_level1, x)
        e2 = run.blocks(self.encoder_level2, self.downsample_1_to_2.fast_forward(e1, run))
        d3 = self.downsample_2_to_3.fast_forward(e2, run)
        d3 = run.blocks(self.decoder_level3, run.blocks(self.encoder_level3, d3))
        d2 = run.neuron_conv_cat(                 # a neuron reads the parts: bf16 stays bf16
            [self.upsample_3_to_2.fast_forward(d3, run, bf16_out=True), e2],
            *self.reduce_channels_2)
        d2 = run.blocks(self.decoder_level2, d2)
        d1 = run.cat_channels([self.upsample_2_to_1.fast_forward(d2, run), e1])
        d1 = run.blocks(self.decoder_level1, d1)
        fused = self.refinement.fast_forward(self.temporal_fusion.fast_forward(d1, run), run)
        return self.output_conv(fused) + img

