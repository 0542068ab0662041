"""VLIF-Net (AAAI 2026): an ESDNet-style spiking U-Net built on the Visual LIF neuron.

Module names follow the official implementation (ChrisChen1023/VLIF ``model.py``) so the
authors' checkpoints load strictly; only the shared down/up-sampling blocks are named
differently, and :meth:`VLIFNet.convert_official_state_dict` maps those keys.
The official code hard-codes T = 4 and r = 2; here T is a model argument and r a block argument.
Each block's ``fast_forward(x, run)`` (:mod:`models.acceleration`) sits beside its ``forward``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SpikingRestorer
from .native_lif import (native_decompose_backward, native_decompose_enhance,
                         native_spatial_stats, native_upsample2x_decompose)
from .spiking import (LIF_SETTINGS, NILIF, DownSample, PatchEmbed, UpSample, VLIFNeuron,
                      attention_fast, conv2d, make_lif, make_neuron, repeat_time,
                      spiking_attention, tdbn, unshuffle_to_time, upsample_bilinear_steps)

if TYPE_CHECKING:
    from .acceleration import FastRunner

V_TH = LIF_SETTINGS['v_threshold']
GROUP2_VTH = 0.2 * V_TH     # the official code inits the second tdBN of each SDEM with 0.2 v_th


def _decompose_enhance(x: torch.Tensor, high: torch.Tensor, a: torch.Tensor,
                       b: torch.Tensor) -> torch.Tensor:
    """a * x_h + b * x_l + x * x_h, with x_h the neuron's output and x_l = x - x_h."""
    return a * high + b * (x - high) + x * high


def _decompose_enhance_fast(run: FastRunner, x: torch.Tensor, high: torch.Tensor,
                            a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`_decompose_enhance`; with ``fast_arithmetic`` as ``b·x + high·(x + a - b)``
    (three passes instead of six), at inference one native pass (the same bits) that writes
    the dtype of the conv it feeds, reading bfloat16 ``x`` or ``high`` as they are."""
    if not run.opts.fast_arithmetic:
        return _decompose_enhance(x, high, a, b)
    if not run.grad:
        out = native_decompose_enhance(x, high, a, b, run.conv_dtype or torch.float32)
        if out is not None:
            return out
    elif torch.is_grad_enabled():
        return _DecomposeEnhance.apply(x, high, a, b)
    return _decompose_enhance_ops(x, high, a, b)


def _neuron_decompose_enhance(run: FastRunner, neuron: nn.Module, x: torch.Tensor,
                              a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`_decompose_enhance_fast` of ``x`` with ``neuron(x)`` as its high part. A VLIF
    neuron at inference with ``fast_arithmetic`` hands its map before the x2 bilinear resize,
    and one native pass up-samples it as decompose-enhance reads it (the full-resolution map
    is never stored; the resize rounded otherwise than torch's)."""
    if (isinstance(neuron, VLIFNeuron) and neuron.restore == 'bilinear_conv' and neuron.r == 2
            and not run.grad and run.opts.fast_arithmetic):
        low = neuron.fast_forward(x, run, resize=False)
        out = native_upsample2x_decompose(low, x, a, b, run.conv_dtype or torch.float32)
        if out is not None:
            return out
        high = neuron.resize(low, x.shape[-2:], run)
    else:
        high = run.neuron(neuron, x)
    return _decompose_enhance_fast(run, x, high, a, b)


def _decompose_enhance_ops(x: torch.Tensor, high: torch.Tensor, a: torch.Tensor,
                           b: torch.Tensor) -> torch.Tensor:
    """The fast path's decompose-enhance as torch ops: ``b·x + high·(x + a - b)``."""
    return torch.addcmul(x * b, high, x + (a - b))


class _DecomposeEnhance(torch.autograd.Function):
    """``torch.addcmul(x * b, high, x + (a - b))`` whose backward is one native pass where
    autograd makes about seven (:func:`models.native_lif.native_decompose_backward`): the same
    gradients for ``x`` and ``high`` bit for bit, ``a``'s and ``b``'s summed in another order.
    Falls back to autograd's own where the kernel does not run."""

    @staticmethod
    def forward(ctx, x, high, a, b):
        ctx.save_for_backward(x, high, a, b)
        out = native_decompose_enhance(x, high, a, b)
        return _decompose_enhance_ops(x, high, a, b) if out is None else out

    @staticmethod
    def backward(ctx, grad):
        x, high, a, b = ctx.saved_tensors
        got = native_decompose_backward(grad, x, high, a, b)
        if got is None:
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_() for t in (x, high, a, b)]
                return torch.autograd.grad(_decompose_enhance_ops(*leaves), leaves, grad)
        grad_x, grad_high, sum_gh, sum_gx = got
        grad_a = torch.full_like(a, sum_gh)
        return grad_x, grad_high, grad_a, torch.full_like(b, sum_gx) - grad_a


class SDEM(nn.Module):
    """Spiking Decomposition and Enhancement Module (official ``Spiking_Residual_Block``).

    Two groups split their input into a spiking high-frequency part x_h and the rest x_l and
    recombine them with learnable weights (group 1 with LIF, group 2 with the VLIF neuron), each
    followed by conv3x3 + tdBN; a conv3x3 + tdBN shortcut on real values joins before the
    attention, then the block input is added back. ``neuron`` picks group 2's unit.
    """

    conv_bn_pairs = (('conv1', 'bn1'), ('conv2', 'bn2'))     # folded by the fast path

    def __init__(self, dim: int, T: int = 4, neuron: str = 'vlif',
                 vlif_restore: str = 'bilinear_conv'):
        super().__init__()
        self.lif_1 = make_lif()
        self.conv1 = conv2d(dim, dim, 3)
        self.bn1 = tdbn(dim)
        self.high_freq_scale_1 = nn.Parameter(torch.ones(1))
        self.low_freq_scale_1 = nn.Parameter(torch.ones(1))
        options = {'restore': vlif_restore} if neuron == 'vlif' else {}
        self.lif_2 = make_neuron(neuron, dim, **options)
        self.conv2 = conv2d(dim, dim, 3)
        self.bn2 = tdbn(dim, GROUP2_VTH)
        self.high_freq_scale_2 = nn.Parameter(torch.ones(1))
        self.low_freq_scale_2 = nn.Parameter(torch.ones(1))
        self.shortcut = nn.Sequential(conv2d(dim, dim, 3), tdbn(dim))
        self.attn = spiking_attention(T, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _decompose_enhance(x, self.lif_1(x), self.high_freq_scale_1, self.low_freq_scale_1)
        out = self.bn1(self.conv1(out))
        out = _decompose_enhance(out, self.lif_2(out), self.high_freq_scale_2,
                                 self.low_freq_scale_2)
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return self.attn(out) + x

    def fast_forward(self, x: torch.Tensor, run: FastRunner, conv_copy: bool = True
                     ) -> torch.Tensor:
        """In training, the SDEM keeps its input and the outputs of its convs (and the inputs of
        the two real-valued ones); neurons, BN, decompose-enhance and attention are recomputed
        in the backward pass. With ``conv_copy`` (the next block's shortcut conv reads the
        output) the bf16 path's attention also writes the output in bfloat16 for it (with
        ``bf16_stream``: writes it in bfloat16 only)."""
        def group_1(t):
            return _decompose_enhance_fast(run, t, run.neuron(self.lif_1, t),
                                           self.high_freq_scale_1, self.low_freq_scale_1)

        def group_2(y):
            return _neuron_decompose_enhance(run, self.lif_2, run.norm(y, self.bn1),
                                             self.high_freq_scale_2, self.low_freq_scale_2)

        def join(y, s, res):
            return attention_fast(run, self.attn,
                                  run.norm(y, self.bn2) + run.norm(s, self.shortcut[1]),
                                  residual=res)
        # at inference its output may stay bfloat16: the neuron and decompose-enhance read it
        out = run.conv(run.recompute(group_1, x), self.conv1, bf16_out=not run.grad)
        if not run.grad:        # the two convs that meet before the attention write one output
            z = run.conv_sum([(group_2(out), self.conv2, self.bn2),
                              (x, self.shortcut[0], self.shortcut[1])], bf16_out=True)
            return attention_fast(run, self.attn, z, residual=x, conv_copy=conv_copy)
        out = run.conv(run.recompute(group_2, out), self.conv2)
        return run.recompute(join, out, run.conv(x, self.shortcut[0]), x)


class TimeAttention(nn.Module):
    """A CBAM-style gate per time step: ``[B,S,C,H,W] -> [B,S,1,1,1]`` (steps act as channels)."""

    def __init__(self, steps: int, ratio: int = 4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.max_pool = nn.AdaptiveMaxPool3d(1)
        self.sharedMLP = nn.Sequential(nn.Conv3d(steps, steps // ratio, 1, bias=False), nn.ReLU(),
                                       nn.Conv3d(steps // ratio, steps, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.sharedMLP(self.avg_pool(x)) + self.sharedMLP(self.max_pool(x)))


class SMU(nn.Module):
    """Spiking Multi-scale Unit (official ``SUNet_Level1_Block``).

    An SDEM (kept as skip), then a half-resolution branch: the VLIF time reorganisation with
    NI-LIF (T*r*r steps, not reversed), a gate over those steps, a Conv3d that merges each
    group of r*r steps back into one (T steps), two LIF-conv-tdBN-attention units, bilinear x2,
    plus the skip, and a final attention.
    """

    conv_bn_pairs = (('conv_1', 'bn_1'), ('conv_2', 'bn_2'))  # folded by the fast path

    def __init__(self, dim: int, T: int = 4, r: int = 2, **sdem_options):
        super().__init__()
        self.r = r
        self.initial_residual = SDEM(dim, T, **sdem_options)
        self.lif_node = NILIF()
        self.time_attention = TimeAttention(T * r * r, ratio=4)
        self.temporal_compress = nn.Sequential(
            nn.Conv3d(dim, dim, kernel_size=(r * r, 1, 1), stride=(r * r, 1, 1), bias=False),
            nn.ReLU(inplace=True))
        self.lif_1, self.conv_1, self.bn_1 = make_lif(), conv2d(dim, dim, 3), tdbn(dim)
        self.attn_1 = spiking_attention(T, dim)
        self.lif_2, self.conv_2, self.bn_2 = make_lif(), conv2d(dim, dim, 3), tdbn(dim)
        self.attn_2 = spiking_attention(T, dim)
        self.final_attn = spiking_attention(T, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.initial_residual(x)                                  # [T, B, C, H, W]
        s = self.lif_node(unshuffle_to_time(skip, self.r)).transpose(0, 1)  # [B, T*r*r, C, h, w]
        s = (s * self.time_attention(s)).permute(0, 2, 1, 3, 4)          # [B, C, T*r*r, h, w]
        # [T, B, C, h, w], contiguous: the next neuron's CUDA kernel recompiles for strided input
        out = self.temporal_compress(s).permute(2, 0, 1, 3, 4).contiguous()
        out = self.attn_1(self.bn_1(self.conv_1(self.lif_1(out))))
        out = self.attn_2(self.bn_2(self.conv_2(self.lif_2(out))))
        return self.final_attn(upsample_bilinear_steps(out, self.r) + skip)

    def fast_forward(self, x: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """NI-LIF over the r x r patch steps straight into the unshuffled layout
        ``[T*B, C*r*r, h, w]``, where the step gate is a per-(t, b, sub-step) scale and the
        Conv3d that merges each group of r*r steps is a 1x1 conv over C*r*r channels."""
        T, r = run.T, self.r
        rr = r * r
        # NI-LIF and the up-sampling's skip read it: bfloat16 with the stream, else float32
        skip = self.initial_residual.fast_forward(x, run, conv_copy=run.bf16_stream)
        if not run.opts.fast_arithmetic:
            s = self.lif_node.fast_forward(skip, run, r)               # [T*B, C*rr, h, w]
            N, Crr, h, w = s.shape
            B, C = N // T, Crr // rr
            steps = (s.view(T, B, C, rr, h, w).permute(1, 0, 3, 2, 4, 5)
                     .reshape(B, T * rr, C, h, w))
            steps = (steps * self.time_attention(steps)).permute(0, 2, 1, 3, 4)
            out = run.layout(self.temporal_compress(steps).permute(2, 0, 1, 3, 4).flatten(0, 1))
        elif not run.grad:
            out = torch.relu_(self._merged_patch_steps(skip, run))
        else:
            merge = self.temporal_compress[0].weight
            out = torch.relu_(run.conv_weight(
                run.recompute(lambda t: self._gated_patch_steps(t, run), skip),
                merge.reshape(merge.shape[0], -1, 1, 1)))
        # at inference the bf16 path's convs hand their attentions bfloat16, read as it is
        out = run.conv(run.recompute(lambda t: run.neuron(self.lif_1, t), out), self.conv_1,
                       bf16_out=not run.grad)
        out = run.conv(run.recompute(lambda y: run.neuron(self.lif_2, attention_fast(
            run, self.attn_1, run.norm(y, self.bn_1))), out), self.conv_2, bf16_out=not run.grad)
        stream = run.bf16_stream         # the attention and the next blocks take bf16
        return run.recompute(lambda y, s: attention_fast(
            run, self.final_attn,
            run.upsample(attention_fast(run, self.attn_2, run.norm(y, self.bn_2)), r, skip=s,
                         bf16_out=stream), conv_copy=stream), out, skip)

    def _step_gate(self, sums: torch.Tensor, peaks: torch.Tensor, run: FastRunner,
                   pixels: int) -> torch.Tensor:
        """The step gate ``[B, T*r*r]`` from each (step, sample, channel, sub-step)'s spike sum
        and max over its ``pixels`` pixels (``[T, B, C, r*r]`` each)."""
        T, B, C, rr = sums.shape
        mlp = self.time_attention.sharedMLP
        w1, w2 = mlp[0].weight.flatten(1), mlp[2].weight.flatten(1)

        def gate_mlp(v):                                            # v: [T, B, rr] -> [B, S]
            return F.linear(F.relu(F.linear(v.permute(1, 0, 2).reshape(B, T * rr), w1)), w2)
        return torch.sigmoid(gate_mlp(sums.sum(dim=2) / (C * pixels))
                             + gate_mlp(peaks.amax(dim=2)))

    def _gated_patch_steps(self, skip: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """NI-LIF over the r x r patch steps of ``skip``, each step scaled by the step gate, in
        the unshuffled layout ``[T*B, C*r*r, h, w]`` (the merge conv's input)."""
        T, rr = run.T, self.r * self.r
        s = self.lif_node.fast_forward(skip, run, self.r)
        N, Crr, h, w = s.shape
        B, C = N // T, Crr // rr
        s6 = s.view(T, B, C, rr, h, w)
        gate = self._step_gate(s6.sum(dim=(4, 5)), run.spatial_max(s).view(T, B, C, rr), run,
                               h * w)
        gated = s6 * gate.view(B, T, 1, rr, 1, 1).transpose(0, 1)   # still [T*B, C*rr] layout
        return run.layout(gated.reshape(N, Crr, h, w))

    def _merged_patch_steps(self, skip: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """Inference: the merge conv of the gated patch steps with the gate folded into its
        weight, one weight per sample (the gate scales whole input channels), so the gated
        spikes are never written; the spikes come in the convs' dtype, their statistics from
        one pass, and on the bf16 path the output stays bfloat16 (the next LIF reads it)."""
        T, rr = run.T, self.r * self.r
        s = self.lif_node.fast_forward(skip, run, self.r, run.conv_dtype)
        N, Crr, h, w = s.shape
        B, C = N // T, Crr // rr
        stats = native_spatial_stats(s)
        if stats is None:
            stats = s.float().sum(dim=(2, 3)), run.spatial_max(s).float()
        gate = self._step_gate(*(v.view(T, B, C, rr) for v in stats), run, h * w)
        merge = self.temporal_compress[0].weight
        merge = merge.reshape(merge.shape[0], C, rr)
        per_sample = gate.view(B, T, rr).transpose(0, 1).reshape(N, 1, 1, rr)
        weights = (merge * per_sample).reshape(N, merge.shape[0], Crr, 1, 1)
        return run.layout(torch.cat([run.conv_weight(s[n:n + 1], weights[n], bf16_out=True)
                                     for n in range(N)]))


# Official key prefixes of the down/up-sampling blocks -> ours (shared DownSample/UpSample).
_OFFICIAL_RESAMPLE_KEYS = [
    (re.compile(r'^(down1_2|down2_3)\.conv\.'), r'\1.maxpool_conv.1.'),
    (re.compile(r'^(down1_2|down2_3)\.bn\.'), r'\1.maxpool_conv.2.'),
    (re.compile(r'^(up3_2|up2_1)\.conv\.'), r'\1.up.1.'),
    (re.compile(r'^(up3_2|up2_1)\.bn\.'), r'\1.up.2.'),
]


class VLIFNet(SpikingRestorer):
    """VLIF-Net: a three-level spiking U-Net of SDEMs with SMUs at full resolution.

    Level 1 is one SMU in the encoder and two in the decoder; levels 2 and 3 stack
    ``en_num_blocks[1:3]`` / ``de_num_blocks[1:3]`` SDEMs (entries 0 and 3 are unused, as in
    the official code). ``use_refinement`` adds the four full-resolution SDEMs of the Rain200L
    model. The T-mean of the decoder goes through conv3x3 and is added to the input image.

    Options beyond the official code: ``vlif_restore='pixel_shuffle'`` is the paper's
    parameter-free VLIF; ``sdem_neuron`` replaces the SDEM's VLIF (e.g. 'lif' for an ablation).
    """

    size_multiple = 8    # three halvings: two U-Net levels, then the VLIF's r = 2 at level 3
    conv_bn_pairs = (('reduce_conv_level2', 'reduce_bn_level2'),      # folded by the fast path
                     ('reduce_conv_level1', 'reduce_bn_level1'))

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 en_num_blocks: Sequence[int] = (4, 4, 8, 8),
                 de_num_blocks: Sequence[int] = (2, 2, 2, 2), bias: bool = False, T: int = 4,
                 use_refinement: bool = False, vlif_restore: str = 'bilinear_conv',
                 sdem_neuron: str = 'vlif'):
        super().__init__()
        if dim < 16:
            raise ValueError(f'VLIFNet needs dim >= 16 (attention reduces channels by 16), '
                             f'got {dim}')
        if T < 4:
            raise ValueError(f'VLIFNet needs T >= 4 (attention reduces steps by 4), got {T}')
        self.in_channels, self.T, self.use_refinement = inp_channels, T, use_refinement
        opts = dict(T=T, neuron=sdem_neuron, vlif_restore=vlif_restore)

        def sdems(n, c):
            return nn.Sequential(*[SDEM(c, **opts) for _ in range(n)])

        self.patch_embed = PatchEmbed(inp_channels, dim)
        self.encoder_level1 = SMU(dim, **opts)
        self.down1_2 = DownSample(dim, norm=tdbn)
        self.encoder_level2 = sdems(en_num_blocks[1], 2 * dim)
        self.down2_3 = DownSample(2 * dim, norm=tdbn)
        self.encoder_level3 = sdems(en_num_blocks[2], 4 * dim)
        self.decoder_level3 = sdems(de_num_blocks[2], 4 * dim)
        self.up3_2 = UpSample(4 * dim, norm=tdbn)
        self.lif_level2 = make_lif()
        self.reduce_conv_level2 = conv2d(4 * dim, 2 * dim, 1, bias=bias)
        self.reduce_bn_level2 = tdbn(2 * dim)
        self.decoder_level2 = sdems(de_num_blocks[1], 2 * dim)
        self.up2_1 = UpSample(2 * dim, norm=tdbn)
        self.lif_level1 = make_lif()
        self.reduce_conv_level1 = conv2d(2 * dim, dim, 1, bias=bias)
        self.reduce_bn_level1 = tdbn(dim)
        self.decoder_level1 = SMU(dim, **opts)
        self.additional_sunet_level1 = SMU(dim, **opts)
        if use_refinement:
            self.refinement_blocks = sdems(4, dim)
        self.output = nn.Sequential(nn.Conv2d(dim, out_channels, 3, padding=1, bias=True))

    def forward_padded(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(repeat_time(img, self.T))
        e1 = self.encoder_level1(x)
        e2 = self.encoder_level2(self.down1_2(e1))
        d3 = self.decoder_level3(self.encoder_level3(self.down2_3(e2)))
        d2 = self.lif_level2(torch.cat([self.up3_2(d3), e2], dim=2))
        d2 = self.decoder_level2(self.reduce_bn_level2(self.reduce_conv_level2(d2)))
        d1 = self.lif_level1(torch.cat([self.up2_1(d2), e1], dim=2))
        d1 = self.decoder_level1(self.reduce_bn_level1(self.reduce_conv_level1(d1)))
        d1 = self.additional_sunet_level1(d1)
        if self.use_refinement:
            d1 = self.refinement_blocks(d1)
        return self.output(d1.mean(dim=0)) + img

    # ---- fast path (models.acceleration) ------------------------------------------------
    def fast_forward(self, img: torch.Tensor, run: FastRunner) -> torch.Tensor:
        """``forward_padded`` on time-flattened tensors: fused LIF/NI-LIF, VLIF's patch steps
        read as strided views (no reorganised copies), BNs folded at inference."""
        x = self.patch_embed.fast_forward(img, run, bf16_out=run.bf16_stream)
        e1 = run.segment(lambda t: self.encoder_level1.fast_forward(t, run), x)
        e2 = run.blocks(self.encoder_level2, self.down1_2.fast_forward(e1, run))
        d3 = self.down2_3.fast_forward(e2, run)
        d3 = run.blocks(self.decoder_level3, run.blocks(self.encoder_level3, d3))
        # the up-sampled parts meet a neuron first: on the bf16 path they stay bfloat16
        d2 = run.neuron_conv_cat([self.up3_2.fast_forward(d3, run, bf16_out=True), e2],
                                 self.lif_level2, self.reduce_conv_level2, self.reduce_bn_level2,
                                 bf16_out=run.bf16_stream)
        d2 = run.blocks(self.decoder_level2, d2)
        d1 = run.neuron_conv_cat([self.up2_1.fast_forward(d2, run, bf16_out=True), e1],
                                 self.lif_level1, self.reduce_conv_level1, self.reduce_bn_level1,
                                 bf16_out=run.bf16_stream)
        d1 = run.segment(lambda t: self.decoder_level1.fast_forward(t, run), d1)
        d1 = run.segment(lambda t: self.additional_sunet_level1.fast_forward(t, run), d1)
        if self.use_refinement:
            d1 = run.blocks(self.refinement_blocks, d1)
        return run.conv(run.step_mean(d1), self.output[0]) + img

    @staticmethod
    def convert_official_state_dict(sd: Mapping[str, torch.Tensor]
                                    ) -> OrderedDict[str, torch.Tensor]:
        """Rename the official down/up-sampling keys to ours; other keys pass unchanged."""
        out = OrderedDict()
        for key, value in sd.items():
            for pattern, repl in _OFFICIAL_RESAMPLE_KEYS:
                key = pattern.sub(repl, key)
            out[key] = value
        return out

