"""Loading weights: our checkpoints and the official SpikeRain / ESDNet / VLIF-Net files.

Loading is strict. A mismatch raises :class:`WeightsError` with one message that lists the
missing, unexpected and mis-shaped keys and says what the checkpoint looks like, so a wrong
``--model`` for a file is obvious. Our checkpoints (:func:`weights_checkpoint`) record the
model's registry name and config beside its tensors; :func:`build_from_checkpoint` reads them
back, checks them against the tensors and builds and loads the model, so the checkpoint format
is written and read in this one module.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any
from collections.abc import Mapping

import torch
import torch.nn as nn

from utils.core.atomic import write_bytes_atomic
from utils.core.errors import SpikeDerainError

from .registry import available_models, build_model, model_config

# Keys under which training scripts (ours, the official repos, BasicSR) nest the weights.
_NESTING_KEYS = ('state_dict', 'params_ema', 'params', 'model_state_dict', 'model', 'net',
                 'network')
# Prefixes added by wrappers: DataParallel/DDP and torch.compile.
_WRAPPER_PREFIXES = ('module.', '_orig_mod.')


class WeightsError(SpikeDerainError, RuntimeError):
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


def extract_state_dict(obj: Any, source: str = 'checkpoint') -> OrderedDict[str, torch.Tensor]:
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


def check_finite(tensors: Mapping[str, Any], source: str, what: str = 'tensor') -> None:
    """:class:`WeightsError` naming the first floating tensor with NaN or infinite values.

    Weights are checked when loaded, when saved and (in training) after each validation:
    non-finite weights restore every image to black or noise, and a checkpoint holding them
    is not a "last good" one.
    """
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise WeightsError(f'{source}: {what} {key} has {bad:,} non-finite (NaN/inf) '
                                   f'value(s) of {value.numel():,} (weights of a diverged run?)')


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
    check_finite(sd, source)
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
    """``torch.save`` ``obj`` to ``path``, complete or not at all (:mod:`utils.core.atomic`).

    The object is serialised in memory first, so a failed write (no space left, read-only, a
    file-size limit) is an ``OSError`` naming ``path`` -- torch.save writing to a full disk
    reports only "unexpected pos" -- that says whether the previous file is intact.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getbuffer())


def weights_checkpoint(model: nn.Module, half: bool = False, **extra) -> dict:
    """Our weights-only checkpoint: the state dict plus the model's registry name and config.

    ``half=True`` stores floating tensors as fp16 (loading casts them back to the model dtype).
    """
    sd = OrderedDict((k, v.detach().cpu().half() if half and v.is_floating_point() else
                      v.detach().cpu()) for k, v in model.state_dict().items())
    name = getattr(model, 'model_name', type(model).__name__)
    check_finite(sd, f'refusing to save {name}')     # fp16 overflow shows up here too
    return {'format': CHECKPOINT_FORMAT, 'model_name': getattr(model, 'model_name', None),
            'model_config': dict(getattr(model, 'config', {})), 'state_dict': sd, **extra}


def save_weights(model: nn.Module, path: str | os.PathLike, half: bool = False, **extra) -> None:
    """Write :func:`weights_checkpoint` atomically."""
    save_atomic(weights_checkpoint(model, half=half, **extra), path)


def check_config_fits(build: Any, name: str, config: Mapping[str, Any], obj: Any,
                      source: str, defaults: Mapping[str, Any] | None = None) -> None:
    """Before building ``name(**config)`` for a checkpoint, check its tensors' shapes fit it.

    A small file whose stored config asks for an enormous model would otherwise allocate
    gigabytes before the strict load fails. The model is built on the ``meta`` device (no
    memory), and the shapes are compared; a config equal to the registry defaults (``defaults``)
    skips the check (the default model's size is known and the strict load checks it).
    """
    if defaults is not None and dict(config) == dict(defaults):
        return
    sd = extract_state_dict(obj, source)
    try:
        with torch.device('meta'):
            meta = build(name, **config)
    except Exception as err:                       # noqa: BLE001 - a config the model rejects
        raise WeightsError(f'{source}: the stored model_config cannot build {name!r} '
                           f'({type(err).__name__}: {str(err)[:200]})') from None
    convert = getattr(meta, 'convert_official_state_dict', None)
    if callable(convert):
        sd = convert(sd)
    own = meta.state_dict()
    misshaped = [f'{k} {list(sd[k].shape)} vs config {list(own[k].shape)}'
                 for k in own if k in sd and sd[k].shape != own[k].shape]
    missing = [k for k in own if k not in sd]
    if misshaped or missing:
        need = sum(v.numel() for v in own.values())
        have = sum(v.numel() for v in sd.values())
        parts = [f'{len(misshaped)} mis-shaped: {_fmt(misshaped, 3)}'] if misshaped else []
        if missing:
            parts.append(f'missing {len(missing)} keys: {_fmt(missing, 3)}')
        raise WeightsError(f'{source}: the stored model_config does not match its tensors (it '
                           f'asks for {need:,} values, the file holds {have:,}; '
                           f'{"; ".join(parts)}); the checkpoint is inconsistent')


def build_from_checkpoint(src, name: str | None = None, **overrides) -> nn.Module:
    """Build the model a checkpoint was saved from and load it (strictly).

    Our checkpoints record ``model_name`` and ``model_config``; official ones do not, so
    ``name`` is required for them. If both are given and disagree, the checkpoint's config wins
    only for the architecture kwargs; a different name is an error that names both.
    """
    obj = read_checkpoint(src) if not isinstance(src, dict) else src
    saved_name = obj.get('model_name') if isinstance(obj, dict) else None
    saved_cfg = obj.get('model_config') if isinstance(obj, dict) else None
    label = str(src) if not isinstance(src, dict) else 'checkpoint'
    if name is None and saved_name is None:
        sd = extract_state_dict(obj, label)
        raise WeightsError(f'{label}: the checkpoint does not say which model it is; pass --model '
                           f'(one of {", ".join(available_models())}); it has '
                           f'{describe_state_dict(sd)}')
    if name is not None and saved_name is not None and name != saved_name:
        raise WeightsError(f'{label}: checkpoint was saved from model {saved_name!r}, '
                           f'but {name!r} was requested')
    cfg = {**(saved_cfg or {}), **overrides} if saved_name is not None else overrides
    if saved_cfg:                    # a stored config must fit the stored tensors (issue 15)
        check_config_fits(build_model, name or saved_name, cfg, obj, label,
                          defaults=model_config(name or saved_name))
    model = build_model(name or saved_name, **cfg)
    load_weights(model, obj if isinstance(obj, dict) else src, source=label)
    return model
