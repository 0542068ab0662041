"""The exported graph run by ONNX Runtime or OpenVINO behind the same call as the torch model.

:class:`OnnxRestorer` loads a ``.onnx`` written by :mod:`models.export` (ONNX Runtime fp32, or
OpenVINO fp32 or bf16) and is called like a
:class:`~models.base.SpikingRestorer` (``[B,3,H,W] -> [B,3,H,W]``, any H and W): it pads each
image to the model's size multiple (the graph takes padded images, one at a time), runs the
session and crops back, so :func:`utils.inference.restore.restore`, tiling and test.py's outputs
work unchanged. :func:`cached_export` exports on the fly into a cache keyed by the weights' hash,
the model's config and the export's format, so a file is made once per weights.
:func:`compare_with_torch` is the export's self-check (PSNR against the exact torch path).

onnx, onnxruntime and openvino come from ``requirements-deploy.txt``; without the runtime's
package its entry point raises one line saying so.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from utils.core.errors import SpikeDerainError

from .base import pad_to_multiple
from .export import INPUT_NAME, META_PREFIX, OPSET, example_input, export_onnx

CACHE_ENV = 'SPIKEDERAIN_CACHE'
# Bumped when the exported graph changes for the same weights (the cache key includes it).
EXPORT_FORMAT = 2
INSTALL_HINT = 'pip install -r requirements-deploy.txt'


class OnnxError(SpikeDerainError, RuntimeError):
    """A missing, unreadable or mismatched ``.onnx``, or no ONNX Runtime installed."""


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise OnnxError(f'the onnxruntime backend needs the package onnxruntime ({INSTALL_HINT})'
                        ) from None
    return onnxruntime


def session(source: str | os.PathLike | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session for a file or the bytes of a graph (``threads``: intra-op
    threads, default torch's count, so ``OMP_NUM_THREADS`` limits both backends alike)."""
    ort = _ort()
    what, source = _source(source)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3                   # errors only: no optimiser chatter
    try:
        return ort.InferenceSession(source, options, providers=['CPUExecutionProvider'])
    except Exception as err:        # ORT raises its own classes (InvalidProtobuf, Fail, ...)
        raise OnnxError(f'{what}: not a loadable ONNX model (truncated or corrupt?): '
                        f'{_first_line(err)}') from None


def openvino_model(source: str | os.PathLike | bytes, threads: int | None = None,
                   precision: str = 'fp32'):
    """The graph compiled by OpenVINO for the CPU, in ``precision`` (``fp32``, or ``bf16``
    where the CPU computes it natively: OpenVINO's own choice on such CPUs, so fp32 is asked
    for explicitly)."""
    try:
        import openvino as ov
    except ImportError:
        raise OnnxError(f'the openvino backend needs the package openvino ({INSTALL_HINT})'
                        ) from None
    what, source = _source(source)
    core = ov.Core()
    if precision not in PRECISIONS['openvino']:
        raise OnnxError(f'precision {precision!r}: OpenVINO runs '
                        f'{", ".join(PRECISIONS["openvino"])}')
    bf16 = precision.endswith('bf16')
    if bf16 and 'BF16' not in core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'):
        raise OnnxError(f'precision {precision}: OpenVINO reports no native bfloat16 on this CPU')
    try:
        graph = core.read_model(source) if isinstance(source, str) else \
            core.read_model(source, b'')
        return core.compile_model(graph, 'CPU', {
            'INFERENCE_PRECISION_HINT': 'bf16' if bf16 else 'f32',
            'INFERENCE_NUM_THREADS': int(threads or torch.get_num_threads()),
            'NUM_STREAMS': 1})
    except Exception as err:        # OpenVINO raises RuntimeError with a long report
        raise OnnxError(f'{what}: OpenVINO cannot load it: {_first_line(err)}') from None


# What each runtime runs. int8: the convs whose inputs are spikes in int8, the rest in fp32
# (int8+bf16: the rest in bfloat16); see models/quantize.py.
PRECISIONS = {'onnxruntime': ('fp32', 'int8'), 'openvino': ('fp32', 'bf16', 'int8', 'int8+bf16')}
RUNTIMES = tuple(PRECISIONS)


def _source(source) -> tuple[str | Path, str | bytes]:
    if isinstance(source, bytes):
        return 'the exported graph', source
    path = Path(source)
    if not path.is_file():
        raise OnnxError(f'{path}: ONNX file not found')
    return path, str(path)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _graph_facts(source) -> tuple[str, list, dict]:
    """The graph's input name and shape and its metadata, read with the onnx package."""
    import onnx
    what, src = _source(source)
    try:
        proto = onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(src)
    except Exception as err:        # protobuf's DecodeError and others
        raise OnnxError(f'{what}: not a loadable ONNX model (truncated or corrupt?): '
                        f'{_first_line(err)}') from None
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        return '', [], {}
    dims = [d.dim_value or d.dim_param for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims, {p.key: p.value for p in proto.metadata_props}


def check_origin(what, meta: dict, model_name: str, config: dict,
                 weights_sha256: str | None = None) -> None:
    """The graph's metadata (:func:`models.export.describe`) names the model, config and
    weights it was exported from: another model's or weights' export is refused."""
    name, recorded = meta.get(META_PREFIX + 'model'), meta.get(META_PREFIX + 'config')
    mine = json.dumps(config, sort_keys=True, default=str)
    if name is None or recorded is None:
        raise OnnxError(f'{what}: no record of the model it holds (not written by '
                        f'tools/export_onnx.py?); export it again')
    if name != model_name or recorded != mine:
        raise OnnxError(f'{what}: an export of {name} {recorded}, not of {model_name} {mine}; '
                        f'export these weights again')
    sha = meta.get(META_PREFIX + 'weights_sha256')
    if weights_sha256 and sha and sha != weights_sha256:
        raise OnnxError(f'{what}: exported from other weights (sha256 {sha[:12]}, these are '
                        f'{weights_sha256[:12]}); export these weights again')


class OnnxRestorer(nn.Module):
    """The exported model behind a torch call: pads, runs ONNX Runtime (or OpenVINO), crops.

    It carries the torch model's ``model_name``, ``config``, ``T``, ``size_multiple`` and
    ``in_channels`` (for the output record and the memory estimates) and checks the graph's
    input and metadata against them. ``runtime``: ``onnxruntime`` (fp32) or ``openvino``
    (``precision`` fp32 or bf16). ``device_anchor`` is an empty parameter: callers find the
    device (always the CPU) through ``parameters()``.
    """

    def __init__(self, source: str | os.PathLike | bytes, model: nn.Module,
                 threads: int | None = None, weights_sha256: str | None = None,
                 runtime: str = 'onnxruntime', precision: str = 'fp32'):
        super().__init__()
        if runtime not in RUNTIMES:
            raise OnnxError(f'runtime {runtime!r}: choose one of {", ".join(RUNTIMES)}')
        if precision not in PRECISIONS[runtime]:
            raise OnnxError(f'precision {precision}: the {runtime} backend runs '
                            f'{", ".join(PRECISIONS[runtime])}')
        self.backend, self.precision = runtime, precision
        self.path = 'the exported graph' if isinstance(source, bytes) else Path(source)
        self.model_name = getattr(model, 'model_name', type(model).__name__)
        self.family = type(model).__name__          # for memory estimates scaled by family
        self.config = dict(getattr(model, 'config', {}))
        self.T = getattr(model, 'T', None)
        self.size_multiple = int(getattr(model, 'size_multiple', 1))
        self.in_channels = int(getattr(model, 'in_channels', 3))
        self.device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        name, shape, meta = _graph_facts(source)
        if name != INPUT_NAME or len(shape) != 4 or shape[1] != self.in_channels:
            raise OnnxError(f'{self.path}: its input {name} {shape} is not an image '
                            f'[1,{self.in_channels},H,W] of a {self.model_name} export')
        check_origin(self.path, meta, self.model_name, self.config, weights_sha256)
        source = self._with_precision(source, meta, model, precision)
        if runtime == 'onnxruntime':
            ort_session = session(source, threads)
            self._run = lambda x: ort_session.run(None, {INPUT_NAME: x})[0]
        else:
            compiled = openvino_model(source, threads, precision)
            self._run = lambda x: compiled(x)[0]

    def _with_precision(self, source, meta: dict, model: nn.Module, precision: str):
        """The graph to run: an int8 file as it is, an fp32 one as it is or quantised now
        (:func:`models.quantize.quantize_int8`, calibrated on the export's test image)."""
        stored = meta.get(META_PREFIX + 'precision', 'fp32')
        wants_int8 = precision.startswith('int8')
        if stored == 'int8' and not wants_int8:
            raise OnnxError(f'{self.path}: an int8 export; run it with precision int8')
        if stored == 'int8' or not wants_int8:
            return source
        from .quantize import quantize_int8
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        return quantize_int8(data, example_input(model).numpy())

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() != 4 or img.shape[1] != self.in_channels:
            raise ValueError(f'{self.model_name} ({self.backend}) expects images shaped '
                             f'[B,{self.in_channels},H,W], got {list(img.shape)}')
        h, w = img.shape[-2:]
        outs = []
        for one in img.detach().float().cpu():                # the graph's batch is 1
            padded = pad_to_multiple(one.unsqueeze(0), self.size_multiple)
            out = self._run(np.ascontiguousarray(padded.numpy()))
            outs.append(torch.from_numpy(np.array(out))[..., :h, :w])
        return torch.cat(outs).to(img.device)

    def extra_repr(self) -> str:
        return f'{self.model_name}, {self.path}, {self.backend} {self.precision}'


def cache_dir() -> Path:
    """``$SPIKEDERAIN_CACHE/onnx``, else ``$XDG_CACHE_HOME/spikederain/onnx``, else
    ``~/.cache/spikederain/onnx``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
        root = Path(base) / 'spikederain'
    return Path(root) / 'onnx'


def cache_key(model: nn.Module, weights_sha256: str) -> str:
    """What decides the exported graph: the weights, the model and its config, the export's
    format and opset, and torch's version (its exporter)."""
    recipe = json.dumps(dict(weights=weights_sha256, model=getattr(model, 'model_name', None),
                             config=getattr(model, 'config', {}), format=EXPORT_FORMAT,
                             opset=OPSET, torch=torch.__version__),
                        sort_keys=True, default=str)
    return hashlib.sha256(recipe.encode()).hexdigest()[:20]


def cached_export(model: nn.Module, weights_sha256: str, folder: str | os.PathLike | None = None,
                  threads: int | None = None, report=None, runtime: str = 'onnxruntime',
                  precision: str = 'fp32') -> OnnxRestorer:
    """``model`` run by ``runtime`` (:class:`OnnxRestorer`) from its export in the cache
    (``folder``, default :func:`cache_dir`), exported now if it is not there or is not a
    sound export of these weights (``report`` is told, one line)."""
    folder = Path(folder) if folder is not None else cache_dir()
    name = getattr(model, 'model_name', type(model).__name__)
    path = folder / f'{name}-{cache_key(model, weights_sha256)}.onnx'
    try:
        _, _, meta = _graph_facts(path)
        check_origin(path, meta, name, dict(getattr(model, 'config', {})), weights_sha256)
    except OnnxError:                  # not there, or damaged: export (again)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OnnxError(f'{folder}: cannot create the ONNX cache ({err.strerror}); set '
                            f'{CACHE_ENV} to a writable folder') from None
        if report is not None:
            report(f'exporting {name} to ONNX (once for these weights): {path}')
        export_onnx(model, path, weights_sha256=weights_sha256)
    return OnnxRestorer(path, model, threads, weights_sha256, runtime, precision)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB, peak 1) between two images in [0, 1] after clamping; ``inf`` when equal."""
    mse = float(torch.mean((a.clamp(0, 1).double() - b.clamp(0, 1).double()) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@torch.no_grad()
def compare_with_torch(model: nn.Module, onnx_model: OnnxRestorer, images: list[torch.Tensor]
                       ) -> list[float]:
    """PSNR of ONNX Runtime's output against the torch model's exact (plain) forward, per
    image (``[1,3,H,W]`` in [0, 1])."""
    from .acceleration import plain_forward
    scores = []
    with plain_forward(model):
        for img in images:
            scores.append(psnr(model(img), onnx_model(img)))
    return scores
