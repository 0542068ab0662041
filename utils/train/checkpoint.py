"""Training-state checkpoints: everything needed to continue a run exactly where it stopped.

``model_last.pth`` holds the model (in our weights format, so test.py can load it too), the
optimizer, LR scheduler and AMP scaler states, the position in the data (epoch, batch within the
epoch, optimizer step), every random generator's state, the best validation score and the run's
settings. It is written atomically, so a run killed at any moment leaves the previous complete
file. ``model_best.pth`` holds weights only (see ``models.save_weights``).

One run per run folder: :class:`RunLock` (a :class:`utils.core.lock.FolderLock`) takes an
exclusive ``fcntl.flock`` on ``<run folder>/.train.lock`` for the whole run (the kernel drops it
when the process ends, even on SIGKILL), so a second train.py on the same folder refuses with one
line naming the holder's PID instead of resuming the first run's checkpoint and deleting its save
in progress.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from models import WeightsError, load_weights, save_weights
from models.weights import check_finite, read_checkpoint, save_atomic, weights_checkpoint
from utils.core.atomic import remove_stale_temps
from utils.core.errors import SpikeDerainError
from utils.core.lock import FolderBusy, FolderLock

LAST_NAME = 'model_last.pth'
BEST_NAME = 'model_best.pth'
LOCK_NAME = '.train.lock'
TRAIN_STATE_FORMAT = 'spikederain-train-v1'


class CheckpointError(SpikeDerainError, RuntimeError):
    """A checkpoint that cannot resume this run (not a training state, another model, ...)."""


class RunFolderBusy(FolderBusy, CheckpointError):
    """Another process holds the run folder's lock."""


class RunLock(FolderLock):
    """Exclusive lock on a run folder (:class:`utils.core.lock.FolderLock` on
    ``<run folder>/.train.lock``), held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__(run_dir, name=LOCK_NAME, what='training run',
                         option='another --model_save_dir', busy=RunFolderBusy)
        self.run_dir = self.folder


def capture_rng_state() -> dict:
    """Python, NumPy, torch CPU and (when present) CUDA generator states, as plain tensors/lists.

    NumPy's state is stored as a tensor so the file stays loadable with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {'python': random.getstate(),
             'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)),
                       'pos': int(pos), 'has_gauss': int(has_gauss), 'gauss': float(gauss)},
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    npst = state['numpy']
    np.random.set_state((npst['kind'], npst['keys'].numpy().astype(np.uint32), npst['pos'],
                         npst['has_gauss'], npst['gauss']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        saved = state['cuda']
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)


def save_training_state(path: str | os.PathLike, *, model: nn.Module,
                        optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                        progress: dict, best: dict, config: dict) -> None:
    """Write ``last`` atomically. ``progress``: epoch, epoch_batch, iteration (ints)."""
    state = weights_checkpoint(model)
    state.update(training_format=TRAIN_STATE_FORMAT,
                 optimizer=optimizer.state_dict(),
                 scheduler=scheduler.state_dict(),
                 scaler=scaler.state_dict() if scaler is not None else {},
                 progress={k: int(v) for k, v in progress.items()},
                 best=dict(best), rng=capture_rng_state(), train_config=dict(config))
    save_atomic(state, path)


def load_training_state(path: str | os.PathLike) -> dict:
    """Read a ``last`` checkpoint; a weights-only or foreign file is a :class:`CheckpointError`."""
    try:
        state = read_checkpoint(path)
    except WeightsError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(state, dict) or state.get('training_format') != TRAIN_STATE_FORMAT:
        raise CheckpointError(f'{path}: not a training state (no optimizer/scheduler/progress); '
                              f'--resume needs a {LAST_NAME} written by train.py; to start from '
                              f'these weights, train a new run instead')
    try:
        check_finite(state.get('state_dict') or {}, str(path))
        for index, entry in (state.get('optimizer') or {}).get('state', {}).items():
            check_finite(entry, str(path), what=f'optimizer state of parameter {index},')
    except WeightsError as err:
        raise CheckpointError(f'{err}; resume from an earlier copy or start a new run') from None
    return state


def check_same_model(state: dict, model_name: str, model_config: dict, path: str) -> None:
    """Refuse to resume a checkpoint of another model or architecture (names both)."""
    saved_name = state.get('model_name')
    if saved_name != model_name:
        raise CheckpointError(f'{path}: checkpoint was saved from model {saved_name!r}, but '
                              f'--model is {model_name!r}')
    saved_cfg = state.get('model_config') or {}
    diff = sorted(k for k in set(saved_cfg) | set(model_config)
                  if saved_cfg.get(k) != model_config.get(k))
    if diff:
        shown = ', '.join(f'{k}: {saved_cfg.get(k)!r} vs {model_config.get(k)!r}' for k in diff)
        raise CheckpointError(f'{path}: checkpoint model options differ from this run ({shown})')


# Settings a resumed run must share with the saved one besides the resolved schedule (the saved
# LR schedule and data position only make sense for them); others (workers, val_every, ...) may
# change.
FIXED_KEYS = ('lr', 'min_lr', 'seed', 'batch_size', 'accum_steps')
# Settings a resumed run may change, but the log notes when it does.
NOTED_KEYS = ('train_dir', 'clean_dir', 'rain', 'holdout_family', 'clean_fraction', 'val_dir',
              'val_photos', 'loss', 'grad_clip', 'patch_size', 'augment', 'weight_decay')


def check_same_schedule(saved: dict, schedule: dict, settings: dict, path: str, *,
                        extend: bool = False):
    """Refuse to resume with another schedule or batching (names what differs).

    ``saved``: the checkpoint's ``train_config``; ``schedule`` and ``settings``: this run's
    resolved schedule and settings. Only a longer ``total_iters`` is allowed, and only with
    ``extend`` (--extend): then the saved ``total_iters`` is returned; otherwise ``None``.
    """
    old = {**saved.get('schedule', {}), **{k: saved.get(k) for k in FIXED_KEYS}}
    new = {**schedule, **{k: settings[k] for k in FIXED_KEYS}}
    diff = {k for k in new if old.get(k) != new[k]}
    longer = diff == {'total_iters'} and new['total_iters'] > (old.get('total_iters') or 0)
    if diff and not (longer and extend):
        text = ', '.join(f'{k} {old.get(k)} -> {new[k]}' for k in new if k in diff)
        hint = ('; to lengthen the saved schedule add --extend' if longer else
                '; use the settings of the saved run or start a new one')
        raise CheckpointError(
            f'{path}: cannot resume with a different schedule or batching ({text}){hint}')
    return old['total_iters'] if diff else None


def changed_settings(saved: dict, record: dict) -> list[str]:
    """``'key old -> new'`` for each of :data:`NOTED_KEYS` a resumed run changes."""
    return [f'{k} {saved.get(k)} -> {record[k]}' for k in NOTED_KEYS if saved.get(k) != record[k]]


def restore_training_state(state: dict, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Any, scaler: Any) -> None:
    """Load weights (strictly), optimizer, scheduler, scaler and RNG states in place."""
    load_weights(model, state)
    optimizer.load_state_dict(state['optimizer'])
    scheduler.load_state_dict(state['scheduler'])
    if scaler is not None and state.get('scaler'):
        scaler.load_state_dict(state['scaler'])
    restore_rng_state(state['rng'])


def save_best(model: nn.Module, path: str | os.PathLike, **extra) -> None:
    """Weights only (plus the scores and iteration in ``extra``), written atomically."""
    save_weights(model, path, **extra)


def remove_interrupted_saves(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temp files of saves killed before their rename (``.model_last.pth.XXXXXXXX.tmp``).

    The files they were replacing are intact (writes are atomic); the temps only waste disk,
    a checkpoint's size each time a job is killed mid-save. One process writes a run folder.
    """
    return remove_stale_temps(run_dir, (LAST_NAME, BEST_NAME, 'config.yaml'))


def find_last(run_dir: str | os.PathLike) -> Path | None:
    path = Path(run_dir) / LAST_NAME
    return path if path.is_file() else None
