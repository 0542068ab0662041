"""Fast paths for SpikeRain and ESDNet: same model, same weights, less overhead.

The plain eager forward stays the reference (it matches the official code bit for bit). Most of
its time is not convolution but overhead: spikingjelly's LIF builds each step from ~10 tensor
ops; a dense block re-concatenates and re-encodes its growing feature stack five times;
BatchNorm is a separate pass; NCHW convolutions run ~3x slower than channels-last ones on a CPU.
The fast path removes that overhead:

* ``fused_lif``: a fused, in-place LIF (:mod:`models.fast_lif`, same spikes bit for bit), and in
  SpikeRain's dense blocks every channel is turned into spikes once: the LIF is element-wise and
  starts from rest, so LIF(concat(parts)) == concat(LIF(part)). The spikes go into one buffer
  per block instead of five concatenations (at inference).
* ``channels_last``: every 4-D tensor and weight in channels-last layout. Changes rounding
  (oneDNN accumulates in another order).
* ``fast_attention``: SpikeRain's three attention gates from one set of channel sums, applied
  in one multiply-add. Changes rounding.
* ``patch_embed_once``: the image conv runs once instead of T times (its input is the same image
  at every step); oneDNN may round a batch of 1 and of T a last bit differently.
* ``fold_bn`` (inference only, :func:`optimize_for_inference`): BatchNorm folded into the conv
  before it. Changes rounding.
* ``checkpoint`` (training only, off by default: it saves memory, not time): each block keeps
  only its input and is recomputed during the backward pass; BatchNorm running statistics are
  updated once, in the first pass.

Paths that change rounding flip the few spikes whose potential sits within ~1e-6 of the
threshold; ``tests/test_fast_paths.py`` checks them on a trained model (spike agreement and
restored-image PSNR), the others against the official golden tensors.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint as _checkpoint

from .fast_lif import is_fusable, lif_spikes, lif_spikes_autograd
from .spiking import StepBatchNorm2d


@dataclass(frozen=True)
class FastOptions:
    """Switches of the fast path; see the module docstring for what each one does."""
    fused_lif: bool = True
    channels_last: bool = True
    fast_attention: bool = True
    patch_embed_once: bool = True
    checkpoint: bool = False


# Model class name -> module names of the shared three-level U-Net wiring.
_UNET_NAMES = {
    'SpikeRain': dict(down1='downsample_1_to_2', down2='downsample_2_to_3', up3='upsample_3_to_2',
                      reduce2='reduce_channels_2', up2='upsample_2_to_1'),
    'ESDNet': dict(down1='down1_2', down2='down2_3', up3='up3_2', reduce2='reduce_chan_level2',
                   up2='up2_1'),
}


def supports_fast_path(model: nn.Module) -> bool:
    """SpikeRain and ESDNet with their LIF neurons (an ANN twin has none to fuse)."""
    return (type(model).__name__ in _UNET_NAMES and hasattr(model, 'forward_padded')
            and any(type(m).__name__ == 'LIFNode' for m in model.modules()))


def _check_supported(model: nn.Module) -> None:
    if not supports_fast_path(model):
        raise ValueError(f'no fast path for {type(model).__name__}; supported: '
                         f'{", ".join(sorted(_UNET_NAMES))}')
    bad = [n for n, m in model.named_modules()
           if type(m).__name__ == 'LIFNode' and not is_fusable(m)]
    if bad:
        raise ValueError(f'the fused LIF cannot run these neurons (non-default settings): {bad[:3]}')


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a conv in an ``nn.Sequential``.

    The conv gets ``W·s`` and a bias ``beta - mean·s`` (``s = gamma/sqrt(var+eps)``, computed in
    float64), the BN becomes ``nn.Identity``. Returns the number of folded pairs.
    """
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            bn = norm.bn if isinstance(norm, StepBatchNorm2d) else norm
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
            seq[i + 1] = nn.Identity()
            folded += 1
    return folded


def optimize_for_inference(model: nn.Module, fold_bn: bool = True, **options) -> nn.Module:
    """A fast inference copy of ``model`` (eval mode; the original is untouched).

    ``options`` are :class:`FastOptions` fields (all on by default; ``checkpoint`` is for
    training).
    The copy has the same call signature; with ``fold_bn`` its BatchNorms are gone, so it is
    for inference only (its state dict no longer matches the model's).
    """
    _check_supported(model)
    fast = copy.deepcopy(model).eval()
    if fold_bn:
        fold_batchnorm(fast)
    return _attach(fast, FastOptions(**{**options, 'checkpoint': False}))


def enable_fast_training(model: nn.Module, checkpoint: bool = False, **options) -> nn.Module:
    """Switch ``model`` itself to the fast path (in place; same parameters and state dict).

    Call before building the optimizer or after, the parameters stay the same objects.
    """
    _check_supported(model)
    return _attach(model, FastOptions(**{**options, 'checkpoint': checkpoint}))


def disable_fast_path(model: nn.Module) -> nn.Module:
    """Back to the plain reference forward (weights stay in whatever layout they are)."""
    model.fast_path = None
    return model


def record_spikes(model: nn.Module, img: torch.Tensor
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every LIF layer's spikes for ``img`` (time-flattened ``[T*B,C,H,W]``, by module name),
    and the model's output.

    Works on the plain path (forward hooks) and on a fast path (which has no LIF modules to
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
        for n, m in model.named_modules() if type(m).__name__ == 'LIFNode']
    try:
        return record, model(img)
    finally:
        for h in hooks:
            h.remove()


def fast_options(model: nn.Module) -> FastOptions | None:
    plan = getattr(model, 'fast_path', None)
    return plan.options if plan is not None else None


def _attach(model: nn.Module, options: FastOptions) -> nn.Module:
    if options.channels_last:
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
        return _Runner(model, self.options, record).forward(img)

    def __repr__(self) -> str:
        on = [f.name for f in fields(self.options) if getattr(self.options, f.name)]
        return f'FastPath({", ".join(on) or "nothing"})'


class _Runner:
    """One forward pass of the fast path. Spiking tensors are time-flattened ``[T*B,C,H,W]``."""

    def __init__(self, model: nn.Module, options: FastOptions, record: dict | None = None):
        self.model, self.opts, self.T = model, options, model.T
        self.record = record            # neuron name -> its spikes, for fidelity checks
        self.neuron_names = {m: n for n, m in model.named_modules()} if record is not None else {}
        self.fmt = torch.channels_last if options.channels_last else torch.contiguous_format
        self.grad = torch.is_grad_enabled()
        self.update_stats = True
        self.names = _UNET_NAMES[type(model).__name__]
        lif = next(m for m in model.modules() if type(m).__name__ == 'LIFNode')
        self.v_th, self.alpha = float(lif.v_threshold), float(lif.surrogate_function.alpha)

    # ---- element-wise pieces -----------------------------------------------------------
    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.fmt)

    def steps(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(0, (self.T, x.shape[0] // self.T))

    def lif(self, neuron: nn.Module, x: torch.Tensor, out: torch.Tensor | None = None,
            log: bool = True) -> torch.Tensor:
        """Spikes of ``neuron`` for input ``x`` (written into ``out`` when given)."""
        if not self.opts.fused_lif:
            spikes = self.layout(neuron(self.steps(x)).flatten(0, 1))
        elif self.grad and x.requires_grad:
            spikes = lif_spikes_autograd(x, self.T, self.v_th, self.alpha)
        else:
            spikes = lif_spikes(x, self.T, self.v_th, out)
        if out is not None and spikes is not out:
            spikes = out.copy_(spikes)
        if log:
            self.log(neuron, spikes)
        return spikes

    def log(self, neuron: nn.Module, spikes: torch.Tensor) -> None:
        if self.record is not None:
            self.record[self.neuron_names[neuron]] = spikes.detach().clone()

    def conv(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation,
                        conv.groups)

    def norm(self, y: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        bn = norm.bn if isinstance(norm, StepBatchNorm2d) else norm
        if isinstance(bn, nn.Identity):
            return y
        if bn.training and self.update_stats:
            return bn.super_forward(y)                    # updates the running statistics
        if bn.training:          # checkpoint recompute: same op, statistics updated on copies
            return F.batch_norm(y, bn.running_mean.clone(), bn.running_var.clone(), bn.weight,
                                bn.bias, True, 0.1 if bn.momentum is None else bn.momentum, bn.eps)
        return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0,
                            bn.eps)

    def lif_conv_bn(self, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(self.lif(seq[0], x), seq[1]), seq[2])

    def segment(self, fn, x: torch.Tensor) -> torch.Tensor:
        """``fn(x)``, as a checkpointed segment when training with ``checkpoint``: only ``x``
        is kept, and the recomputation in the backward pass leaves the BN statistics alone."""
        if not (self.grad and self.opts.checkpoint and x.requires_grad):
            return fn(x)
        first = [True]

        def run(inp):
            self.update_stats, first[0] = first[0], False
            try:
                return fn(inp)
            finally:
                self.update_stats = True
        return _checkpoint(run, x, use_reentrant=False)

    # ---- the U-Net ---------------------------------------------------------------------
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        m, n, T = self.model, self.names, self.T
        img_l = self.layout(img)
        if self.opts.patch_embed_once:
            y = self.conv(img_l, m.patch_embed.proj)
            x = self.layout(y.unsqueeze(0).expand(T, *y.shape).flatten(0, 1))
        else:
            x = self.conv(self.layout(img_l.repeat(T, 1, 1, 1)), m.patch_embed.proj)
        down1, down2, up3, reduce2, up2 = (getattr(m, n[k]) for k in
                                            ('down1', 'down2', 'up3', 'reduce2', 'up2'))
        e1 = self.blocks(m.encoder_level1, x)
        e2 = self.segment(lambda t: self.lif_conv_bn(down1.maxpool_conv, t), e1)
        e2 = self.blocks(m.encoder_level2, e2)
        d3 = self.segment(lambda t: self.lif_conv_bn(down2.maxpool_conv, t), e2)
        d3 = self.blocks(m.decoder_level3, self.blocks(m.encoder_level3, d3))
        d2 = torch.cat([self.segment(lambda t: self.up(up3, t), d3), e2], dim=1)
        d2 = self.segment(lambda t: self.lif_conv_bn(reduce2, t), d2)
        d2 = self.blocks(m.decoder_level2, d2)
        d1 = torch.cat([self.segment(lambda t: self.up(up2, t), d2), e1], dim=1)
        d1 = self.blocks(m.decoder_level1, d1)
        if type(m).__name__ == 'SpikeRain':
            fused = m.refinement(m.temporal_fusion(self.steps(d1)))
            return m.output_conv(fused) + img
        return m.output(m.refinement(self.steps(d1).mean(dim=0))) + img

    def up(self, mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
        u = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
        return self.lif_conv_bn(mod.up, self.layout(u))

    def blocks(self, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        block = self.dsrb if type(self.model).__name__ == 'SpikeRain' else self.srb
        for b in seq:
            x = self.segment(lambda inp, b=b: block(b, inp), x)
        return x

    # ---- SpikeRain ---------------------------------------------------------------------
    def dsrb(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Dense block: each channel becomes spikes once (LIF of a concat = concat of LIFs)."""
        if not self.opts.fused_lif:
            return self.layout(block(self.steps(x)).flatten(0, 1))
        lff_lif, lff_conv = block.lff
        neurons = [layer[0] for layer in block.layers] + [lff_lif]
        if self.grad:
            parts = [self.lif(lff_lif, x, log=False)]
            for layer in block.layers:
                inp = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
                y = self.norm(self.conv(inp, layer[1]), layer[2])
                parts.append(self.lif(layer[0], y, log=False))
            spikes = torch.cat(parts, dim=1)
        else:
            N, C, H, W = x.shape
            spikes = torch.empty((N, lff_conv.in_channels, H, W), dtype=x.dtype,
                                 device=x.device, memory_format=self.fmt)
            self.lif(lff_lif, x, out=spikes[:, :C], log=False)
            c = C
            for layer in block.layers:
                y = self.norm(self.conv(self.layout(spikes[:, :c]), layer[1]), layer[2])
                self.lif(layer[0], y, out=spikes[:, c:c + y.shape[1]], log=False)
                c += y.shape[1]
        if self.record is not None:      # dense LIF j saw the first C + 24j channels
            widths = [layer[1].in_channels for layer in block.layers] + [lff_conv.in_channels]
            for neuron, width in zip(neurons, widths):
                self.log(neuron, spikes[:, :width])
        return self.mdsa(block.attn, self.conv(spikes, lff_conv), x)

    def mdsa(self, attn: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``MDSA(z) + x``; the fast version takes its three gates from one set of sums."""
        if not self.opts.fast_attention:
            return self.layout((attn(self.steps(z)) + self.steps(x)).flatten(0, 1))
        T, (N, C, H, W) = self.T, z.shape
        B = N // T
        chan_sum = z.sum(dim=(2, 3)).view(T, B, C).sum(dim=0)          # [B,C]
        chan_mean = chan_sum / (T * H * W)
        tfc, cfc = attn.temporal_fc[1], attn.channel_fc
        g_t = torch.sigmoid(chan_mean.mean(dim=1, keepdim=True) * tfc.weight.view(1, 1)
                            + tfc.bias.view(1, 1))                      # [B,1]
        h = F.relu(F.linear(g_t * chan_mean, cfc[1].weight.flatten(1), cfc[1].bias))
        g_c = torch.sigmoid(F.linear(h, cfc[3].weight.flatten(1), cfc[3].bias))
        scale = g_t * g_c                                              # [B,C]
        # mean over C of z·scale, per pixel: a [pixels, C] x [C] product in channels-last
        pix = torch.matmul(self.steps(z).permute(0, 1, 3, 4, 2).flatten(2, 3),
                           scale.view(1, B, C, 1) / C)                # [T,B,HW,1]
        sconv = attn.spatial_conv[0]
        g_s = torch.sigmoid(F.conv2d(pix.reshape(N, 1, H, W), sconv.weight.view(1, 1, 3, 3),
                                     sconv.bias, padding=1))           # [N,1,H,W]
        return torch.addcmul(x, z * g_s, scale.repeat(T, 1).view(N, C, 1, 1))

    # ---- ESDNet ------------------------------------------------------------------------
    def srb(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        r, sc = block.residual, block.shortcut
        a = self.norm(self.conv(self.lif(r[0], x), r[1]), r[2])
        a = self.norm(self.conv(self.lif(r[3], a), r[4]), r[5])
        u = a + self.norm(self.conv(x, sc[0]), sc[1])
        return self.layout((block.attn(self.steps(u)) + self.steps(x)).flatten(0, 1))
