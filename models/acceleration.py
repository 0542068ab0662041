"""Generic fast-path machinery: same model, same weights, less overhead.

The plain eager forward stays the reference (it matches the official code bit for bit). Most of
its time is not convolution but overhead: spikingjelly's LIF builds each step from ~10 tensor
ops, VLIF-Net's NI-LIF is a per-step Python loop over copied, reorganised tensors, BatchNorm is
a separate pass, NCHW convolutions run ~3x slower than channels-last ones on a CPU.

A model joins the fast path by defining ``fast_forward(self, img, run)`` beside its reference
``forward_padded`` (see :class:`models.base.SpikingRestorer`), and each of its blocks
``fast_forward(self, x, run)`` beside the block's ``forward`` (the shared blocks, NI-LIF and
VLIF in :mod:`models.spiking`, the others in the model's file). ``run`` is a
:class:`FastRunner`, which gives them the primitives: fused LIF in place of the neuron modules
(:mod:`models.fast_lif`), convs and BNs on time-flattened ``[T*B,C,H,W]`` tensors in the
chosen layout and precision, recomputed and checkpointed regions, and spike recording for
fidelity checks. Nothing here knows a model or a block by name. Switches (:class:`FastOptions`):

* ``fused_lif``: fused, in-place LIF and NI-LIF (same spikes bit for bit); VLIF's patch-to-time
  reorganisation reads strided views instead of copies.
* ``channels_last``: every 4-D tensor and weight in channels-last layout. Changes rounding.
* ``fast_attention``: the attention gates from a few reductions instead of pooled copies
  (SpikeRain's MDSA; spikingjelly's multi-dimensional attention in ESDNet and VLIF-Net, with
  ReLU·gate + residual in one pass). Changes rounding.
* ``fast_arithmetic``: other re-associated element-wise formulas and linear maps (VLIF's 1x1
  conv before its bilinear up-sampling, VLIF-Net's decompose-enhance in two passes, inference
  convs over channel concatenations summed part by part: SpikeRain's dense blocks and ARFE gate,
  see :meth:`FastRunner.conv_cat`). Changes rounding.
* ``patch_embed_once``: the image conv runs once instead of T times.
* ``fold_bn`` (inference only, :func:`optimize_for_inference`): BatchNorm folded into the conv
  before it. Changes rounding.
* ``precision='bf16'`` (inference only): convs in bfloat16 (channels-last, oneDNN), neuron
  membranes and the arithmetic between convs in float32. Changes rounding.
* ``bf16_stream`` (with ``precision='bf16'``): a block output that only neurons, convs and the
  next block's residual read (ESDNet's blocks, VLIF-Net's SDEMs and SMUs, and what joins
  them) is stored in bfloat16, where it would be float32 plus a bfloat16 copy for the conv:
  half the bytes on the residual stream. Changes rounding (the residuals keep bfloat16's 8
  bits). Not SpikeRain: its trained weights lost up to 0.6 dB on a held-out photo with it.
* ``recompute`` (training, on by default): the work between convs (BN, neurons, attention,
  element-wise maths; regions a model's fast forward marks with :meth:`FastRunner.recompute`)
  keeps only its inputs and is recomputed in the backward pass. Same gradients bit for bit,
  much less memory, a little more time. Whatever the switches, a conv on spikes keeps them as
  ``uint8`` counts and a fused LIF its input rather than its potential (exact too).
* ``checkpoint`` (training only, off by default: it saves memory, not time): each block keeps
  only its input and is recomputed during the backward pass, convs included; BatchNorm running
  statistics are updated once, in the first pass.

Paths that change rounding flip the few spikes whose potential sits within rounding of a
threshold; ``tests/models/test_fast_paths.py`` checks them on trained models (spike agreement and
restored-image PSNR), the others against the official golden tensors.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint as _checkpoint
from spikingjelly.activation_based.neuron import BaseNode

from utils.core.allocator import keep_freed_memory

from .fast_lif import is_fusable, lif_spikes, lif_spikes_autograd
from .native_lif import native_channel_cat, native_upsample2x, native_upsample2x_lif
from .spiking import NILIF, StepBatchNorm2d, VLIFNeuron, is_spiking_neuron

PRECISIONS = ('fp32', 'bf16')
BF16_WEIGHT = 'fast_bf16_weight'    # attribute of a conv: its bfloat16 copy, not in the state dict
BF16_BIAS = 'fast_bf16_bias'        # attribute of a conv: its bias in bfloat16, the same
WEIGHT_SLICES = 'fast_weight_slices'  # attribute of a conv: its weight cut for conv_cat
CONV_COPY = 'fast_conv_copy'          # attribute of a tensor: (its version, its bf16 copy)


@dataclass(frozen=True)
class FastOptions:
    """Switches of the fast path; see the module docstring for what each one does."""
    fused_lif: bool = True
    channels_last: bool = True
    fast_attention: bool = True
    fast_arithmetic: bool = True
    patch_embed_once: bool = True
    checkpoint: bool = False
    recompute: bool = True
    precision: str = 'fp32'
    bf16_stream: bool = True


def supports_fast_path(model: nn.Module) -> bool:
    """True when the model defines a fast forward and has spiking neurons to fuse (an ANN twin,
    with ReLUs in their place, runs its plain forward)."""
    return (callable(getattr(model, 'fast_forward', None))
            and any(is_spiking_neuron(m) for m in model.modules()))


def bf16_supported() -> bool:
    """True where oneDNN runs bfloat16 convolutions natively (AVX-512 BF16 or AMX CPUs)."""
    mkldnn = torch.backends.mkldnn
    if not mkldnn.is_available():
        return False
    check = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
    return bool(check()) if check is not None else False


def _notice_unsupported(model: nn.Module) -> bool:
    """One-line notice (a warning) when ``model`` has no fast path; returns whether it has one."""
    if supports_fast_path(model):
        return True
    warnings.warn(f'{type(model).__name__} has no fast forward (or no spiking neurons): '
                  f'it runs its plain forward', stacklevel=3)
    return False


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that follows a conv into that conv.

    Pairs are found in ``nn.Sequential`` s (conv at i, BN at i + 1) and in modules that declare
    ``conv_bn_pairs`` (attribute names, e.g. VLIF-Net's ``('conv1', 'bn1')``). The conv gets
    ``W·s`` and a bias ``beta - mean·s`` (``s = gamma/sqrt(var+eps)``, computed in float64), the
    BN becomes ``nn.Identity``. Returns the number of folded pairs.
    """
    pairs = []
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            pairs += [(mod, str(i), str(i + 1)) for i in range(len(mod) - 1)]
        pairs += [(mod, c, b) for c, b in getattr(mod, 'conv_bn_pairs', ())]
    folded = 0
    for parent, conv_name, norm_name in pairs:
        conv, norm = getattr(parent, conv_name), getattr(parent, norm_name)
        bn = _inner_bn(norm)
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, _BatchNorm)):
            continue
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        with torch.no_grad():
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            bias = conv.bias.double() if conv.bias is not None else 0.0
            new_bias = bn.bias.double() + (bias - bn.running_mean.double()) * scale
            conv.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype))
        setattr(parent, norm_name, nn.Identity())
        folded += 1
    return folded


def optimize_for_inference(model: nn.Module, fold_bn: bool = True, precision: str = 'fp32',
                           **options) -> nn.Module:
    """A fast inference copy of ``model`` (eval mode; the original is untouched).

    ``options`` are :class:`FastOptions` fields (all on by default; ``checkpoint`` and
    ``recompute`` are for training). ``precision='bf16'`` runs the convs in bfloat16 (refused
    where the CPU has no native bf16; see :func:`bf16_supported`). The copy has the same call
    signature; with ``fold_bn`` its BatchNorms are gone, so it is for inference only (its state
    dict no longer matches the model's). A model without a fast forward gets a one-line warning
    and a plain eval copy.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    keep_freed_memory()          # feature maps reuse freed pages instead of faulting in new ones
    fast = copy.deepcopy(model).eval()
    if not _notice_unsupported(model):
        return fast
    if precision == 'bf16' and not bf16_supported():
        raise ValueError('precision bf16: this CPU has no native bfloat16 convolutions '
                         '(oneDNN reports no AVX-512 BF16/AMX)')
    if fold_bn:
        fold_batchnorm(fast)
    opts = FastOptions(**{**options, 'checkpoint': False, 'recompute': False,
                          'precision': precision})
    _attach(fast, opts)
    if precision == 'bf16':      # bf16 copies beside the fp32 weights (heads stay fp32)
        for conv in fast.modules():
            if isinstance(conv, nn.Conv2d):
                setattr(conv, BF16_WEIGHT, conv.weight.detach().to(torch.bfloat16).contiguous(
                    memory_format=torch.channels_last))
                if conv.bias is not None:
                    setattr(conv, BF16_BIAS, conv.bias.detach().to(torch.bfloat16))
    return fast


def enable_fast_training(model: nn.Module, checkpoint: bool = False, **options) -> nn.Module:
    """Switch ``model`` itself to the fast path (in place; same parameters and state dict).

    Call before building the optimizer or after, the parameters stay the same objects. A model
    without a fast forward gets a one-line warning and stays on its plain forward.
    ``recompute`` (on by default) and ``checkpoint=True`` trade time for memory; what each
    costs and saves is measured in docs/efficiency.md (``tools/benchmark.py``).
    """
    if not _notice_unsupported(model):
        return model
    if options.get('precision', 'fp32') != 'fp32':
        raise ValueError('enable_fast_training: only precision fp32 (use torch.autocast for '
                         'mixed-precision training)')
    keep_freed_memory()
    return _attach(model, FastOptions(**{**options, 'checkpoint': checkpoint}))


def disable_fast_path(model: nn.Module) -> nn.Module:
    """Back to the plain reference forward (weights stay in whatever layout they are)."""
    model.fast_path = None
    return model


@contextmanager
def plain_forward(model: nn.Module) -> Iterator[nn.Module]:
    """``with plain_forward(model):`` calls inside run the plain reference forward (e.g. for
    forward hooks, which see no neuron modules on a fast path); the fast path, if any, comes
    back on exit. Yields ``model``."""
    plan = getattr(model, 'fast_path', None)
    model.fast_path = None
    try:
        yield model
    finally:
        model.fast_path = plan


def record_spikes(model: nn.Module, img: torch.Tensor
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every spiking neuron's output for ``img`` (time-flattened ``[S*B,C,H,W]``, by module
    name; S is T, or T·r² for an NI-LIF inside VLIF's reorganisation), and the model's output.

    Works on the plain path (forward hooks) and on a fast path (which has no neuron modules to
    hook), so the two can be compared layer by layer.
    """
    record: dict[str, torch.Tensor] = {}
    plan = getattr(model, 'fast_path', None)
    if plan is not None:
        model.fast_path = lambda m, x: plan(m, x, record)
        try:
            return record, model(img)
        finally:
            model.fast_path = plan
    hooks = [m.register_forward_hook(
        lambda mod, inp, out, n=n: record.__setitem__(n, out.detach().flatten(0, 1).clone()))
        for n, m in model.named_modules() if is_spiking_neuron(m)]
    try:
        return record, model(img)
    finally:
        for h in hooks:
            h.remove()


def fast_options(model: nn.Module) -> FastOptions | None:
    plan = getattr(model, 'fast_path', None)
    return plan.options if plan is not None else None


def _attach(model: nn.Module, options: FastOptions) -> nn.Module:
    if options.channels_last or options.precision != 'fp32':
        with torch.no_grad():
            for p in model.parameters():        # in place: the optimizer's references stay valid
                if p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)
    model.fast_path = _FastPath(options)
    return model


class _FastPath:
    """Callable stored on the model (``model.fast_path``); ``SpikingRestorer`` calls it in
    place of ``forward_padded``. A plain object, so it adds nothing to the state dict."""

    def __init__(self, options: FastOptions):
        self.options = options

    def __call__(self, model: nn.Module, img: torch.Tensor, record: dict | None = None
                 ) -> torch.Tensor:
        return model.fast_forward(img, FastRunner(model, self.options, record))

    def __repr__(self) -> str:
        on = [f.name for f in fields(self.options)
              if f.name != 'precision' and getattr(self.options, f.name)]
        return f'FastPath({", ".join(on) or "nothing"}; {self.options.precision})'


class FastRunner:
    """One forward pass of the fast path: the primitives the models' and blocks'
    ``fast_forward`` are built from (layout, neurons, convs and norms, reductions, recomputed
    and checkpointed regions, spike recording).

    Spiking tensors are time-flattened ``[T*B,C,H,W]`` (step-major), in :meth:`layout`.
    """

    def __init__(self, model: nn.Module, options: FastOptions, record: dict | None = None):
        self.model, self.opts, self.T = model, options, model.T
        self.record = record            # neuron name -> its spikes, for fidelity checks
        self.neuron_names = {m: n for n, m in model.named_modules()} if record is not None else {}
        self.fmt = (torch.channels_last if options.channels_last or options.precision != 'fp32'
                    else torch.contiguous_format)
        self.conv_dtype = torch.bfloat16 if options.precision == 'bf16' else None
        self.grad = torch.is_grad_enabled()
        self.update_stats = True
        self.in_region = False          # inside a checkpointed/recomputed region

    @property
    def bf16_stream(self) -> bool:
        """Whether block outputs that neurons, convs and residuals read stay bfloat16 (the
        ``bf16_stream`` switch, at inference on the bf16 path)."""
        return self.conv_dtype is not None and not self.grad and self.opts.bf16_stream

    # ---- layout -------------------------------------------------------------------------
    def layout(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.fmt)
        if x.dim() == 4 and x.shape[0] == 1 and x.stride(0) != x[0].numel():
            # one image cut from a batch keeps the batch's stride (C in channels-last), and a
            # 1x1 conv then takes it for another layout and copies it: the same memory, restrided
            x = x.as_strided(x.shape, (x[0].numel(),) + x.stride()[1:])
        return x

    def steps(self, x: torch.Tensor, T: int | None = None) -> torch.Tensor:
        T = T or self.T
        return x.unflatten(0, (T, x.shape[0] // T))

    def step_mean(self, x: torch.Tensor) -> torch.Tensor:
        """``steps(x).mean(dim=0)`` as one add per step, in step order, then the division (the
        same bits): reducing dim 0 of a channels-last ``[T,B,C,H,W]`` view is a strided
        reduction, measured 91 ms of ESDNet's 1.1 s bf16 forward at 256x256."""
        steps = self.steps(x)
        if steps.shape[0] == 1:
            return steps[0].float().clone()
        out = steps[0].float() + steps[1]          # in float32 (a bf16 stream's steps too)
        for t in range(2, steps.shape[0]):
            out.add_(steps[t])
        return self.layout(out.div_(steps.shape[0]))

    def module(self, mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A multi-step module run as it is (the plain path's own code) on ``x``."""
        return self.layout(mod(self.steps(x)).flatten(0, 1))

    # ---- neurons ------------------------------------------------------------------------
    def neuron(self, neuron: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The output of any neuron module for ``x``: fused where a fused kernel exists."""
        if isinstance(neuron, (NILIF, VLIFNeuron)):       # their fast forward is beside them
            return neuron.fast_forward(x, self)
        if isinstance(neuron, BaseNode):                  # fused where the settings allow
            return self.lif(neuron, x)
        spikes = self.module(neuron, x)
        self.log(neuron, spikes)
        return spikes

    def lif(self, neuron: nn.Module, x: torch.Tensor, out: torch.Tensor | None = None,
            log: bool = True) -> torch.Tensor:
        """Spikes of LIF ``neuron`` for input ``x`` (written into ``out`` when given)."""
        fused = self.opts.fused_lif and is_fusable(neuron)
        if not fused:
            spikes = self.module(neuron, x)
        elif self.grad and x.requires_grad:
            # inside a recomputed region everything is transient: keep H, skip the recharge
            spikes = lif_spikes_autograd(x, self.T, float(neuron.v_threshold),
                                         float(neuron.surrogate_function.alpha),
                                         keep_input=not self.in_region)
        else:
            if out is None and self.conv_dtype is not None:
                # spikes feed convs, which run in bfloat16 here: 0/1 are exact in it, and the
                # conv then needs no conversion pass (half the bytes written, too)
                out = torch.empty_like(x, dtype=self.conv_dtype)
            spikes = lif_spikes(x, self.T, float(neuron.v_threshold), out)
        if out is not None and spikes is not out:
            spikes = out.copy_(spikes)
        if log:
            self.log(neuron, spikes)
        return mark_spikes(spikes) if fused else spikes      # fused: 0/1 by construction

    def cat_channels(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """``torch.cat(parts, dim=1)``, still tagged as spikes when every part is (channels-last
        parts are joined natively, see :class:`_ChannelCat`), and keeping the parts' conv
        copies joined (:meth:`derive_conv_copy`)."""
        if len(parts) == 1:
            return parts[0]
        out = self.derive_conv_copy(_ChannelCat.apply(*parts), parts, _join_channels)
        levels = {spike_levels(p) for p in parts}
        return mark_spikes(out, levels.pop()) if len(levels) == 1 and None not in levels else out

    def log(self, neuron: nn.Module, spikes: torch.Tensor) -> None:
        if self.record is not None:
            self.record[self.neuron_names[neuron]] = spikes.detach().clone()

    # ---- convs and norms ----------------------------------------------------------------
    def conv(self, x: torch.Tensor, conv: nn.Conv2d, bf16_out: bool = False) -> torch.Tensor:
        """``conv(x)``; in bf16 precision the conv runs in bfloat16 (on the weight copy made by
        :func:`optimize_for_inference`), its bias added by the conv, and returns float32 (with
        its bfloat16 output kept as the conv copy), or with ``bf16_out`` (its reader takes
        bfloat16 as it is: a neuron, perhaps through a folded BN, or an attention) bfloat16:
        a float32 copy is saved."""
        if self.conv_dtype is None:
            levels = spike_levels(x)
            if (levels and self.grad and torch.is_grad_enabled() and conv.weight.requires_grad
                    and x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)):
                return _SpikeConv.apply(x, conv.weight, conv.bias, conv.stride, conv.padding,
                                        conv.dilation, conv.groups, levels)
            return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding,
                            conv.dilation, conv.groups)
        weight, x = self._weight(conv, self.conv_dtype), self.in_conv_dtype(x)
        bias = None if conv.bias is None else getattr(conv, BF16_BIAS, None)
        bias = conv.bias.to(self.conv_dtype) if bias is None and conv.bias is not None else bias
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return y if bf16_out else self._float_with_copy(y)

    # At inference, with fast_arithmetic, a sum of convs is one output: the first conv writes
    # it with all the biases and the others add into it in place (_conv_accumulate). It changes
    # rounding (the order of the sum).
    def _sums_convs(self, convs: list[nn.Conv2d]) -> bool:
        geometry = {(c.stride, c.padding, c.dilation, c.groups) for c in convs}
        return (not self.grad and self.opts.fast_arithmetic and len(geometry) == 1
                and convs[0].groups == 1 and not isinstance(convs[0].padding, str))

    def conv_cat(self, parts: list[torch.Tensor], conv: nn.Conv2d,
                 bf16_out: bool = False) -> torch.Tensor:
        """``conv(torch.cat(parts, dim=1))``. At inference the concatenation is never built: a
        conv is linear in its input channels, so each part meets its slice of the weight and
        the products are summed into one output. A dense block's layers then read their inputs
        where the neurons wrote them: no channel prefix is copied, and each neuron writes a
        dense tensor instead of a slice of a wide one (partial cache lines)."""
        if len(parts) == 1 or not self._sums_convs([conv]):
            return self.conv(self.cat_channels(parts), conv, bf16_out)
        dtype = self.conv_dtype or parts[0].dtype
        weights = self._weight_slices(conv, [p.shape[1] for p in parts], dtype)
        return self._summed_convs(parts, weights, [conv.bias], conv, bf16_out)

    def conv_sum(self, terms: list[tuple[torch.Tensor, nn.Conv2d, nn.Module]],
                 bf16_out: bool = False) -> torch.Tensor:
        """``Σ norm(conv(x))`` over ``terms`` ``[(x, conv, norm), ...]``; at inference, where
        the norms are folded into the convs, one output the convs add into (no output each,
        no add pass; with ``bf16_out`` it stays bfloat16 on the bf16 path)."""
        convs = [conv for _, conv, _ in terms]
        if not (self._sums_convs(convs) and all(self.folded(norm) for _, _, norm in terms)):
            out = None
            for x, conv, norm in terms:
                y = self.norm(self.conv(x, conv), norm)
                out = y if out is None else out + y
            return out
        dtype = self.conv_dtype or terms[0][0].dtype
        return self._summed_convs([x for x, _, _ in terms],
                                  [self._weight(conv, dtype) for conv in convs],
                                  [conv.bias for conv in convs], convs[0], bf16_out)

    def _summed_convs(self, xs: list[torch.Tensor], weights: list[torch.Tensor],
                      biases: list[torch.Tensor | None], conv: nn.Conv2d,
                      bf16_out: bool) -> torch.Tensor:
        """``Σ conv2d(x, w) + Σ biases`` in ``conv``'s geometry, in the weights' dtype."""
        dtype = weights[0].dtype
        biases = [b for b in biases if b is not None]
        bias = sum(biases[1:], biases[0]) if biases else None
        xs = [self.in_conv_dtype(x) for x in xs]
        out = F.conv2d(xs[0], weights[0], None if bias is None else bias.to(dtype),
                       conv.stride, conv.padding, conv.dilation)
        for x, w in zip(xs[1:], weights[1:]):
            _conv_accumulate(out, x, w, conv)
        return out if self.conv_dtype is None or bf16_out else self._float_with_copy(out)

    def _float_with_copy(self, y: torch.Tensor) -> torch.Tensor:
        """A bfloat16 conv output (its bias added by the conv) in float32, remembering ``y``
        itself as its conv copy: the float32 values are ``y``'s exactly, so a conv that reads
        them next needs no conversion pass (:meth:`keep_conv_copy`)."""
        return self.keep_conv_copy(y.float(), y)

    def in_conv_dtype(self, x: torch.Tensor) -> torch.Tensor:
        """``x.to(conv_dtype)`` (``x`` in float32), or the copy a kernel wrote as it made ``x``
        (see :meth:`keep_conv_copy`; used once, and only while ``x`` is unchanged)."""
        if self.conv_dtype is None:
            return x
        copy = self._kept_copy(x)
        x.__dict__.pop(CONV_COPY, None)
        if copy is None:
            return x.to(self.conv_dtype)
        return copy() if callable(copy) else copy

    def _kept_copy(self, x: torch.Tensor):
        """``x``'s kept conv copy (a tensor, or how to make it) while ``x`` is unchanged."""
        kept = x.__dict__.get(CONV_COPY)
        if kept is None or kept[0] != x._version:
            return None
        return kept[1] if callable(kept[1]) or kept[1].dtype == self.conv_dtype else None

    @staticmethod
    def keep_conv_copy(x: torch.Tensor, copy) -> torch.Tensor:
        """Remember ``copy`` (``x`` in the convs' dtype, written by the kernel that made ``x``,
        or a function that makes it from other such copies) for the next conv that reads
        ``x``: the conversion pass is saved. Returns ``x``."""
        setattr(x, CONV_COPY, (x._version, copy))
        return x

    def derive_conv_copy(self, out: torch.Tensor, parts: list[torch.Tensor], make
                         ) -> torch.Tensor:
        """``out = make(parts)`` (a concatenation, a repeat: ops that move values, not change
        them): where every part keeps a conv copy, ``out`` keeps ``make`` of those copies,
        made only if a conv reads ``out``. Returns ``out``."""
        if self.conv_dtype is None or self.grad:
            return out
        copies = [p if p.dtype == self.conv_dtype else self._kept_copy(p) for p in parts]
        if any(c is None for c in copies):
            return out
        return self.keep_conv_copy(out, lambda: self.layout(make(
            [c() if callable(c) else c for c in copies])))

    def _weight(self, conv: nn.Conv2d, dtype: torch.dtype) -> torch.Tensor:
        """``conv``'s weight in ``dtype`` (bfloat16: the copy :func:`optimize_for_inference`
        made, where it did)."""
        if dtype == conv.weight.dtype:
            return conv.weight
        weight = getattr(conv, BF16_WEIGHT, None) if dtype == torch.bfloat16 else None
        return conv.weight.to(dtype) if weight is None else weight

    def _weight_slices(self, conv: nn.Conv2d, widths: list[int],
                       dtype: torch.dtype) -> list[torch.Tensor]:
        """``conv``'s weight cut along its input channels into ``widths``, in ``dtype`` and the
        layout; kept on the conv until its weight changes (its version counter moves)."""
        weight = conv.weight
        key = (weight.data_ptr(), weight._version, tuple(widths), dtype, self.fmt)
        cached = getattr(conv, WEIGHT_SLICES, None)
        if cached is not None and cached[0] == key:
            return cached[1]
        slices = [w.contiguous(memory_format=self.fmt)
                  for w in self._weight(conv, dtype).detach().split(widths, dim=1)]
        setattr(conv, WEIGHT_SLICES, (key, slices))
        return slices

    def conv_weight(self, x: torch.Tensor, weight: torch.Tensor,
                    bf16_out: bool = False) -> torch.Tensor:
        """A bias-free stride-1 conv with a raw ``weight`` (e.g. a reshaped Conv3d's); on the
        bf16 path its output is float32, or bfloat16 with ``bf16_out`` (see :meth:`conv`)."""
        if self.conv_dtype is None:
            return F.conv2d(x, weight, padding=weight.shape[-1] // 2)
        y = F.conv2d(x.to(self.conv_dtype), weight.to(self.conv_dtype),
                     padding=weight.shape[-1] // 2)
        return y if bf16_out else y.float()

    @staticmethod
    def folded(norm: nn.Module) -> bool:
        """Whether ``norm`` was folded into the conv before it (it is the identity now)."""
        return isinstance(_inner_bn(norm), nn.Identity)

    def norm(self, y: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        bn = _inner_bn(norm)
        if isinstance(bn, nn.Identity):
            return y
        y = y.float()            # a bfloat16 conv output (``bf16_out``) meets an unfolded BN
        if bn.training and self.update_stats:
            return bn.super_forward(y)                    # updates the running statistics
        if bn.training:          # checkpoint recompute: same op, statistics updated on copies
            return F.batch_norm(y, bn.running_mean.clone(), bn.running_var.clone(), bn.weight,
                                bn.bias, True, 0.1 if bn.momentum is None else bn.momentum, bn.eps)
        return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0,
                            bn.eps)

    def conv_bn(self, x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module) -> torch.Tensor:
        return self.norm(self.conv(x, conv), norm)

    def neuron_conv_cat(self, parts: list[torch.Tensor], neuron: nn.Module, conv: nn.Conv2d,
                        norm: nn.Module, bf16_out: bool = False) -> torch.Tensor:
        """``norm(conv(neuron(cat(parts))))`` (a segment). At inference, where ``conv`` reads
        its input's channel slices apart (:meth:`conv_cat`) and ``norm`` is folded, a LIF
        makes each part's spikes apart (it is element-wise over channels): the concatenation
        is never built. ``bf16_out`` as in :meth:`conv`."""
        if (len(parts) > 1 and isinstance(neuron, BaseNode) and self._sums_convs([conv])
                and self.folded(norm)):
            spikes = [self.lif(neuron, p, log=False) for p in parts]
            if self.record is not None:
                self.log(neuron, torch.cat(spikes, dim=1))
            return self.conv_cat(spikes, conv, bf16_out)
        return self.segment(lambda t: self.conv_bn(self.neuron(neuron, t), conv, norm),
                            self.cat_channels(parts))

    # ---- reductions (torch's CPU amax is ~10x slower than a sum in these layouts) --------
    @staticmethod
    def spatial_max(x: torch.Tensor) -> torch.Tensor:
        """Max over H and W of ``x [N,C,H,W]`` -> ``[N,C]`` (same values as ``amax``)."""
        return F.adaptive_max_pool2d(x, 1).flatten(1)

    @staticmethod
    def channel_max(x: torch.Tensor) -> torch.Tensor:
        """Max over the channels of ``x [N,C,H,W]`` -> ``[N,H,W]`` (same values as ``amax``;
        the gradient goes to every channel holding the max)."""
        if x.requires_grad and torch.is_grad_enabled():
            return _ChannelMax.apply(x)
        return _channel_max(x)

    # ---- resampling and blocks ------------------------------------------------------------
    def upsample(self, x: torch.Tensor, scale: int = 2, skip: torch.Tensor | None = None,
                 bf16_out: bool = False) -> torch.Tensor:
        """Bilinear up-sampling of ``x`` by ``scale`` (plus ``skip`` if given). At inference
        with ``fast_arithmetic``, x2 plus a skip is one native pass (the up-sampled map is
        never stored; torch's values up to float32 rounding), in the convs' dtype on the bf16
        path with ``bf16_out`` (its reader takes bfloat16)."""
        if skip is not None and scale == 2 and not self.grad and self.opts.fast_arithmetic:
            dtype = (self.conv_dtype or torch.float32) if bf16_out else torch.float32
            out = native_upsample2x(self.layout(x), self.layout(skip), dtype)
            if out is not None:
                return out
        out = self.layout(F.interpolate(x, scale_factor=scale, mode='bilinear',
                                        align_corners=False))
        return out if skip is None else out + skip

    def upsample_neuron(self, neuron: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``neuron(upsample(x))``; at inference with ``fast_arithmetic``, a fused LIF's spikes
        of the x2 up-sampled map in one native pass (the up-sampled map is never stored)."""
        if (not self.grad and self.opts.fast_arithmetic and self.opts.fused_lif
                and is_fusable(neuron)):
            spikes = native_upsample2x_lif(self.layout(x), self.T, float(neuron.v_threshold),
                                           self.conv_dtype or torch.float32)
            if spikes is not None:
                self.log(neuron, spikes)
                return mark_spikes(spikes)
        return self.neuron(neuron, self.upsample(x))

    def blocks(self, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """Each block of ``seq`` on its fast path (``block.fast_forward(x, run)``), each one a
        segment."""
        for b in seq:
            x = self.segment(lambda inp, b=b: b.fast_forward(inp, self), x)
        return x

    def segment(self, fn, x: torch.Tensor) -> torch.Tensor:
        """``fn(x)``, as a checkpointed segment when training with ``checkpoint``: only ``x``
        is kept, and the recomputation in the backward pass leaves the BN statistics alone."""
        if not (self.grad and self.opts.checkpoint and x.requires_grad):
            return fn(x)
        return self._checkpointed(fn, x)

    def recompute(self, fn, *inputs: torch.Tensor) -> torch.Tensor:
        """``fn(*inputs)`` for cheap work between convs (BN, neurons, attention, element-wise
        maths): when training with ``recompute``, its intermediate tensors are not kept for the
        backward pass but recomputed there from ``inputs`` (which the convs around it keep
        anyway), so a block keeps little more than its conv outputs."""
        if not (self.grad and self.opts.recompute and not self.opts.checkpoint
                and any(t.requires_grad for t in inputs)):
            return fn(*inputs)
        return self._checkpointed(fn, *inputs)

    def _checkpointed(self, fn, *inputs: torch.Tensor) -> torch.Tensor:
        """``fn(*inputs)`` under non-reentrant checkpointing; BN statistics are updated in the
        first pass only."""
        first = [True]

        def run(*args):
            self.update_stats, first[0] = first[0], False
            outer, self.in_region = self.in_region, True
            try:
                return fn(*args)
            finally:
                self.update_stats, self.in_region = True, outer
        return _checkpoint(run, *inputs, use_reentrant=False)


# ---- convs on spikes keep their input as small integers ------------------------------------
SPIKE_LEVELS = 'fast_spike_levels'     # attribute of a tensor of spikes k/L: its L


def mark_spikes(spikes: torch.Tensor, levels: int = 1) -> torch.Tensor:
    """Tag ``spikes`` (values k/``levels``, k = 0..levels) so a conv on them saves them as
    integers; returns ``spikes``. A concatenation of spikes can be tagged too."""
    if 0 < levels <= 255:
        setattr(spikes, SPIKE_LEVELS, levels)
    return spikes


def spike_levels(x: torch.Tensor) -> int | None:
    return getattr(x, SPIKE_LEVELS, None)


class _SpikeConv(torch.autograd.Function):
    """``F.conv2d`` on spikes that keeps its input for the backward pass as ``uint8`` counts
    (a quarter of float32) and rebuilds the same float values there: the gradients are the ones
    autograd computes, bit for bit (the same ``convolution_backward`` call)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, levels):
        counts = (x * levels).round_() if levels != 1 else x
        ctx.save_for_backward(counts.to(torch.uint8), weight)
        ctx.conf = (stride, padding, dilation, groups, levels, x.dtype,
                    None if bias is None else bias.shape)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        counts, weight = ctx.saved_tensors
        stride, padding, dilation, groups, levels, dtype, bias_shape = ctx.conf
        x = counts.to(dtype)
        if levels != 1:
            x = torch.div(x, float(levels))     # as the neuron made them: k / L
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                bias_shape is not None and ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad.contiguous(memory_format=_memory_format(x)), x, weight,
            list(bias_shape) if bias_shape is not None else None, list(stride), list(padding),
            list(dilation), False, [0, 0], groups, mask)
        return gx, gw, gb, None, None, None, None, None


def _join_channels(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts, dim=1)``, natively where the parts are channels-last (any dtype)."""
    out = native_channel_cat(parts)
    return torch.cat(parts, dim=1) if out is None else out


class _ChannelCat(torch.autograd.Function):
    """``torch.cat(parts, dim=1)``; for channels-last parts one row copy per pixel and part
    (:func:`models.native_lif.native_channel_cat`; torch's cat writes these interleaved rows
    about half as fast). The same values; the backward hands each part its channel slice of the
    gradient, as torch's does."""

    @staticmethod
    def forward(ctx, *parts):
        ctx.widths = [p.shape[1] for p in parts]
        return _join_channels(list(parts))

    @staticmethod
    def backward(ctx, grad):
        return tuple(grad.split(ctx.widths, dim=1))


def _inner_bn(norm: nn.Module) -> nn.Module:
    """The BN itself (SpikeRain keeps it under ``.bn`` of a StepBatchNorm2d)."""
    return norm.bn if isinstance(norm, StepBatchNorm2d) else norm


def _mkldnn_conv_add():
    """oneDNN's conv with an in-place sum (``other += conv(x, w)``), as torch's inductor uses
    it; None where this torch build lacks it."""
    try:
        return torch.ops.mkldnn._convolution_pointwise_.binary
    except (AttributeError, RuntimeError):
        return None


_MKLDNN_CONV_ADD = _mkldnn_conv_add() if torch.backends.mkldnn.is_available() else None


def _conv_accumulate(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                     conv: nn.Conv2d) -> None:
    """``out += conv2d(x, weight)`` (no bias, ``conv``'s geometry). On a CPU oneDNN adds the
    product as it writes it (a conv alone costs the same), saving a pass over ``out``;
    elsewhere a conv, then an add."""
    if (_MKLDNN_CONV_ADD is not None and out.device.type == 'cpu'
            and out.dtype in (torch.float32, torch.bfloat16)):
        _MKLDNN_CONV_ADD(out, x, weight, None, list(conv.padding), list(conv.stride),
                         list(conv.dilation), 1, 'add', None, None, [], None)
    else:
        out.add_(F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last if x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)


def _channel_max(x: torch.Tensor) -> torch.Tensor:
    """Channel max by pairwise halving (element-wise, vectorised) where C is a power of two."""
    C = x.shape[1]
    if C & (C - 1):
        return x.amax(dim=1)
    while x.shape[1] > 1:
        half = x.shape[1] // 2
        x = torch.maximum(x[:, :half], x[:, half:])
    return x[:, 0]


class _ChannelMax(torch.autograd.Function):
    """:func:`_channel_max` with a two-pass backward (``(x == max) · grad``) instead of a chain
    of ``torch.maximum`` backwards."""

    @staticmethod
    def forward(ctx, x):
        peak = _channel_max(x)
        ctx.save_for_backward(x, peak)
        return peak

    @staticmethod
    def backward(ctx, grad):
        x, peak = ctx.saved_tensors
        return (x == peak.unsqueeze(1)) * grad.unsqueeze(1)
