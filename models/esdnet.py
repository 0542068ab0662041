"""ESDNet (IJCAI 2024): the spiking U-Net baseline SpikeRain and VLIF-Net build on.

Module names follow the official implementation so its checkpoints load as they are.
Each block's ``fast_forward(x, run)`` (:mod:`models.acceleration`) sits beside its ``forward``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from .base import SpikingRestorer
from .spiking import (DownSample, PatchEmbed, UpSample, attention_fast, conv2d, lif_conv_bn,
                      make_lif, repeat_time, spiking_attention, tdbn)

if TYPE_CHECKING:
    from .acceleration import FastRunner

RESIDUAL_OUT_VTH = 0.03   # the official code inits the last tdBN of each block with v_th 0.03


class SpikingResidualBlock(nn.Module):
    """LIF-conv-tdBN twice, plus a conv-tdBN shortcut on real values, then attention + input."""

    def __init__(self, channels: int, T: int = 4):
        super().__init__()
        self.residual = nn.Sequential(
            make_lif(), conv2d(channels, channels, 3), tdbn(channels),
            make_lif(), conv2d(channels, channels, 3), tdbn(channels, RESIDUAL_OUT_VTH))
        self.shortcut = nn.Sequential(conv2d(channels, channels, 3), tdbn(channels))
        self.attn = spiking_attention(T, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.residual(x) + self.shortcut(x)) + x

    def fast_forward(self, x: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """In training, the block keeps its input, the spikes (as integers) and its three conv
        outputs; BN, the second LIF and the attention are recomputed in the backward pass."""
        r, sc = self.residual, self.shortcut
        a = run.conv(run.neuron(r[0], x), r[1], bf16_out=True)
        if not run.grad:        # the two convs that meet before the attention write one output
            z = run.conv_sum([(run.neuron(r[3], run.norm(a, r[2])), r[4], r[5]),
                              (x, sc[0], sc[1])], bf16_out=True)
            # the next block's shortcut conv reads the output: on the bf16 path, in bf16
            return attention_fast(run, self.attn, z, residual=x, conv_copy=True)
        a = run.conv(run.recompute(lambda y: run.neuron(r[3], run.norm(y, r[2])), a), r[4])
        return run.recompute(
            lambda y, s, res: attention_fast(run, self.attn,
                                             run.norm(y, r[5]) + run.norm(s, sc[1]), residual=res),
            a, run.conv(x, sc[0]), x)


class FeatureRefinement(nn.Module):
    """ESDNet's head: each pixel mixes its features with a per-channel constant."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = channels // reduction
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1),
                                nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid())
        self.sa = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                nn.Conv2d(hidden, channels, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.ca(x)                      # [B,C,1,1], not multiplied by x
        t = self.sa(x)
        return (1 - t) * a + t * x

    def fast_forward(self, x: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """The spatial branch's convs through the runner, so that on the bf16 path they run in
        bfloat16 like the rest (3x faster here than float32 at 256x256), handing bfloat16 on
        between them; the same ops as ``forward`` in float32."""
        sa = self.sa
        t = run.conv(run.conv(x, sa[0], bf16_out=True), sa[1], bf16_out=True)
        t = torch.sigmoid(run.conv(torch.relu(t), sa[3]))
        return (1 - t) * self.ca(x) + t * x


class ESDNet(SpikingRestorer):
    """ESDNet: three-level spiking U-Net of residual blocks; T-mean then refinement head.

    T is fixed to 4 by the attention module's temporal MLP (reduction 4).
    """

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 en_num_blocks: Sequence[int] = (4, 4, 8, 8),
                 de_num_blocks: Sequence[int] = (2, 2, 2, 2), bias: bool = False, T: int = 4):
        super().__init__()
        if dim < 16:
            raise ValueError(f'ESDNet needs dim >= 16 (attention reduces channels by 16), '
                             f'got {dim}')
        self.in_channels, self.T = inp_channels, T

        def blocks(n, c):
            return nn.Sequential(*[SpikingResidualBlock(c, T) for _ in range(n)])

        self.patch_embed = PatchEmbed(inp_channels, dim)
        self.encoder_level1 = blocks(en_num_blocks[0], dim)
        self.down1_2 = DownSample(dim, norm=tdbn)
        self.encoder_level2 = blocks(en_num_blocks[1], 2 * dim)
        self.down2_3 = DownSample(2 * dim, norm=tdbn)
        self.encoder_level3 = blocks(en_num_blocks[2], 4 * dim)
        self.decoder_level3 = blocks(de_num_blocks[2], 4 * dim)
        self.up3_2 = UpSample(4 * dim, norm=tdbn)
        self.reduce_chan_level2 = lif_conv_bn(4 * dim, 2 * dim, 1, bias=bias, norm=tdbn)
        self.decoder_level2 = blocks(de_num_blocks[1], 2 * dim)
        self.up2_1 = UpSample(2 * dim, norm=tdbn)
        self.decoder_level1 = blocks(de_num_blocks[0], 2 * dim)
        self.refinement = FeatureRefinement(2 * dim)
        self.output = nn.Sequential(nn.Conv2d(2 * dim, out_channels, 3, padding=1, bias=True))

    def forward_padded(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(repeat_time(img, self.T))
        e1 = self.encoder_level1(x)
        e2 = self.encoder_level2(self.down1_2(e1))
        d3 = self.decoder_level3(self.encoder_level3(self.down2_3(e2)))
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], dim=2)))
        d1 = self.decoder_level1(torch.cat([self.up2_1(d2), e1], dim=2))
        return self.output(self.refinement(d1.mean(dim=0))) + img

    # ---- fast path (models.acceleration) ------------------------------------------------
    def fast_forward(self, img: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """``forward_padded`` on time-flattened tensors with fused neurons."""
        x = self.patch_embed.fast_forward(img, run, bf16_out=run.bf16_stream)
        e1 = run.blocks(self.encoder_level1, x)
        e2 = run.blocks(self.encoder_level2, self.down1_2.fast_forward(e1, run))
        d3 = self.down2_3.fast_forward(e2, run)
        d3 = run.blocks(self.decoder_level3, run.blocks(self.encoder_level3, d3))
        d2 = run.neuron_conv_cat(                 # a neuron reads the parts: bf16 stays bf16
            [self.up3_2.fast_forward(d3, run, bf16_out=True), e2], *self.reduce_chan_level2,
            bf16_out=run.bf16_stream)
        d2 = run.blocks(self.decoder_level2, d2)
        # with the bf16 stream e1 is bfloat16: the up-sampled part joins it in bfloat16
        d1 = run.cat_channels([self.up2_1.fast_forward(d2, run, bf16_out=run.bf16_stream),
                               e1])
        d1 = run.blocks(self.decoder_level1, d1)
        return run.conv(self.refinement.fast_forward(run.step_mean(d1), run),
                        self.output[0]) + img

