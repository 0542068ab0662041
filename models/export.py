"""A model as one stock ONNX graph: T steps unrolled, BN folded, neurons as plain tensor maths.

spikingjelly's LIF runs as a registered custom op (``sj_lif::forward``) and VLIF-Net's NI-LIF
through an autograd function; neither has an ONNX form, so :func:`exportable` swaps each neuron
for a stateless twin that computes the same spikes with ordinary ops (compare, multiply, add,
round, clip), in the same order as the reference, so the spikes match bit for bit on the same
inputs. An adaptive max pool to 1x1 becomes a plain max (its ONNX form would fix the input
size). The loop over the T steps is unrolled by tracing (torch's TorchScript-based exporter: the
dynamo one takes minutes for the tiny models). BatchNorm is folded into the conv before it
(:func:`models.acceleration.fold_batchnorm`). The graph's metadata names the model, its config
and, when known, the weights' SHA-256 (:func:`describe`).

The graph takes ``image [1,3,H,W]`` with H and W multiples of the model's ``size_multiple``
(one image: shapes the models compute from the batch size would be fixed by tracing). The
padding (reflect, as :func:`models.base.pad_to_multiple`) and the crop back are the caller's,
because a shape-dependent choice of padding mode does not trace into a graph.
:func:`export_onnx` writes the file (atomically); the ONNX Runtime side is
:mod:`models.onnx_runtime`.
"""
from __future__ import annotations

import copy
import io
import json
import math
import os
import warnings

import torch
import torch.nn as nn
from spikingjelly.activation_based import neuron

from utils.core.atomic import write_bytes_atomic

from .acceleration import fold_batchnorm
from .spiking import NILIF

OPSET = 17
INPUT_NAME, OUTPUT_NAME = 'image', 'restored'
META_PREFIX = 'spikederain.'      # the graph's metadata keys (:func:`describe`)


class ExportLIF(nn.Module):
    """spikingjelly's multi-step LIF (hard or soft reset, with or without input decay) from
    rest, as the reference formulas: ``H = V - (V - reset)/tau + X`` (or with input decay
    ``V + (X - (V - reset))/tau``), ``S = H >= v_th``, then the reset.

    The papers' neuron (reset to 0, no input decay, tau a power of two) is written with fewer
    ops that give the same bits: ``V - 0`` is ``V``, dividing by a power of two is multiplying
    by its inverse, the first step from rest is ``H = X``, and the hard reset to 0 is a select
    (``V = S ? 0 : H``): 6 element-wise ops per step instead of 10, each a pass over the
    membrane in the runtime."""

    def __init__(self, lif: neuron.LIFNode):
        super().__init__()
        self.tau, self.v_th = float(lif.tau), float(lif.v_threshold)
        self.v_reset = None if lif.v_reset is None else float(lif.v_reset)
        self.decay_input = bool(lif.decay_input)
        mantissa, _ = math.frexp(self.tau)
        self.lean = self.v_reset == 0.0 and not self.decay_input and mantissa == 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lean:
            return self._lean(x)
        reset = 0.0 if self.v_reset is None else self.v_reset
        v = reset                            # V starts at rest (a number: no constant image)
        spikes = []
        for x_t in x:                                    # unrolled when traced: T is fixed
            h = v + (x_t - (v - reset)) / self.tau if self.decay_input \
                else v - (v - reset) / self.tau + x_t
            s = (h >= self.v_th).to(x_t.dtype)
            v = h - s * self.v_th if self.v_reset is None else s * reset + (1.0 - s) * h
            spikes.append(s)
        return torch.stack(spikes)

    def _lean(self, x: torch.Tensor) -> torch.Tensor:
        inverse = 1.0 / self.tau                         # exact: tau is a power of two
        v, spikes = None, []
        for x_t in x:
            h = x_t if v is None else (v - v * inverse) + x_t
            fired = h >= self.v_th
            spikes.append(torch.where(fired, 1.0, 0.0).to(x_t.dtype))
            v = torch.where(fired, 0.0, h)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f'tau={self.tau}, v_threshold={self.v_th}, v_reset={self.v_reset}'


class ExportNILIF(nn.Module):
    """:class:`models.spiking.NILIF` without its autograd function: ``u[t] = (u[t-1] -
    s[t-1])·decay + x[t]``, ``s = round(clip(u, 0, L)) / L`` (round half to even, as torch)."""

    def __init__(self, nilif: NILIF):
        super().__init__()
        self.levels, self.decay = int(nilif.levels), float(nilif.decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = []
        u = s = None
        for x_t in x:
            u = x_t if u is None else (u - s) * self.decay + x_t
            s = torch.round(torch.clamp(u, min=0, max=self.levels)) / float(self.levels)
            spikes.append(s)
        return torch.stack(spikes)


class GlobalMax(nn.Module):
    """``nn.AdaptiveMaxPool{2,3}d(1)`` as a max over the trailing dims: torch's ONNX form of
    an adaptive max pool is a MaxPool whose kernel is the traced input's size."""

    def __init__(self, dims: int):
        super().__init__()
        self.dims = tuple(range(-dims, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=self.dims, keepdim=True)


class PaddedForward(nn.Module):
    """The model's ``forward_padded``: what the graph holds (no padding, no state reset; the
    neurons are stateless)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.forward_padded(image)


def _twin(module: nn.Module) -> nn.Module | None:
    if isinstance(module, neuron.LIFNode):
        return ExportLIF(module)
    if isinstance(module, NILIF):
        return ExportNILIF(module)
    if isinstance(module, (nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)) \
            and not module.return_indices:
        dims = 2 if isinstance(module, nn.AdaptiveMaxPool2d) else 3
        size = module.output_size
        if all(v == 1 for v in (size if isinstance(size, tuple) else (size,) * dims)):
            return GlobalMax(dims)
    return None


def exportable(model: nn.Module) -> PaddedForward:
    """A copy of ``model`` ready to trace (eval mode, plain forward, BN folded, every neuron
    swapped for its export twin); the original is untouched. A spiking neuron of another kind
    is a ``ValueError`` naming it."""
    twin = copy.deepcopy(model).eval()
    twin.fast_path = None
    fold_batchnorm(twin)
    swaps = [(parent, name, child) for parent in twin.modules()
             for name, child in parent.named_children()]
    for parent, name, child in swaps:
        new = _twin(child)
        if new is not None:
            setattr(parent, name, new)
        elif isinstance(child, neuron.BaseNode):
            raise ValueError(f'{type(model).__name__}: neuron {name} '
                             f'({type(child).__name__}) has no ONNX form')
    for p in twin.parameters():
        p.requires_grad_(False)
    return PaddedForward(twin)


def example_input(model: nn.Module, height: int = 64, width: int = 96) -> torch.Tensor:
    """A fixed test image (sides rounded up to the model's size multiple) for tracing."""
    m = int(getattr(model, 'size_multiple', 1))
    h, w = -(-height // m) * m, -(-width // m) * m
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, int(getattr(model, 'in_channels', 3)), h, w, generator=gen)


def describe(model: nn.Module, weights_sha256: str | None = None) -> dict[str, str]:
    """The metadata an export carries, so a runtime can tell which model (and weights) it
    holds and how to feed it."""
    meta = {'model': getattr(model, 'model_name', type(model).__name__),
            'config': json.dumps(getattr(model, 'config', {}), sort_keys=True, default=str),
            'T': str(getattr(model, 'T', '')),
            'size_multiple': str(getattr(model, 'size_multiple', 1)),
            'input': f'{INPUT_NAME} [1,C,H,W] in [0,1], H and W multiples of size_multiple '
                     f'(the caller pads, reflect, and crops the output back)'}
    if weights_sha256:
        meta['weights_sha256'] = weights_sha256
    return {f'{META_PREFIX}{k}': v for k, v in meta.items()}


def onnx_bytes(model: nn.Module, opset: int = OPSET, weights_sha256: str | None = None
               ) -> bytes:
    """The ONNX graph of ``model`` (a :class:`~models.base.SpikingRestorer`) as bytes: height
    and width dynamic (batch 1), weights embedded, :func:`describe`'s metadata attached."""
    import onnx
    net = exportable(model)
    buffer = io.BytesIO()
    dynamic = {2: 'height', 3: 'width'}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')      # the tracer's notes on Python-level shape maths
        torch.onnx.export(net, (example_input(model),), buffer, dynamo=False,
                          opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic})
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in describe(model, weights_sha256).items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def graph_summary(data: bytes) -> dict:
    """What a stock runtime needs to know of a graph: its ``opset``, the ``domains`` of its ops
    (``''`` is the standard one; anything else is a custom op) and its ``nodes``. Needs the
    ``onnx`` package; a file it cannot parse is a ``ValueError``."""
    import onnx
    try:
        proto = onnx.load_from_string(data)
    except Exception as err:        # onnx raises protobuf's DecodeError and others
        raise ValueError(f'not an ONNX model: {str(err)[:200]}') from None
    domains = {node.domain or '' for node in proto.graph.node}
    opset = max((o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')),
                default=0)
    return dict(opset=opset, domains=sorted(domains), nodes=len(proto.graph.node))


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = OPSET,
                weights_sha256: str | None = None) -> str:
    """Write ``model``'s ONNX graph to ``path`` atomically (a complete file or none); returns
    the path."""
    return str(write_bytes_atomic(path, onnx_bytes(model, opset, weights_sha256)))
