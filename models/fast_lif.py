"""A fused multi-step LIF for the papers' neuron, bit-identical to spikingjelly's.

spikingjelly's CPU LIF builds every step from ~10 separate tensor ops and, under autograd,
records a graph of them (and keeps its input, the charged potential and the state alive). The
papers' neuron is simple enough to do in a few in-place passes: with ``decay_input=False`` and a
hard reset to 0, ``H[t] = V[t-1]/2 + X[t]``, ``S[t] = H[t] >= v_th``, ``V[t] = H[t]·(1 - S[t])``.
``X + V/2`` rounds exactly like spikingjelly's ``V - V/2 + X`` (halving is exact), so the spikes
are the same bit for bit. Tensors are time-flattened ``[T*B, ...]`` in any memory format.

Only this neuron (tau 2, hard reset 0, no input decay, sigmoid surrogate) is fused; callers check
:func:`is_fusable` first. At inference on the CPU, :mod:`models.native_lif` runs the same
arithmetic in one native pass when it could be built (the torch ops below are the fallback and
the reference).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from spikingjelly.activation_based import neuron, surrogate

from .native_lif import (native_lif, native_lif_backward, native_lif_charge, native_nilif,
                         native_nilif_backward)
from .spiking import LIFNode as FP32StateLIF

# Under fp16/bf16 autocast the neurons' inputs are half precision: the membrane is integrated in
# float32 all the same (as models.spiking.LIFNode does for spikingjelly's kernels), and the spikes
# (exact 0/1) are returned in the input's dtype.
_HALF = (torch.float16, torch.bfloat16)


def is_fusable(lif: nn.Module) -> bool:
    """True for a spikingjelly LIF (or the models' float32-state one) with the settings the fused
    kernels implement."""
    return (type(lif) in (neuron.LIFNode, FP32StateLIF) and lif.tau == 2.0 and not lif.decay_input
            and lif.v_reset == 0.0 and not lif.detach_reset
            and type(lif.surrogate_function) is surrogate.Sigmoid
            and lif.surrogate_function.spiking)


def _steps(x: torch.Tensor, T: int) -> torch.Tensor:
    return x.unflatten(0, (T, x.shape[0] // T))


@torch.no_grad()
def lif_spikes(x: torch.Tensor, T: int, v_th: float, out: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Spikes of ``x [T*B, ...]`` from rest (no autograd). ``out`` may be a strided view
    (e.g. a channel slice of a dense block's spike buffer) of any float dtype, and is returned.

    Three in-place passes per step; no bool masks (``masked_fill``/``where`` are several times
    slower than arithmetic on a CPU).
    """
    if x.dtype in (torch.float32, torch.bfloat16) and x.device.type == 'cpu':
        target = torch.empty_like(x) if out is None else out     # one native pass, if built
        if native_lif(x, T, v_th, target):
            return target
    if x.dtype in _HALF or (out is not None and out.dtype != x.dtype):
        spikes = lif_spikes(x.float(), T, v_th)        # 0/1: exact in any float dtype
        return spikes.to(x.dtype) if out is None else out.copy_(spikes)
    out = torch.empty_like(x) if out is None else out
    xs, os = _steps(x, T), _steps(out, T)
    h = xs[0]                                              # H[0] = X[0] (V starts at 0)
    for t in range(T):
        if t:
            torch.add(xs[t], h, alpha=0.5, out=h)        # H = X + V/2 (h held V[t-1])
        torch.ge(h, v_th, out=os[t])                       # S = H >= v_th, as 0./1.
        if t == 0 and T > 1:
            h = torch.addcmul(h, h, os[0], value=-1.0)     # V[0], a new tensor (x is input)
        elif t + 1 < T:
            h.addcmul_(h, os[t], value=-1.0)               # hard reset: V = H - H·S (exact)
    return out


def _charge(x: torch.Tensor, T: int, v_th: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and every step's charged potential H (what the backward pass needs)."""
    h_all = torch.empty_like(x)
    spikes = torch.empty_like(h_all)
    if native_lif_charge(x, T, v_th, 0.0, spikes, h_all, None):     # one pass, if built
        return spikes, h_all
    xs, hs, ss = _steps(x, T), _steps(h_all, T), _steps(spikes, T)
    v = None
    for t in range(T):
        if v is None:
            hs[t].copy_(xs[t])
        else:
            torch.add(xs[t], v, alpha=0.5, out=hs[t])
        torch.ge(hs[t], v_th, out=ss[t])
        if t + 1 < T:
            v = torch.addcmul(hs[t], hs[t], ss[t], value=-1.0, out=v)
    return spikes, h_all


class _LIFFunction(torch.autograd.Function):
    """LIF with spikingjelly's sigmoid surrogate. Saves one tensor: the charged potential H, or
    (``keep_input``) only its input, from which the backward pass recharges H (a few
    element-wise passes). The input is usually kept anyway (by the shortcut conv beside it, or
    by the layer before), so the neuron then costs no memory."""

    @staticmethod
    def forward(ctx, x, T, v_th, alpha, keep_input):
        spikes, h_all = _charge(x, T, v_th)
        ctx.save_for_backward(x if keep_input else h_all)
        ctx.T, ctx.v_th, ctx.alpha, ctx.keep_input = T, v_th, alpha, keep_input
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        saved, = ctx.saved_tensors
        T, v_th, alpha = ctx.T, ctx.v_th, ctx.alpha
        native = _native_backward(saved, grad_spikes, T, v_th, alpha, ctx.keep_input)
        if native is not None:
            return native, None, None, None, None
        h_all = _charge(saved, T, v_th)[1] if ctx.keep_input else saved   # the same H
        grad_x = torch.empty_like(h_all)
        hs, gs, gx = _steps(h_all, T), _steps(grad_spikes, T), _steps(grad_x, T)
        carry = None                                       # dL/dV[t] from step t+1
        reset_grad = torch.empty_like(hs[0])
        for t in range(T - 1, -1, -1):
            h = hs[t]
            sig = torch.sub(h, v_th).mul_(alpha).sigmoid_()
            sg = torch.addcmul(sig, sig, sig, value=-1.0).mul_(alpha)   # surrogate dS/dH
            gh = torch.mul(gs[t], sg, out=gx[t])
            if carry is not None:
                # dV/dH = (1 - S) + (v_reset - H)·dS/dH, with v_reset = 0
                reset_grad = torch.lt(h, v_th, out=reset_grad).addcmul_(h, sg, value=-1.0)
                gh.addcmul_(carry, reset_grad)
            if t:
                carry = torch.mul(gh, 0.5, out=carry)     # dH[t]/dV[t-1] = 1 - 1/tau
        return grad_x, None, None, None, None


def _native_backward(saved: torch.Tensor, grad_spikes: torch.Tensor, T: int, v_th: float,
                     alpha: float, keep_input: bool) -> torch.Tensor | None:
    """:class:`_LIFFunction`'s backward pass in two native passes around torch's sigmoid (which
    a C loop would round differently), or ``None`` where the kernel is unavailable. The sigmoid
    runs per step on the same-shaped tensors as the torch ops' backward, so its rounding (torch
    vectorises a step's elements, and a tail of them not) is the same too."""
    if saved.device.type != 'cpu' or saved.dtype != torch.float32:
        return None
    if keep_input:
        h_all, arg = torch.empty_like(saved), torch.empty_like(saved)
        if not native_lif_charge(saved, T, v_th, alpha, None, h_all, arg):
            return None
    else:
        h_all, arg = saved, torch.sub(saved, v_th).mul_(alpha)
    for step in _steps(arg, T):
        step.sigmoid_()
    if grad_spikes.stride() != h_all.stride():
        grad_spikes = torch.empty_like(h_all).copy_(grad_spikes)
    return native_lif_backward(h_all, arg, grad_spikes, T, v_th, alpha)


def lif_spikes_autograd(x: torch.Tensor, T: int, v_th: float, alpha: float,
                        keep_input: bool = True) -> torch.Tensor:
    """Differentiable fused LIF (surrogate gradients as spikingjelly's, within rounding).
    ``keep_input``: save ``x`` for the backward pass rather than the potential (see
    :class:`_LIFFunction`)."""
    if x.dtype in _HALF:         # the cast is differentiable: the gradient comes back in x.dtype
        return _LIFFunction.apply(x.float(), T, v_th, alpha, False).to(x.dtype)
    return _LIFFunction.apply(x, T, v_th, alpha, keep_input)


# ---- NI-LIF (VLIF-Net's multi-level neuron), optionally over VLIF's r x r patch steps ----------
def nilif_supported(neuron_module: nn.Module) -> bool:
    """True for the models' NI-LIF (any number of levels, any decay)."""
    from .spiking import NILIF
    return type(neuron_module) is NILIF


def _patch_steps(T: int, r: int):
    """VLIF's step order: step ``t*r*r + i*r + j`` is pixel (i, j) of each patch at step t."""
    return [(t, i * r + j, i, j) for t in range(T) for i in range(r) for j in range(r)]


def _nilif_run(x: torch.Tensor, T: int, r: int, levels: int, decay: float,
               fmt: torch.memory_format, inside: torch.Tensor | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """Forward of the fused NI-LIF; fills ``inside`` (bool, ``[T, r*r, B, C, h, w]``) with where
    the potential lay in [0, levels] (the straight-through gradient's support) when given.
    The spikes come in ``dtype`` (default: ``x``'s); a half ``x`` is integrated in float32.

    The r x r patch pixels are read as strided views of ``x [T*B,C,H,W]`` (no reorganised copy)
    and the spikes written into the pixel-unshuffled layout ``[T*B, C*r*r, H/r, W/r]``. Same ops
    in the same order as ``models.spiking.NILIF``: ``u = (u - s)·decay + x``, then
    ``s = round(clamp(u, 0, L)) / L``, so the spikes are the same bit for bit.
    """
    N, C, H, W = x.shape
    B, h, w, rr = N // T, H // r, W // r, r * r
    dtype = dtype or x.dtype
    out = torch.empty((N, C * rr, h, w), dtype=dtype, device=x.device, memory_format=fmt)
    exact_scale = decay > 0 and math.frexp(decay)[0] == 0.5   # a power of two: u·decay exact
    if native_nilif(x, T, r, levels, decay, out, inside, exact_scale):   # one pass, if built
        return out
    if x.dtype in _HALF or dtype in _HALF:      # the torch ops below integrate in float32
        return _nilif_run(x.float(), T, r, levels, decay, fmt, inside,
                          torch.float32).to(dtype)
    outs = out.view(T, B, C, rr, h, w)
    xs = _steps(x, T)
    u = torch.empty((B, C, h, w), dtype=x.dtype, device=x.device, memory_format=fmt)
    q = torch.empty_like(u)
    prev = None
    for t, k, i, j in _patch_steps(T, r):
        x_k = xs[t][:, :, i::r, j::r]
        if prev is None:
            u.copy_(x_k)
        else:
            u.sub_(prev)                                    # reset by the (detached) spike
            if exact_scale:
                torch.add(x_k, u, alpha=decay, out=u)       # x + u·decay, one rounding
            else:
                u.mul_(decay).add_(x_k)
        torch.clamp(u, 0, levels, out=q)
        if inside is not None:
            torch.eq(q, u, out=inside[t, k])
        prev = torch.div(q.round_(), float(levels), out=outs[t, :, :, k])
    return out


class _NILIFFunction(torch.autograd.Function):
    """Fused NI-LIF with the official straight-through gradient (1/L on [0, L], else 0);
    saves one bool mask instead of every step's potential."""

    @staticmethod
    def forward(ctx, x, T, r, levels, decay, fmt):
        N, C, H, W = x.shape
        inside = torch.empty((T, r * r, N // T, C, H // r, W // r), dtype=torch.bool,
                             device=x.device)
        out = _nilif_run(x, T, r, levels, decay, fmt, inside)
        ctx.save_for_backward(inside)
        ctx.T, ctx.r, ctx.levels, ctx.decay, ctx.shape = T, r, levels, decay, x.shape
        ctx.fmt = fmt
        return out

    @staticmethod
    def backward(ctx, grad_out):
        inside, = ctx.saved_tensors
        T, r, levels, decay = ctx.T, ctx.r, ctx.levels, ctx.decay
        N, C, H, W = ctx.shape
        B = N // T
        grad_x = torch.empty(ctx.shape, dtype=grad_out.dtype, device=grad_out.device,
                             memory_format=ctx.fmt)
        if native_nilif_backward(grad_out, inside, T, r, levels, decay, grad_x):
            return grad_x, None, None, None, None, None
        gxs, gouts = _steps(grad_x, T), grad_out.reshape(T, B, C, r * r, H // r, W // r)
        carry = None                                        # dL/du of the next step
        for t, k, i, j in reversed(_patch_steps(T, r)):
            g = torch.mul(gouts[t, :, :, k], inside[t, k]).div_(float(levels))
            if carry is not None:
                g.add_(carry, alpha=decay)
            gxs[t][:, :, i::r, j::r].copy_(g)
            carry = g
        return grad_x, None, None, None, None, None


def nilif_spikes(x: torch.Tensor, T: int, r: int, levels: int, decay: float, grad: bool,
                 fmt: torch.memory_format = torch.contiguous_format,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """NI-LIF spikes of ``x [T*B,C,H,W]`` from rest over T·r² steps (r = 1: the plain NI-LIF),
    in the pixel-unshuffled layout ``[T*B, C*r*r, H/r, W/r]``; differentiable when ``grad``.
    Half inputs are integrated in float32; the spikes come in ``dtype`` (default: ``x``'s; at
    inference the native kernel reads and writes bfloat16 as it is, no conversion pass)."""
    dtype = dtype or x.dtype
    if x.shape[-1] % r or x.shape[-2] % r:
        raise ValueError(f'VLIF needs H and W divisible by {r}, got {x.shape[-2]}x{x.shape[-1]}')
    if not grad:
        with torch.no_grad():
            return _nilif_run(x, T, r, int(levels), float(decay), fmt, dtype=dtype)
    out = _NILIFFunction.apply(x.float() if x.dtype in _HALF else x, T, r, int(levels),
                               float(decay), fmt)
    return out if out.dtype == dtype else out.to(dtype)
