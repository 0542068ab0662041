"""The run folder (``--model_save_dir``): checked, locked, and the files train.py keeps there.

The folder may not be, or lie inside, a folder the run reads. One run per folder: the main process
holds its :class:`~utils.train.checkpoint.RunLock` from the start until ``fit()`` ends. Besides the
checkpoints it holds ``config.yaml`` (every setting, usable as ``--config``) and ``schedule.yaml``
(the schedule and every ``--extend``, for readers).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import yaml

from utils.core.atomic import write_text_atomic
from utils.core.paths import check_writes, split_folders
from utils.train import checkpoint as ckpt
from utils.train.config import ConfigError, TrainConfig
from utils.train.plan import RunPaths, TrainPlan


def write_yaml_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def check_run_dir(paths: RunPaths) -> None:
    """The run folder may not be, or lie inside, a folder the run reads."""
    reads = []
    for option, folder in paths.reads():
        reads.append((option, folder))
        reads += [(f'{option} {f.name}/ folder', f) for f in split_folders(folder)]
    try:
        check_writes([('--model_save_dir', paths.run_dir)], reads)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def run_settings(cfg: TrainConfig, plan: TrainPlan) -> dict:
    """What ``config.yaml`` holds: the run's options with folders and per-process batch resolved,
    usable as ``--config``."""
    data, paths = asdict(cfg), plan.paths
    data.update(train_dir=str(paths.train_dir) if paths.train_dir else None,
                clean_dir=str(paths.clean_dir) if paths.clean_dir else None,
                val_dir=str(paths.val_dir) if paths.val_dir else None,
                val_photos=str(paths.val_photos) if paths.val_photos else None,
                model_save_dir=str(paths.run_dir), batch_size=plan.batch_size,
                stop_after=None, extend=False)
    return data


def schedule_history(plan: TrainPlan, cfg: TrainConfig, extensions: list[dict]) -> dict:
    """What ``schedule.yaml`` holds: the schedule and every --extend."""
    return dict(total_iters=plan.total_iters, warmup_iters=plan.warmup_iters,
                lr=cfg.lr, min_lr=cfg.min_lr, extensions=[dict(e) for e in extensions])


class RunFolder:
    """A run's folder, checked on creation; only the main process (``main``) locks or writes it."""

    def __init__(self, paths: RunPaths, main: bool = True):
        check_run_dir(paths)
        self.path = paths.run_dir
        self.main = main
        self.lock = ckpt.RunLock(self.path)
        self.last_path = self.path / ckpt.LAST_NAME
        self.best_path = self.path / ckpt.BEST_NAME

    def acquire(self) -> None:
        """One run per folder: the main process holds the folder's lock until fit() ends."""
        if self.main:
            try:
                self.lock.acquire()
            except OSError as err:
                raise OSError(err.errno, err.strerror, err.filename or str(self.path)) \
                    from None

    def release(self) -> None:
        self.lock.release()

    def checkpoint_to_resume(self, resume: str | None) -> Path | None:
        """--resume: 'auto' (this folder's model_last.pth if any), 'none' (refuse an existing
        one) or a path."""
        choice = str(resume or 'none')
        if choice.lower() == 'none':
            if self.last_path.is_file():
                raise ConfigError(f'{self.last_path} exists: --resume auto continues that run; '
                                  f'to start over choose another --model_save_dir')
            return None
        if choice.lower() == 'auto':
            return ckpt.find_last(self.path)
        return Path(choice)

    def prepare(self, settings: dict, history: dict, log: Callable[[str], None]) -> None:
        """Create the folder, remove temps of interrupted saves, write config.yaml and
        schedule.yaml (main process only)."""
        if not self.main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        stale = ckpt.remove_interrupted_saves(self.path)
        if stale:
            log(f'removed {len(stale)} temp file(s) of a save interrupted earlier')
        write_yaml_atomic(self.path / 'config.yaml', settings)
        write_yaml_atomic(self.path / 'schedule.yaml', history)
