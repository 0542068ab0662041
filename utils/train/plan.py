"""What a run reads and how long it runs, resolved once from its :class:`TrainConfig`.

:class:`RunPaths` names the folders (training pairs, clean photos, validation, the run folder);
:class:`TrainPlan` adds the per-process batch (``--global_batch_size`` split over the processes)
and the schedule in optimizer steps. Both are frozen: nothing changes them once a run has started,
and the config itself is never rewritten. The datasets are built from the paths here too.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from utils.data.datasets import (CleanPhotoRainDataset, DatasetError, MixedTrainingSet,
                                 PairedImageDataset, PairedPatchDataset, read_pair,
                                 resolve_split_dir)
from utils.data.image_io import ImageReadError, image_size
from utils.eval.heldout import HeldoutPairSet, family_kinds
from utils.train import distributed as dist_utils
from utils.train.config import ConfigError, TrainConfig
from utils.train.recipe import period_to_iters, steps_per_epoch


def default_run_dir(cfg: TrainConfig) -> Path:
    """``experiments/<model>_<dataset or training folder>`` (``data/demo/train`` -> ``demo``)."""
    if cfg.dataset:
        tag = cfg.dataset
    else:
        train = Path(cfg.train_dir or cfg.clean_dir).resolve()
        tag = train.parent.name if train.name.lower() in ('train', 'training') else train.name
    return Path('experiments') / f'{cfg.model}_{tag}'


@dataclass(frozen=True)
class RunPaths:
    """The folders a run reads (``None``: not used) and the run folder it writes."""
    train_dir: Path | None
    clean_dir: Path | None
    val_dir: Path | None
    val_photos: Path | None
    run_dir: Path

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> RunPaths:
        train_dir = Path(cfg.train_dir) if cfg.train_dir else (
            resolve_split_dir(cfg.dataset, cfg.data_root, 'train') if cfg.dataset else None)
        val = cfg.val_dir or (resolve_split_dir(cfg.dataset, cfg.data_root, 'test')
                              if cfg.dataset else None)
        val_dir = Path(val) if val else None
        # leave-one-family-out: validation pairs made from clean photos under the held-out family
        val_photos = Path(cfg.val_photos) if cfg.holdout_family and val_dir is None else None
        return cls(train_dir=train_dir, clean_dir=Path(cfg.clean_dir) if cfg.clean_dir else None,
                   val_dir=val_dir, val_photos=val_photos,
                   run_dir=Path(cfg.model_save_dir) if cfg.model_save_dir
                   else default_run_dir(cfg))

    def reads(self) -> list[tuple[str, Path]]:
        """(option, folder) for every folder the run reads."""
        return [(option, folder) for option, folder in (
            ('--train_dir', self.train_dir), ('--clean_dir', self.clean_dir),
            ('--val_dir', self.val_dir), ('--val_photos', self.val_photos)) if folder is not None]


def process_batch_size(cfg: TrainConfig, info: dist_utils.DistInfo) -> int:
    """``--batch_size``, or ``--global_batch_size`` split over the processes (the papers' batch on
    any number of GPUs)."""
    if cfg.global_batch_size is None:
        return cfg.batch_size
    try:
        return dist_utils.per_process_batch(cfg.global_batch_size, info.world_size)
    except ValueError as err:
        raise ConfigError(str(err)) from None


@dataclass(frozen=True)
class TrainPlan:
    """The run's folders, per-process batch and schedule (in optimizer steps)."""
    paths: RunPaths
    batch_size: int             # per process
    batches_per_epoch: int      # of this process
    steps_per_epoch: int
    total_iters: int
    warmup_iters: int
    val_every: int              # 0: never
    save_every: int             # 0: never

    @classmethod
    def from_config(cls, cfg: TrainConfig, info: dist_utils.DistInfo, dataset_length: int,
                    paths: RunPaths | None = None) -> TrainPlan:
        batch_size = process_batch_size(cfg, info)
        epoch_length = dist_utils.EpochSampler(dataset_length, info, cfg.seed).epoch_length
        per_epoch = steps_per_epoch(epoch_length, batch_size, cfg.accum_steps)
        total_iters = cfg.iters or cfg.num_epochs * per_epoch
        return cls(paths=paths or RunPaths.from_config(cfg), batch_size=batch_size,
                   batches_per_epoch=math.ceil(epoch_length / batch_size),
                   steps_per_epoch=per_epoch, total_iters=total_iters,
                   warmup_iters=min(period_to_iters(cfg.warmup, per_epoch),
                                    max(0, total_iters - 1)),
                   val_every=period_to_iters(cfg.val_every, per_epoch),
                   save_every=period_to_iters(cfg.save_every, per_epoch))

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_iters / self.steps_per_epoch)

    def schedule(self) -> dict:
        """The resolved schedule a resumed run must share (stored in checkpoints)."""
        return dict(total_iters=self.total_iters, warmup_iters=self.warmup_iters,
                    steps_per_epoch=self.steps_per_epoch,
                    batches_per_epoch=self.batches_per_epoch)


def batch_text(batch_size: int, world_size: int, accum_steps: int) -> str:
    """Per-process and global batch (and per optimizer step with accumulation)."""
    b, n, acc = batch_size, world_size, accum_steps
    text = f'batch {b} per process x {n} process(es) = {b * n} global'
    if acc > 1:
        text += f' x {acc} accumulated = {b * n * acc} per optimizer step'
    return text


# -- the datasets the paths name --------------------------------------------------------------

def _naming(option: str, folder: Path, build):
    """``build()``, its :class:`DatasetError` naming the option that gave the folder first."""
    try:
        return build()
    except DatasetError as err:
        text = str(err)
        text = (f'{option} {text}' if text.startswith(f'{folder}:')
                else f'{option} {folder}: {text}')
        raise DatasetError(text) from None


def training_set(cfg: TrainConfig, paths: RunPaths):
    """Paired patches (--train_dir/--dataset), pairs made from clean photos (--clean_dir),
    or both mixed in one epoch."""
    sets = []
    if paths.train_dir is not None:
        option = '--train_dir' if cfg.train_dir else f'--dataset {cfg.dataset}:'
        sets.append(_naming(option, paths.train_dir, lambda: PairedPatchDataset(
            paths.train_dir, cfg.patch_size, cfg.augment, cfg.seed)))
    if paths.clean_dir is not None:
        sets.append(_naming('--clean_dir', paths.clean_dir, lambda: CleanPhotoRainDataset(
            paths.clean_dir, cfg.patch_size, cfg.rain, cfg.augment, cfg.seed,
            clean_fraction=cfg.clean_fraction, samples_per_photo=cfg.samples_per_photo,
            holdout=cfg.holdout_family)))
    return sets[0] if len(sets) == 1 else MixedTrainingSet(sets)


def validation_set(cfg: TrainConfig, paths: RunPaths):
    """--val_dir's pairs; with --holdout_family (and no --val_dir), --val_photos under the
    held-out family's light and heavy levels, made in memory; else none."""
    if paths.val_dir is not None:
        option = '--val_dir' if cfg.val_dir else f'--dataset {cfg.dataset}:'
        return _naming(option, paths.val_dir, lambda: PairedImageDataset(paths.val_dir))
    if paths.val_photos is None:
        return None
    if not paths.val_photos.is_dir():
        raise ConfigError(f'--val_photos {paths.val_photos}: folder not found (make photos '
                          f'creates data/photos/val)')
    try:
        return HeldoutPairSet(paths.val_photos, family_kinds(cfg.holdout_family),
                              cfg.val_size, seed=1)
    except (ValueError, OSError) as err:
        raise ConfigError(f'--val_photos: {err}') from None


def data_text(cfg: TrainConfig, paths: RunPaths) -> str:
    """The training data in words, for the log."""
    parts = [str(paths.train_dir)] if paths.train_dir is not None else []
    if paths.clean_dir is not None:
        held = f', family {cfg.holdout_family} held out' if cfg.holdout_family else ''
        parts.append(f'{paths.clean_dir} (clean photos, rain {cfg.rain}{held})')
    return ' + '.join(parts)


# -- checked before the first step ------------------------------------------------------------

def _parts(train_set) -> list:
    return list(getattr(train_set, 'datasets', [train_set]))


def training_files(train_set) -> list[Path]:
    """Every file the training set reads: both images of each pair, every clean photo."""
    files: list[Path] = []
    for part in _parts(train_set):
        files += [p for pair in getattr(part, 'pairs', []) for p in pair]
        files += list(getattr(part, 'photos', []))
    return files


def training_data_record(train_set) -> dict:
    """What a checkpoint keeps of its training set: the number of files and a digest of their
    names and byte sizes, so a resume on a changed set is noticed (cheap: no file is read)."""
    digest = hashlib.sha256()
    files = training_files(train_set)
    for path in files:
        digest.update(f'{path.parent.name}/{path.name}\0{path.stat().st_size}\n'.encode())
    return dict(files=len(files), digest=digest.hexdigest()[:16])


def check_validation_set(cfg: TrainConfig, val_set, paths: RunPaths) -> None:
    """Every validation pair decoded once before training, so a bad file stops the run at its
    start, not at its first validation hours later (pairs made in memory are already checked)."""
    pairs = getattr(val_set, 'pairs', None)
    if not isinstance(val_set, PairedImageDataset) or not pairs:
        return
    option = '--val_dir' if cfg.val_dir else f'--dataset {cfg.dataset}:'
    for inp, tgt in pairs:
        _naming(option, paths.val_dir, lambda: read_pair(inp, tgt))  # noqa: B023


def padding_notes(train_set, patch_size: int) -> list[str]:
    """One note per part of the training set whose images are smaller than ``--patch_size`` on
    a side (their patches are padded, by reflection or by repeating the edge). Reads headers
    only, and refuses a pair whose sizes differ or a file that is no image, before any step."""
    notes = []
    for part in _parts(train_set):
        pairs = getattr(part, 'pairs', None)
        files = [inp for inp, _ in pairs] if pairs is not None else list(part.photos)
        targets = [tgt for _, tgt in pairs] if pairs is not None else [None] * len(files)
        small = []
        for path, target in zip(files, targets):
            try:
                w, h = image_size(path)
                if target is not None and image_size(target) != (w, h):
                    tw, th = image_size(target)
                    raise DatasetError(f'{path} ({w}x{h}) and {target} ({tw}x{th}): input and '
                                       f'target sizes differ')
            except ImageReadError as err:
                raise DatasetError(str(err)) from None
            if min(w, h) < patch_size:
                small.append((w * h, w, h, path))
        if small:
            _, w, h, path = min(small, key=lambda x: x[:3])
            what = 'training images' if pairs is not None else 'clean photos'
            notes.append(f'{len(small)} of {len(files)} {what} are smaller than --patch_size '
                         f'{patch_size} on a side (smallest {path}, {w}x{h}): their patches are '
                         f'padded, not cropped; use a smaller --patch_size or larger images')
    return notes
