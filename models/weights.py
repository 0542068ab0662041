"""Loading weights: our checkpoints and the official SpikeRain / ESDNet / VLIF-Net files.

Loading is strict. A mismatch raises :class:`WeightsError` with one message that lists the
missing, unexpected and mis-shaped keys and says what the checkpoint looks like, so a wrong
``--model`` for a file is obvious.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from typing import Any, Mapping

import torch
import torch.nn as nn

# Keys under which training scripts (ours, the official repos, BasicSR) nest the weights.
_NESTING_KEYS = ('state_dict', 'params_ema', 'params', 'model_state_dict', 'model', 'net',
                 'network')
# Prefixes added by wrappers: DataParallel/DDP and torch.compile.
_WRAPPER_PREFIXES = ('module.', '_orig_mod.')


class WeightsError(RuntimeError):
    """A checkpoint that cannot be read, or whose tensors do not fit the model."""


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``; a clear error for bad files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f'{path}: checkpoint file not found')
    if os.path.getsize(path) == 0:
        raise WeightsError(f'{path}: checkpoint file is empty (0 bytes)')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError,
            AttributeError, ImportError, IndexError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f'{path}: not a readable PyTorch checkpoint (truncated, corrupt or '
                           f'not a .pth file?): {first[:200]}') from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj: Any, source: str = 'checkpoint') -> 'OrderedDict[str, torch.Tensor]':
    """Find the state dict inside a checkpoint object and strip wrapper prefixes."""
    sd = obj
    for _ in range(3):               # {'state_dict': {...}} or {'model': {'state_dict': ...}}
        if _is_state_dict(sd):
            break
        if isinstance(sd, Mapping):
            inner = next((sd[k] for k in _NESTING_KEYS if k in sd and isinstance(sd[k], Mapping)),
                         None)
            if inner is not None:
                sd = inner
                continue
        break
    if not _is_state_dict(sd):
        keys = list(obj.keys())[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsError(f'{source}: no state dict found (top-level entries: {keys}); '
                           f'expected tensors, or a dict with one of {list(_NESTING_KEYS)}')
    out = OrderedDict()
    for key, value in sd.items():
        for prefix in _WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def describe_state_dict(sd: Mapping[str, torch.Tensor]) -> str:
    """One line that says what a checkpoint looks like (for error messages)."""
    tops = list(OrderedDict.fromkeys(k.split('.')[0] for k in sd))
    n_params = sum(v.numel() for k, v in sd.items()
                   if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked')))
    first = next(iter(sd.items()))
    shown = ', '.join(tops[:10]) + (', ...' if len(tops) > 10 else '')
    return (f'{len(sd)} tensors, {n_params:,} parameters, top-level modules [{shown}], '
            f'first tensor {first[0]} {list(first[1].shape)}')


def _fmt(keys, limit=6) -> str:
    keys = list(keys)
    return ', '.join(keys[:limit]) + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def load_weights(model: nn.Module, src: Any, strict: bool = True,
                 source: str | None = None) -> nn.Module:
    """Load ``src`` (a path, a checkpoint dict, or a state dict) into ``model``, strictly.

    Accepts our checkpoints, official state dicts, ``{'state_dict': ...}``/``{'params': ...}``
    wrappers and ``module.`` prefixes. A model may define ``convert_official_state_dict(sd)``
    to rename official keys. Tensors stored in another dtype (e.g. fp16) are cast to the
    model's. ``source`` names an already-read ``src`` in error messages (default: its path).
    Returns the model.
    """
    if source is None:
        source = os.fspath(src) if isinstance(src, (str, os.PathLike)) else 'state dict'
    obj = read_checkpoint(src) if isinstance(src, (str, os.PathLike)) else src
    sd = extract_state_dict(obj, source)
    convert = getattr(model, 'convert_official_state_dict', None)
    if callable(convert):
        sd = convert(sd)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    misshaped = [f'{k} {list(sd[k].shape)} vs model {list(own[k].shape)}'
                 for k in own if k in sd and sd[k].shape != own[k].shape]
    if misshaped or (strict and (missing or unexpected)):
        name = getattr(model, 'model_name', type(model).__name__)
        parts = [f'{source}: weights do not fit model {name!r}']
        if missing:
            parts.append(f'missing {len(missing)} keys: {_fmt(missing)}')
        if unexpected:
            parts.append(f'unexpected {len(unexpected)} keys: {_fmt(unexpected)}')
        if misshaped:
            parts.append(f'{len(misshaped)} mis-shaped: {_fmt(misshaped, 4)}')
        hint = ''
        if isinstance(obj, Mapping) and isinstance(obj.get('model_name'), str):
            hint = f"; the checkpoint says it is {obj['model_name']!r}"
        parts.append(f'checkpoint has {describe_state_dict(sd)}{hint}')
        raise WeightsError('; '.join(parts))
    model.load_state_dict(sd, strict=strict)
    return model


CHECKPOINT_FORMAT = 'spikederain-weights-v1'


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never a partial file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp',
                               dir=folder)
    try:
        with os.fdopen(fd, 'wb') as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def weights_checkpoint(model: nn.Module, half: bool = False, **extra) -> dict:
    """Our weights-only checkpoint: the state dict plus the model's registry name and config.

    ``half=True`` stores floating tensors as fp16 (loading casts them back to the model dtype).
    """
    sd = OrderedDict((k, v.detach().cpu().half() if half and v.is_floating_point() else
                      v.detach().cpu()) for k, v in model.state_dict().items())
    return {'format': CHECKPOINT_FORMAT, 'model_name': getattr(model, 'model_name', None),
            'model_config': dict(getattr(model, 'config', {})), 'state_dict': sd, **extra}


def save_weights(model: nn.Module, path: str | os.PathLike, half: bool = False, **extra) -> None:
    """Write :func:`weights_checkpoint` atomically."""
    save_atomic(weights_checkpoint(model, half=half, **extra), path)
