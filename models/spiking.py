"""Spiking building blocks shared by every model in this package.

All spiking tensors are time-first, ``[T, B, C, H, W]``. Layers that are the same at every
step (convs, BN) are spikingjelly multi-step layers: they run on the flattened ``[T*B, ...]``
tensor. The LIF settings are the ones both papers use; they live here once so that every model
(and every test) agrees on them.

Each block's fast-path twin sits beside it (``fast_forward(x, run)``, or a ``*_fast(run, ...)``
function for a block built by a function): the same computation on time-flattened
``[T*B,C,H,W]`` tensors, built from the primitives of ``run`` (a
:class:`models.acceleration.FastRunner`).
"""
from __future__ import annotations

import logging

from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

# spikingjelly registers custom ops at import; on machines without Triton (every CPU machine)
# torch logs a harmless warning for each. Keep the scripts' output clean.
logging.getLogger('torch._library.triton').setLevel(logging.ERROR)
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

from .native_lif import (native_attention_gate_grad, native_attention_map_grad,  # noqa: E402
                         native_channel_gate, native_relu_gated_residual, native_spatial_stats)

if TYPE_CHECKING:
    from .acceleration import FastRunner

# The papers' LIF neuron (SpikeRain, ESDNet and VLIF-Net share it).
LIF_SETTINGS = dict(tau=2.0, v_threshold=0.15, v_reset=0.0, decay_input=False,
                    detach_reset=False, surrogate_alpha=4.0)

# tdBN initialises its weight to alpha * v_th (Zheng et al. 2021); only the init depends on it.
TDBN_ALPHA = 2 ** -0.5


def _is_dense(x: torch.Tensor) -> bool:
    """True when ``x`` covers its memory without gaps or overlaps, in any dimension order
    (contiguous, channels-last, ...): layouts spikingjelly's CUDA/Triton kernels read directly."""
    expected = 1
    for size, stride in sorted(zip(x.shape, x.stride()), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


class LIFNode(neuron.LIFNode):
    """spikingjelly's LIF with its membrane always in float32, also under ``torch.autocast``.

    spikingjelly keeps the membrane in its input's dtype and runs its fused (CUDA/Triton) kernel
    only for a float32 state; under fp16/bf16 autocast the input of a neuron is a half-precision
    conv/BN output, so every neuron would fall back to the per-step reference loop and integrate
    its membrane at half precision next to the 0.15 threshold. Here the input is cast to float32
    and the neuron runs with autocast off: the same spikes as a float32 run on the same (rounded)
    input, on the fused kernel. Strided views (e.g. out of the attention block) are made dense
    first, so the Triton kernel is not specialised for (and recompiled on) every new layout.

    The spikes are returned in the input's dtype: 0/1 are exact in fp16/bf16, the module stays
    dtype-transparent (what goes in comes out, as with spikingjelly's own node), and the autocast
    conv that follows would cast a float32 spike map down anyway. Float32 inputs take exactly the
    old path (no copy), so the golden tests are untouched. Same class name as spikingjelly's, so
    code that looks neurons up by name (fast paths, counting hooks) sees it as the LIF it is.
    """

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        dtype = x.dtype
        if not _is_dense(x):
            x = x.contiguous()
        if dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        autocast_on = x.device.type in ('cpu', 'cuda') and torch.is_autocast_enabled(
            x.device.type)                           # (no autocast at all on e.g. 'meta')
        with torch.autocast(x.device.type, enabled=False) if autocast_on else nullcontext():
            spikes = super().forward(x, *args, **kwargs)
        return spikes if spikes.dtype == dtype else spikes.to(dtype)


def make_lif(**overrides) -> LIFNode:
    """A multi-step spikingjelly LIF neuron with the papers' settings (override any of them),
    whose membrane stays float32 under autocast (:class:`LIFNode`)."""
    cfg = {**LIF_SETTINGS, **overrides}
    return LIFNode(
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


def lif_conv_bn_fast(run: FastRunner, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The fast path of a :func:`lif_conv_bn` unit."""
    return run.norm(run.conv(run.neuron(seq[0], x), seq[1]), seq[2])


def upsample_bilinear_steps(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Bilinear up-sampling of every time step (``align_corners=False``)."""
    T, B = x.shape[:2]
    y = F.interpolate(x.flatten(0, 1), scale_factor=scale, mode='bilinear', align_corners=False)
    return y.unflatten(0, (T, B))       # (not view(T, B, *y.shape[1:]): ONNX tracing fixes it)


class DownSample(nn.Module):
    """LIF -> conv3x3 stride 2 -> BN: halves H and W, doubles channels (by default)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, norm=StepBatchNorm2d):
        super().__init__()
        self.maxpool_conv = lif_conv_bn(in_ch, out_ch or 2 * in_ch, 3, stride=2, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)

    def fast_forward(self, x: torch.Tensor, run: FastRunner) -> torch.Tensor:
        return run.segment(lambda t: lif_conv_bn_fast(run, self.maxpool_conv, t), x)


class UpSample(nn.Module):
    """Bilinear x2 -> LIF -> conv3x3 -> BN: doubles H and W, halves channels (by default)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, norm=StepBatchNorm2d):
        super().__init__()
        self.up = lif_conv_bn(in_ch, out_ch or in_ch // 2, 3, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(upsample_bilinear_steps(x))

    def fast_forward(self, x: torch.Tensor, run: FastRunner, bf16_out: bool = False
                     ) -> torch.Tensor:
        """Training keeps the input, not its up-sampled copy. With ``bf16_out`` (its reader
        takes bfloat16, e.g. a neuron) the bf16 path hands the conv's output on as it is."""
        lif, conv, norm = self.up

        def fn(t):
            return run.norm(run.conv(run.recompute(lambda v: run.upsample_neuron(lif, v), t),
                                     conv, bf16_out=bf16_out and not run.grad), norm)
        return run.segment(fn, x)


class PatchEmbed(nn.Module):
    """conv3x3 from the image channels to the first level's width (key ``proj``)."""

    def __init__(self, in_ch: int, dim: int, bias: bool = False):
        super().__init__()
        self.proj = conv2d(in_ch, dim, 3, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def fast_forward(self, img: torch.Tensor, run: FastRunner, bf16_out: bool = False
                     ) -> torch.Tensor:
        """The image conv of every step from the image ``[B,C,H,W]`` itself (it is the same
        image at each of the T steps): with ``patch_embed_once`` the conv runs once.
        ``bf16_out`` as in :meth:`FastRunner.conv`."""
        img = run.layout(img)
        if run.opts.patch_embed_once:
            y = run.conv(img, self.proj, bf16_out=bf16_out and not run.grad)

            def repeat(ys):
                return ys[0].unsqueeze(0).expand(run.T, *ys[0].shape).flatten(0, 1)
            return run.derive_conv_copy(run.layout(repeat([y])), [y], repeat)
        return run.conv(run.layout(img.repeat(run.T, 1, 1, 1)), self.proj)


def spiking_attention(T: int, channels: int) -> layer.MultiDimensionalAttention:
    """spikingjelly's multi-dimensional attention with the ESDNet/VLIF settings (no biases)."""
    return layer.MultiDimensionalAttention(T=T, C=channels, reduction_t=4, reduction_c=16,
                                           kernel_size=3)


def _gated_pixel_stats(z: torch.Tensor, gate: torch.Tensor, channel_max, native: bool):
    """The gated map ``z·gate`` (``gate [N,C]``) and each pixel's channel sum and max of it
    (``[N,H,W]`` each; the max by ``channel_max``). With ``native``, one pass gives the two
    statistics alone and the map is ``None``: the attention's last pass makes it again."""
    got = native_channel_gate(z, gate, keep_gated=False) if native else None
    if got is not None:
        return None, got[1], got[2]
    gated = z * gate.view(*gate.shape, 1, 1)
    return gated, gated.sum(dim=1), channel_max(gated)


def _spatial_gate(pixel_sum: torch.Tensor, pixel_max: torch.Tensor, weight: torch.Tensor,
                  padding, T: int, C: int) -> torch.Tensor:
    """The attention's spatial gate ``[N,1,H,W]`` from each pixel's channel sum and max of
    the gated map (``[N,H,W]`` each, N = T*B): their means and maxima over the steps, the
    gate's conv, a sigmoid, the same gate for every step."""
    N, H, W = pixel_sum.shape
    B = N // T
    mean_s = pixel_sum.view(T, B, H, W).sum(dim=0) / (T * C)
    max_s = pixel_max.view(T, B, H, W).amax(dim=0)
    g_s = torch.sigmoid(F.conv2d(torch.stack([mean_s, max_s], dim=1), weight,
                                 padding=padding))                               # [B,1,H,W]
    return g_s.unsqueeze(0).expand(T, B, 1, H, W).reshape(N, 1, H, W)   # a view when B = 1


class _GatedAttention(torch.autograd.Function):
    """In training, the attention after its channel ``gate``: ``relu(v)·g_s`` (+ ``residual``)
    with ``v = z·gate`` and ``g_s`` the spatial gate from each pixel's channel sum and max of
    ``v``. Only ``z`` and small tensors are kept: the gated map is made again in each pass.
    Forward in two native passes (:func:`native_channel_gate`,
    :func:`native_relu_gated_residual`), backward in two (the spatial gate's gradient, then
    ``z``'s and ``gate``'s) around the spatial gate's small graph, where autograd through the
    torch ops made about ten passes over the map and kept the gated map and its ReLU; the
    torch ops where the kernels do not run. A pixel's max gradient goes to every channel
    holding it (as :meth:`FastRunner.channel_max`'s)."""

    @staticmethod
    def forward(ctx, z, gate, residual, weight, padding, T, channel_max):
        N, C = gate.shape
        z = z.contiguous(memory_format=torch.channels_last)
        gated, pixel_sum, pixel_max = _gated_pixel_stats(z, gate.contiguous(), channel_max, True)
        g_s = _spatial_gate(pixel_sum, pixel_max, weight, padding, T, C).contiguous()
        out = None
        if gated is None and (residual is None or residual.dtype == torch.float32):
            out = native_relu_gated_residual(z, g_s, residual, None, gate.contiguous())
        if out is None:
            gated = z * gate.view(N, C, 1, 1) if gated is None else gated
            out = (gated.relu() * g_s if residual is None
                   else torch.addcmul(residual, gated.relu(), g_s))
        ctx.save_for_backward(z, gate, weight, pixel_sum, pixel_max, g_s)
        ctx.conf = (padding, T, residual is not None)
        return out

    @staticmethod
    def backward(ctx, grad):
        z, gate, weight, pixel_sum, pixel_max, g_s = ctx.saved_tensors
        padding, T, has_residual = ctx.conf
        N, C = gate.shape
        grad = grad.contiguous(memory_format=torch.channels_last)
        gate = gate.contiguous()
        grad_gs = native_attention_gate_grad(grad, z, gate)
        v = None
        if grad_gs is None:
            v = z * gate.view(N, C, 1, 1)
            grad_gs = (grad * v.relu()).sum(dim=1, keepdim=True)
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in (pixel_sum, pixel_max, weight)]
            grad_sum, grad_max, grad_weight = torch.autograd.grad(
                _spatial_gate(*leaves[:2], leaves[2], padding, T, C), leaves, grad_gs)
        got = native_attention_map_grad(grad, z, gate, g_s, pixel_max.contiguous(),
                                        grad_sum.contiguous(), grad_max.contiguous())
        if got is None:
            v = z * gate.view(N, C, 1, 1) if v is None else v
            d = (grad * g_s * (v > 0) + grad_sum.unsqueeze(1)
                 + (v == pixel_max.unsqueeze(1)) * grad_max.unsqueeze(1))
            got = d * gate.view(N, C, 1, 1), (d * z).sum(dim=(2, 3))
        grad_z, grad_gate = got
        return grad_z, grad_gate, grad if has_residual else None, grad_weight, None, None, None


def attention_fast(run: FastRunner, attn: nn.Module, z: torch.Tensor,
                   residual: torch.Tensor | None = None,
                   conv_copy: bool = False) -> torch.Tensor:
    """``attn(z)`` (+ ``residual``) for spikingjelly's ``MultiDimensionalAttention``.

    With ``fast_attention`` the three gates come from two reductions of ``z`` and one of the
    gated map: the temporal and channel gates from per-(step, channel) sums and maxima (the
    gates are positive, so the max of a gated map is the gated max), one multiply by their
    product, the spatial gate from that product's channel mean/max, and ReLU·gate (+ the
    residual) in one pass (ReLU(a·g) = ReLU(a)·g for g > 0). Changes rounding. On the bf16
    path ``z`` may be a conv's bfloat16 output, read as it is (the gating makes it float32),
    and with ``conv_copy`` (a conv reads the output next) the last pass also writes the output
    in bfloat16 for it (:meth:`FastRunner.keep_conv_copy`), or with ``bf16_stream`` writes it
    in bfloat16 only.
    """
    full = (isinstance(attn, layer.MultiDimensionalAttention) and attn.ta is not None
            and attn.ca is not None and attn.sa is not None)
    if not (run.opts.fast_attention and full):
        out = attn(run.steps(z.float()))
        return run.layout((out if residual is None else out + run.steps(residual))
                          .flatten(0, 1))
    T, (N, C, H, W) = run.T, z.shape
    B = N // T

    def shared_mlp(seq: nn.Sequential, v: torch.Tensor) -> torch.Tensor:
        return F.linear(F.relu(F.linear(v, seq[0].weight.flatten(1))),
                        seq[2].weight.flatten(1))
    stats = None if run.grad else native_spatial_stats(z)       # one pass at inference
    if stats is None:
        stats = z.sum(dim=(2, 3)).float(), run.spatial_max(z).float()  # bfloat16: rounded once
    sums, maxima = (v.view(T, B, C) for v in stats)
    ta, ca = attn.ta.sharedMLP, attn.ca.sharedMLP
    g_t = torch.sigmoid(shared_mlp(ta, (sums.sum(dim=2) / (C * H * W)).t())
                        + shared_mlp(ta, maxima.amax(dim=2).t())).t().unsqueeze(2)  # [T,B,1]
    g_c = torch.sigmoid(shared_mlp(ca, (sums * g_t).sum(dim=0) / (T * H * W))
                        + shared_mlp(ca, (maxima * g_t).amax(dim=0)))            # [B,C]
    gate = (g_t * g_c).reshape(N, C)
    if (run.grad and torch.is_grad_enabled() and z.dtype == torch.float32 and z.requires_grad
            and not torch.is_autocast_enabled(z.device.type)):     # autocast: the torch ops
        return run.layout(_GatedAttention.apply(z, gate, residual, attn.sa.conv.weight,
                                                attn.sa.conv.padding, T, run.channel_max))
    # at inference one native pass gives each pixel's channel sum and max of the gated map and
    # the last pass makes that map again as it reads z (a bfloat16 z as it is, where torch's
    # mul would first copy it to float32): the gated map is never stored
    gated, pixel_sum, pixel_max = _gated_pixel_stats(z, gate, run.channel_max, not run.grad)
    g_s = _spatial_gate(pixel_sum, pixel_max, attn.sa.conv.weight, attn.sa.conv.padding, T, C)
    stream = conv_copy and run.bf16_stream           # the output itself in bfloat16
    copy = (torch.empty(z.shape, dtype=run.conv_dtype, memory_format=torch.channels_last)
            if conv_copy and run.conv_dtype is not None and not run.grad and not stream
            else None)                                  # else float32, with a copy for the conv
    out = None
    if not run.grad:               # ReLU, gates and residual: one pass (gating z again if asked)
        out = native_relu_gated_residual(z if gated is None else gated, g_s.contiguous(),
                                         residual, copy, gate if gated is None else None,
                                         run.conv_dtype if stream else torch.float32)
    if out is not None:
        return out if copy is None else run.keep_conv_copy(out, copy)
    if gated is None:
        gated = z * gate.view(N, C, 1, 1)
    gated = torch.relu(gated) if run.grad else gated.relu_()
    if residual is None:
        return run.layout(gated.mul_(g_s) if not run.grad else gated * g_s)
    return run.layout(torch.addcmul(residual, gated, g_s))


# --- VLIF-Net's neurons: NI-LIF (multi-level spikes) and the VLIF unit built on it ------------

class _QuantisedSpike(torch.autograd.Function):
    """s = round(clamp(u, 0, L)) / L, so s takes L + 1 levels in [0, 1].

    Backward is straight-through on [0, L] (zero outside), scaled by 1/L like the forward's
    normalisation, as in the official ``MultiSpike4``.
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, levels: int) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.levels = levels
        return torch.round(torch.clamp(u, min=0, max=levels)) / float(levels)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, = ctx.saved_tensors
        inside = (u >= 0) & (u <= ctx.levels)
        return grad * inside / float(ctx.levels), None


class NILIF(nn.Module):
    """Normalised-integer LIF (VLIF-Net's ``mem_update``), multi-step over dim 0.

    ``u[0] = x[0]``, ``u[t] = (u[t-1] - s[t-1]) * decay + x[t]`` (the reset uses the detached
    spike), ``s[t] = round(clamp(u[t], 0, levels)) / levels``. One call runs the whole sequence
    from rest, so the module keeps no state between calls and needs no reset.
    """

    def __init__(self, levels: int = 4, decay: float = 0.25):
        super().__init__()
        self.levels, self.decay = int(levels), float(decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = []
        u = s = None
        for x_t in x:
            u = x_t if u is None else (u - s.detach()) * self.decay + x_t
            s = _QuantisedSpike.apply(u, self.levels)
            spikes.append(s)
        return torch.stack(spikes)

    def fast_forward(self, x: torch.Tensor, run: FastRunner, r: int = 1,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
        """NI-LIF spikes of ``x [T*B,C,H,W]`` run over each r x r patch as r² extra steps
        (VLIF's reorganisation; r = 1: plain NI-LIF), returned in the pixel-unshuffled layout
        ``[T*B, C*r*r, H/r, W/r]`` (channel ``c*r*r + i*r + j`` holds patch pixel (i, j)), in
        ``dtype`` (default: ``x``'s) where fused."""
        from .acceleration import mark_spikes               # both modules build on this one
        from .fast_lif import nilif_spikes, nilif_supported
        T = run.T
        fused = run.opts.fused_lif and nilif_supported(self)
        if fused:
            spikes = nilif_spikes(x, T, r, self.levels, self.decay,
                                  run.grad and x.requires_grad, run.fmt, dtype)
        else:                        # (a bfloat16 conv output is integrated in float32)
            steps = run.steps(x.float())
            s = self(unshuffle_to_time(steps, r) if r > 1 else steps)
            spikes = run.layout((time_to_unshuffled(s, r) if r > 1 else s).flatten(0, 1))
        if run.record is not None:                   # in the plain path's step order
            N, C4, h, w = spikes.shape
            B, C = N // T, C4 // (r * r)
            plain = spikes.reshape(T, B, C, r * r, h, w).permute(0, 3, 1, 2, 4, 5)
            run.log(self, plain.reshape(T * r * r * B, C, h, w))
        return mark_spikes(spikes, int(self.levels)) if fused else spikes

    def extra_repr(self) -> str:
        return f'levels={self.levels}, decay={self.decay}'


def unshuffle_to_time(x: torch.Tensor, r: int = 2) -> torch.Tensor:
    """VLIF's patch-to-time reorganisation, ``[T,B,C,H,W] -> [T*r*r,B,C,H/r,W/r]``.

    The r*r pixels of every r x r patch become consecutive steps: step ``t*r*r + i*r + j`` holds
    pixel (i, j) of each patch at step t, so a neuron's membrane integrates over its patch.
    """
    T, B, C, H, W = x.shape
    if H % r or W % r:
        raise ValueError(f'VLIF needs H and W divisible by {r}, got {H}x{W}')
    # [T,B,C,h,i,w,j] -> [T,i,j,B,C,h,w] -> steps (pixel_unshuffle's ONNX form fixes the sizes)
    y = x.unflatten(4, (-1, r)).unflatten(3, (-1, r))
    return y.permute(0, 4, 6, 1, 2, 3, 5).flatten(0, 2)


def time_to_unshuffled(y: torch.Tensor, r: int = 2) -> torch.Tensor:
    """Undo the step interleaving: ``[T*r*r,B,C,h,w] -> [T,B,C*r*r,h,w]`` (unshuffled layout)."""
    return y.unflatten(0, (-1, r * r)).permute(0, 2, 3, 1, 4, 5).flatten(2, 3)


def time_to_space(y: torch.Tensor, r: int = 2) -> torch.Tensor:
    """Exact inverse of :func:`unshuffle_to_time`: ``[T*r*r,B,C,h,w] -> [T,B,C,h*r,w*r]``."""
    z = time_to_unshuffled(y, r)
    T, B = z.shape[:2]
    return F.pixel_shuffle(z.flatten(0, 1), r).unflatten(0, (T, B))


VLIF_RESTORE_MODES = ('bilinear_conv', 'pixel_shuffle')


class VLIFNeuron(nn.Module):
    """Visual LIF: NI-LIF run over each r x r patch as extra time steps (spatial context).

    ``restore='bilinear_conv'`` is the official code: the unshuffled spikes are bilinearly
    up-sampled to H x W and a 1x1 conv (C*r*r -> C, no bias, key ``channel_adjust``) mixes them.
    ``restore='pixel_shuffle'`` is the paper's parameter-free version: each spike goes back to
    its own pixel, so the output is a multi-level spike map.
    """

    def __init__(self, channels: int, r: int = 2, restore: str = 'bilinear_conv',
                 levels: int = 4, decay: float = 0.25):
        super().__init__()
        if restore not in VLIF_RESTORE_MODES:
            raise ValueError(f'VLIF restore must be one of {VLIF_RESTORE_MODES}, got {restore!r}')
        self.r, self.restore = r, restore
        self.lif_node = NILIF(levels, decay)
        if restore == 'bilinear_conv':
            self.channel_adjust = conv2d(channels * r * r, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        spikes = self.lif_node(unshuffle_to_time(x, self.r))       # [T*r*r, B, C, H/r, W/r]
        if self.restore == 'pixel_shuffle':
            return time_to_space(spikes, self.r)
        z = time_to_unshuffled(spikes, self.r).flatten(0, 1)       # [T*B, C*r*r, H/r, W/r]
        # x r (not size=(H, W): the same scale 1/r, and it traces to a size-free ONNX Resize)
        z = F.interpolate(z, scale_factor=self.r, mode='bilinear', align_corners=False)
        return self.channel_adjust(z.unflatten(0, (T, B)))

    @staticmethod
    def resize(z: torch.Tensor, size: tuple[int, int], run: FastRunner) -> torch.Tensor:
        """The restore's bilinear resize of the fast path's map ``z`` to ``size``."""
        return run.layout(F.interpolate(z, size=size, mode='bilinear', align_corners=False))

    def fast_forward(self, x: torch.Tensor, run: FastRunner, resize: bool = True
                     ) -> torch.Tensor:
        """NI-LIF over each r x r patch (:meth:`NILIF.fast_forward`), then back to full
        resolution; with ``fast_arithmetic`` and ``resize=False`` the map before its bilinear
        resize (``[N, C, H/r, W/r]``), for a reader that up-samples it as it reads it."""
        r = self.r
        N, C, H, W = x.shape
        if self.restore == 'pixel_shuffle':
            return run.layout(F.pixel_shuffle(self.lif_node.fast_forward(x, run, r), r))
        if run.opts.fast_arithmetic:     # 1x1 conv and bilinear resize commute: conv first
            # on the bf16 path the spikes, the conv's output and the resize stay in bfloat16
            z = self.lif_node.fast_forward(x, run, r, None if run.grad else run.conv_dtype)
            z = run.conv(z, self.channel_adjust, bf16_out=not run.grad)
            return self.resize(z, (H, W), run) if resize else z
        z = self.lif_node.fast_forward(x, run, r)                  # [N, C*r*r, H/r, W/r]
        return run.conv(self.resize(z, (H, W), run), self.channel_adjust)


NEURON_KINDS = ('lif', 'nilif', 'vlif')


def make_neuron(kind: str = 'lif', channels: int | None = None, **options) -> nn.Module:
    """Any of the spiking units by name, so a model can swap neurons with one config flag.

    'lif' is :func:`make_lif` (options override its settings), 'nilif' is :class:`NILIF`,
    'vlif' is :class:`VLIFNeuron` and needs ``channels``.
    """
    if kind == 'lif':
        return make_lif(**options)
    if kind == 'nilif':
        return NILIF(**options)
    if kind == 'vlif':
        if channels is None:
            raise ValueError("neuron 'vlif' needs the number of channels")
        return VLIFNeuron(channels, **options)
    raise ValueError(f'unknown neuron {kind!r}; choose one of {NEURON_KINDS}')


# --- ANN twins: the same network with every spiking neuron replaced by a ReLU ------------------

def is_spiking_neuron(module: nn.Module) -> bool:
    """spikingjelly neurons, and this package's own neurons (which declare ``levels``)."""
    return isinstance(module, neuron.BaseNode) or (
        isinstance(getattr(module, 'levels', None), int) and not list(module.children()))


def replace_spiking_neurons(model: nn.Module, make=nn.ReLU) -> int:
    """Swap every spiking neuron of ``model`` for ``make()`` in place; returns how many.

    Neurons hold no parameters, so the swapped model keeps every parameter name (and the
    official checkpoints' layout). A composite unit such as VLIF keeps its non-neuron parts
    (the patch-to-time reorganisation and the 1x1 ``channel_adjust``): only the NI-LIF inside
    it becomes a ReLU, which is what "the same architecture without spikes" means.
    """
    swaps = [(parent, child_name)
             for parent in model.modules()
             for child_name, child in parent.named_children() if is_spiking_neuron(child)]
    for parent, child_name in swaps:
        setattr(parent, child_name, make())
    return len(swaps)
