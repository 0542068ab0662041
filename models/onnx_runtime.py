"""A model run by ONNX Runtime: the exported graph behind the same call as the torch model.

:class:`OnnxRestorer` loads a ``.onnx`` written by :mod:`models.export` and is called like a
:class:`~models.base.SpikingRestorer` (``[B,3,H,W] -> [B,3,H,W]``, any H and W): it pads each
image to the model's size multiple (the graph takes padded images, one at a time), runs the
session and crops back, so :func:`utils.inference.restore.restore`, tiling and test.py's outputs
work unchanged. :func:`cached_export` exports on the fly into a cache keyed by the weights' hash,
the model's config and the export's format, so a file is made once per weights.
:func:`compare_with_torch` is the export's self-check (PSNR against the exact torch path).

onnx and onnxruntime come from ``requirements-deploy.txt``; without them every entry point
raises one line saying so.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
import torch.nn as nn

from utils.core.errors import SpikeDerainError

from .base import pad_to_multiple
from .export import INPUT_NAME, META_PREFIX, OPSET, export_onnx

CACHE_ENV = 'SPIKEDERAIN_CACHE'
# Bumped when the exported graph changes for the same weights (the cache key includes it).
EXPORT_FORMAT = 1
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
    what = 'the exported graph' if isinstance(source, bytes) else Path(source)
    if not isinstance(source, bytes):
        if not what.is_file():
            raise OnnxError(f'{what}: ONNX file not found')
        source = str(what)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3                   # errors only: no optimiser chatter
    try:
        return ort.InferenceSession(source, options, providers=['CPUExecutionProvider'])
    except Exception as err:        # ORT raises its own classes (InvalidProtobuf, Fail, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise OnnxError(f'{what}: not a loadable ONNX model (truncated or corrupt?): '
                        f'{first[:200]}') from None


class OnnxRestorer(nn.Module):
    """The exported model behind a torch call: pads, runs ONNX Runtime, crops.

    It carries the torch model's ``model_name``, ``config``, ``T``, ``size_multiple`` and
    ``in_channels`` (for the output record and the memory estimates) and checks the graph's
    input against them. ``device_anchor`` is an empty parameter: callers find the device
    (always the CPU) through ``parameters()``.
    """

    backend = 'onnxruntime'

    def __init__(self, source: str | os.PathLike | bytes, model: nn.Module,
                 threads: int | None = None, weights_sha256: str | None = None):
        super().__init__()
        self.path = 'the exported graph' if isinstance(source, bytes) else Path(source)
        self.session = session(source, threads)
        self.model_name = getattr(model, 'model_name', type(model).__name__)
        self.config = dict(getattr(model, 'config', {}))
        self.T = getattr(model, 'T', None)
        self.size_multiple = int(getattr(model, 'size_multiple', 1))
        self.in_channels = int(getattr(model, 'in_channels', 3))
        self.device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        inputs = self.session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        if inputs[0].name != INPUT_NAME or shape is None or len(shape) != 4 \
                or shape[1] != self.in_channels:
            raise OnnxError(f'{self.path}: its input {inputs[0].name} {shape} is not an image '
                            f'[1,{self.in_channels},H,W] of a {self.model_name} export')
        self._check_origin(weights_sha256)

    def _check_origin(self, weights_sha256: str | None) -> None:
        """The graph's metadata (:func:`models.export.describe`) names the model, config and
        weights it was exported from: another model's or weights' export is refused."""
        meta = self.session.get_modelmeta().custom_metadata_map
        name, config = meta.get(META_PREFIX + 'model'), meta.get(META_PREFIX + 'config')
        mine = json.dumps(self.config, sort_keys=True, default=str)
        if name is None or config is None:
            raise OnnxError(f'{self.path}: no record of the model it holds (not written by '
                            f'tools/export_onnx.py?); export it again')
        if name != self.model_name or config != mine:
            raise OnnxError(f'{self.path}: an export of {name} {config}, not of '
                            f'{self.model_name} {mine}; export these weights again')
        sha = meta.get(META_PREFIX + 'weights_sha256')
        if weights_sha256 and sha and sha != weights_sha256:
            raise OnnxError(f'{self.path}: exported from other weights (sha256 {sha[:12]}, '
                            f'these are {weights_sha256[:12]}); export these weights again')

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() != 4 or img.shape[1] != self.in_channels:
            raise ValueError(f'{self.model_name} (onnxruntime) expects images shaped '
                             f'[B,{self.in_channels},H,W], got {list(img.shape)}')
        h, w = img.shape[-2:]
        outs = []
        for one in img.detach().float().cpu():                # the graph's batch is 1
            padded = pad_to_multiple(one.unsqueeze(0), self.size_multiple)
            out = self.session.run(None, {INPUT_NAME: padded.contiguous().numpy()})[0]
            outs.append(torch.from_numpy(out)[..., :h, :w])
        return torch.cat(outs).to(img.device)

    def extra_repr(self) -> str:
        return f'{self.model_name}, {self.path}'


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
                  threads: int | None = None, report=None) -> OnnxRestorer:
    """``model`` run by ONNX Runtime from its export in the cache (``folder``, default
    :func:`cache_dir`), exported now if it is not there or does not load (``report`` is told,
    one line)."""
    _ort()
    folder = Path(folder) if folder is not None else cache_dir()
    name = getattr(model, 'model_name', type(model).__name__)
    path = folder / f'{name}-{cache_key(model, weights_sha256)}.onnx'
    if path.is_file():
        try:
            return OnnxRestorer(path, model, threads, weights_sha256)
        except OnnxError:
            pass                                        # a damaged cache entry: export again
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OnnxError(f'{folder}: cannot create the ONNX cache ({err.strerror}); set '
                        f'{CACHE_ENV} to a writable folder') from None
    if report is not None:
        report(f'exporting {name} to ONNX (once for these weights): {path}')
    export_onnx(model, path, weights_sha256=weights_sha256)
    return OnnxRestorer(path, model, threads, weights_sha256)


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
