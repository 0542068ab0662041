"""The training loop behind train.py: one process, or one of N under torchrun.

Everything that decides what a step sees is a pure function of the run's settings and its
position (epoch, batch within the epoch, optimizer step): the shuffle depends on (seed, epoch),
crops/flips on (seed, epoch, index), and the state saved in ``model_last.pth`` is taken only at
optimizer-step boundaries. A run stopped at any saved point and resumed therefore ends with the
same weights as one that never stopped (bit for bit on the CPU).
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import resource
import time
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from models import build_model, model_config
from utils.train import checkpoint as ckpt
from utils.train.config import ConfigError, TrainConfig
from utils.core.errors import SpikeDerainError
from utils.train import distributed as dist_utils
from models.acceleration import (bf16_supported, enable_fast_training, plain_forward,
                                 supports_fast_path)
from utils.efficiency.energy import measure_firing_rates
from utils.core.device import configure_numerics, lif_kernel_report, resolve_device
from models.weights import WeightsError, check_finite, load_weights
from utils.data.image_io import NonFiniteImageError
from utils.train.losses import build_loss
from utils.eval.protocol import score_dataset
from utils.train.plan import (RunPaths, TrainPlan, batch_text, check_validation_set, data_text,
                              padding_notes, process_batch_size, training_data_record,
                              training_set, validation_set)
from utils.train.recipe import (build_extension_scheduler, build_optimizer, build_scheduler,
                                planned_lr)
from utils.train.run_folder import RunFolder, run_settings, schedule_history


class TrainingError(SpikeDerainError, RuntimeError):
    """A run that had to stop (non-finite loss, unusable validation image, ...)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def peak_memory_text(device: torch.device) -> str:
    """Peak resident memory of this process (and peak CUDA allocation on a GPU)."""
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2   # KiB on Linux
    text = f'peak RSS {rss_gb:.2f} GB'
    if device.type == 'cuda':
        text += f', peak CUDA {torch.cuda.max_memory_allocated(device) / 1024 ** 3:.2f} GB'
    return text


def _close_in_worker(fd: int | None, worker_id: int) -> None:
    """A forked DataLoader worker drops its copy of the run folder's lock, so the lock ends with
    the main process even if a worker outlives it by a few seconds."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def mixed_precision(cfg: TrainConfig, device: torch.device, log: Callable[[str], None]) -> bool:
    """Whether float16 autocast (--amp) runs; --precision bf16 needs native bfloat16 on a CPU."""
    amp = cfg.amp and device.type == 'cuda'
    if cfg.precision == 'bf16' and device.type == 'cpu' and not bf16_supported():
        raise ConfigError('--precision bf16: this CPU has no native bfloat16 convolutions '
                          '(AVX-512 BF16 or AMX); use the default fp32')
    if cfg.amp and not amp:
        log('note: --amp needs a CUDA device; training in float32')
    return amp


def build_training_model(cfg: TrainConfig, device: torch.device,
                         log: Callable[[str], None]) -> tuple[dict, torch.nn.Module, bool]:
    """(model config, model on ``device``, fast path on): built from the seed, --init_weights
    loaded, the fast training path enabled where the model has one and --fast asks for it."""
    try:
        model_cfg = model_config(cfg.model, **cfg.model_opt)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, **cfg.model_opt).to(device)
    except ValueError as err:
        raise ConfigError(f'--model {cfg.model}: {err}') from None
    except Exception as err:     # noqa: BLE001 - an option the constructor cannot take
        if not cfg.model_opt:    # the defaults must build: anything else is a bug
            raise
        raise ConfigError(f'--model_opt {cfg.model_opt}: {cfg.model} cannot be built with '
                          f'these options ({type(err).__name__}: {err})') from None
    if cfg.init_weights:          # fine-tuning: start from trained weights, fresh schedule
        try:
            load_weights(model, cfg.init_weights)
        except (WeightsError, OSError) as err:
            raise ConfigError(f'--init_weights: {err}') from None
    fast = cfg.fast and supports_fast_path(model)
    if fast:
        enable_fast_training(model, checkpoint=cfg.checkpoint, recompute=cfg.recompute)
    elif cfg.fast:
        log(f'note: {cfg.model} has no fast training path; training on the plain forward')
    return model_cfg, model, fast


def autocast(amp: bool, precision: str, device: torch.device):
    """float16 autocast for --amp (CUDA), bfloat16 for --precision bf16, else nothing."""
    if amp:
        return torch.autocast('cuda', dtype=torch.float16)
    if precision == 'bf16':
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def first_non_finite(pending: list, values: list[float], norms: list,
                     norm_values: list[float]) -> tuple[str, tuple[int, int]] | None:
    """(what, (iteration, epoch)) of the first non-finite step loss, else of the first
    non-finite gradient norm; ``None`` if all are finite."""
    bad = next(((f'loss {v}', at) for (at, _), v in zip(pending, values)
                if not math.isfinite(v)), None)
    if bad is None:
        bad = next(((f'gradient norm {v}', at) for (at, _), v in zip(norms, norm_values)
                    if not math.isfinite(v)), None)
    return bad


def log_firing_rates(net: torch.nn.Module, img: torch.Tensor,
                     scalar: Callable[[str, float, int], None], it: int) -> None:
    """Every neuron layer's firing rate on one validation image (the energy convention)."""
    # The fast path runs fused neurons the counting hooks cannot see: count on the plain one
    # (same weights, same spikes up to rounding).
    with plain_forward(net):
        neurons, _ = measure_firing_rates(net, [img[None]])
    for name in neurons.events:
        scalar(f'firing_rate/{name}', neurons.rate(name), it)
    scalar('firing_rate/all_layers', neurons.pooled(), it)


class Trainer:
    """Builds data, model, optimizer and schedule from a :class:`TrainConfig`, then ``fit()``.

    ``cfg`` is never changed; what it resolves to (folders, per-process batch, schedule) is the
    frozen :attr:`plan`.
    """

    def __init__(self, cfg: TrainConfig, info: dist_utils.DistInfo | None = None,
                 log: Callable[[str], None] | None = None, notes: list[str] | tuple = ()):
        cfg.validate()
        self.cfg = cfg
        self.info = info or dist_utils.DistInfo(device=resolve_device(cfg.device))
        self.device = self.info.device
        self._log = log or tqdm.write
        # TF32 off unless asked for; cuDNN autotuning for the fixed-size training patches
        # (validation, on whole images of any size, turns it off while it runs)
        configure_numerics(self.device, tf32=cfg.tf32, benchmark=True)
        kernel = lif_kernel_report(self.device)           # CUDA only: which LIF kernel runs
        if kernel:
            self.log(kernel)
        paths = RunPaths.from_config(cfg)
        self.run = RunFolder(paths, main=self.info.is_main)    # checked; locked below
        self.lock, self.last_path, self.best_path = (self.run.lock, self.run.last_path,
                                                     self.run.best_path)
        for note in notes:                        # options another option replaces
            self.log(f'note: {note}')
        self.amp = mixed_precision(cfg, self.device, self.log)
        process_batch_size(cfg, self.info)       # a bad --global_batch_size before any data
        seed_everything(cfg.seed)
        self.train_set, self.val_set = training_set(cfg, paths), validation_set(cfg, paths)
        # everything the steps will read, checked before the first one
        check_validation_set(cfg, self.val_set, paths)
        for note in padding_notes(self.train_set, cfg.patch_size):
            self.log(f'note: {note}')
        self.train_data = training_data_record(self.train_set)
        self.plan = TrainPlan.from_config(cfg, self.info, len(self.train_set), paths)
        self.sampler = dist_utils.EpochSampler(len(self.train_set), self.info, cfg.seed)
        self.model_cfg, self.model, self.fast = build_training_model(cfg, self.device, self.log)
        self.criterion = build_loss(cfg.loss)       # the model is wrapped in DDP once resumed
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, self.plan.total_iters,
                                         self.plan.warmup_iters, cfg.min_lr)
        self.scaler = torch.amp.GradScaler('cuda', enabled=self.amp)
        self._reset_state()
        self._start()
        self.tb = None
        self.loader: DataLoader | None = None

    def _reset_state(self) -> None:
        """A new run's position, best score and pending step values (a resume overwrites them)."""
        # step losses (and gradient norms) still on the device: ((iteration, epoch), tensor)
        self._pending: list[tuple[tuple[int, int], torch.Tensor]] = []
        self._pending_norms: list[tuple[tuple[int, int], torch.Tensor]] = []
        self.progress = dict(epoch=0, epoch_batch=0, iteration=0)
        self.best = dict(psnr=float('-inf'), ssim=0.0, iteration=0)      # -inf: none yet
        self.saved_iteration: int | None = None
        self.state_path: Path | None = None      # the file holding the current state, if any
        # where the schedule was lengthened (--extend): [{iteration, lr, total_iters_before,
        # total_iters}], oldest first; the last one defines the remaining learning rates
        self.extensions: list[dict] = []

    def _start(self) -> None:
        """Lock the run folder, resume from its checkpoint, then wrap the model for DDP."""
        self.run.acquire()          # before reading or cleaning anything in the run folder
        try:
            self.resumed_from = self._resume()
            try:
                self.model = dist_utils.wrap_model(self.model, self.info)
            except ValueError as err:               # a SyncBatchNorm in the model
                raise ConfigError(str(err)) from None
        except BaseException:
            self.lock.release()
            raise

    def data_text(self) -> str:
        return data_text(self.cfg, self.plan.paths)

    # -- small helpers --------------------------------------------------------------------
    @property
    def net(self) -> torch.nn.Module:
        """The model itself (without the DDP wrapper)."""
        return dist_utils.unwrap(self.model)

    def log(self, text: str) -> None:
        if self.info.is_main:
            self._log(text)

    def batch_text(self) -> str:
        return batch_text(self.plan.batch_size, self.info.world_size, self.cfg.accum_steps)

    def settings(self) -> dict:
        """config.yaml: the options with folders and per-process batch resolved."""
        return run_settings(self.cfg, self.plan)

    def record(self) -> dict:
        """What checkpoints store: the settings plus the resolved schedule and process count."""
        return dict(self.settings(), world_size=self.info.world_size, schedule=self.plan.schedule(),
                    extensions=[dict(e) for e in self.extensions], train_data=self.train_data)

    def _scalar(self, tag: str, value: float, step: int) -> None:
        if self.tb is not None:
            self.tb.add_scalar(tag, value, step)

    # -- resume -----------------------------------------------------------------------------
    def _resume(self) -> Path | None:
        path = self.run.checkpoint_to_resume(self.cfg.resume)
        if path is None:
            return None
        try:
            state = ckpt.load_training_state(path)
        except ckpt.CheckpointError as err:       # a --resume PATH the user typed: name it
            if str(self.cfg.resume).lower() in ('auto', 'none'):
                raise
            raise ckpt.CheckpointError(f'--resume {err}') from None
        ckpt.check_same_model(state, self.cfg.model, self.model_cfg, str(path))
        saved = state.get('train_config', {})
        data_change = self._training_set_change(saved.get('train_data'))
        try:
            extend_from = ckpt.check_same_schedule(saved, self.plan.schedule(), self.settings(),
                                                   str(path), extend=self.cfg.extend)
        except ckpt.CheckpointError as err:
            if data_change:
                raise ckpt.CheckpointError(f'{err} ({data_change})') from None
            raise
        self.extensions = [dict(e) for e in saved.get('extensions') or []]
        if self.extensions:          # a run lengthened earlier: its scheduler is the extension's
            self.scheduler = self._extension_scheduler(self.extensions[-1])
        ckpt.restore_training_state(state, model=self.net, optimizer=self.optimizer,
                                    scheduler=self.scheduler, scaler=self.scaler)
        if extend_from is not None:  # --extend: a cosine from here to the new end
            self._extend(int(state['progress']['iteration']), extend_from)
        self.progress = dict(state['progress'])
        self.best = dict(state['best'])
        self.saved_iteration = self.progress['iteration']
        self.state_path = path
        changed = ckpt.changed_settings(saved, self.record())
        if changed:
            self.log('note: resuming with changed settings: ' + ', '.join(changed))
        if data_change:
            self.log(f'note: {data_change}; the resumed run trains on the folder as it is now')
        if self.cfg.init_weights:
            self.log(f'note: --init_weights {self.cfg.init_weights} not used: the run resumes '
                     f'from {path} (iteration {self.saved_iteration}), whose weights replace '
                     f'them; to fine-tune from them choose a new --model_save_dir')
        if math.isfinite(self.best['psnr']) and not self.best_path.is_file():
            self.log(f'note: the best score so far (val PSNR {self.best["psnr"]:.2f} dB at '
                     f'iteration {self.best["iteration"]}) has no {self.best_path} behind it; '
                     f'the next validation writes a new one')
            self.best = dict(psnr=float('-inf'), ssim=0.0, iteration=0)
        return path

    def _training_set_change(self, saved: dict | None) -> str | None:
        """How the training files differ from the checkpoint's (names and byte sizes), or
        ``None`` (same, or a checkpoint from before this was recorded)."""
        if not saved or saved == self.train_data:
            return None
        return (f'the training set changed since the checkpoint ({saved.get("files")} -> '
                f'{self.train_data["files"]} files, or files renamed or rewritten)')

    def _extend(self, at: int, total_before) -> None:
        """Lengthen the schedule at iteration ``at``: a cosine from the current lr to --min_lr
        at the new end, recorded in :attr:`extensions`."""
        lr_now = float(self.optimizer.param_groups[0]['lr'])
        if at >= int(total_before):   # a finished run sits at --min_lr: go on from where a run
            lr_now = planned_lr(at, self.plan.total_iters, self.plan.warmup_iters,  # planned
                                self.cfg.lr, self.cfg.min_lr)          # this long would be
            self.log(f'note: the saved run had finished (lr at --min_lr {self.cfg.min_lr:g}); '
                     f'the extension goes on from lr {lr_now:.3g}, where a run planned for '
                     f'{self.plan.total_iters} iterations is at iteration {at}')
        self.extensions.append(dict(iteration=at, lr=lr_now,
                                    total_iters_before=int(total_before),
                                    total_iters=self.plan.total_iters))
        self.scheduler = self._extension_scheduler(self.extensions[-1])
        self.log(f'extending the schedule at iteration {at}: {total_before} -> '
                 f'{self.plan.total_iters} iterations (cosine from lr '
                 f'{self.extensions[-1]["lr"]:.3g} to {self.cfg.min_lr:g})')

    def _extension_scheduler(self, ext: dict):
        return build_extension_scheduler(self.optimizer, ext['iteration'], ext['lr'],
                                         ext['total_iters'], self.cfg.min_lr)

    # -- checkpoints ------------------------------------------------------------------------
    def _check_weights(self, when: str) -> None:
        """Stop (keeping the last good checkpoint) if any weight or buffer is NaN/inf."""
        try:
            check_finite(self.net.state_dict(), self.cfg.model)
        except WeightsError as err:
            self._stop_non_finite(f'weights {when} ({str(err).split(": ", 1)[-1]})')

    def save_last(self) -> None:
        self._check_weights('before saving')   # never let "last good" point to NaN weights
        if self.info.is_main:
            try:
                ckpt.save_training_state(self.last_path, model=self.net,
                                         optimizer=self.optimizer, scheduler=self.scheduler,
                                         scaler=self.scaler, progress=self.progress,
                                         best=self.best, config=self.record())
            except OSError as err:
                kept = (f'{self.last_path} (iteration {self.saved_iteration}) is intact'
                        if self.saved_iteration is not None else 'no checkpoint had been saved')
                raise TrainingError(f'{err.filename or self.last_path}: cannot save the '
                                    f'checkpoint: {err.strerror}; {kept}') from None
        self.saved_iteration = self.progress['iteration']
        self.state_path = self.last_path

    # -- one optimizer step -----------------------------------------------------------------
    def _forward_backward(self, inp: torch.Tensor, tgt: torch.Tensor, group: int,
                          sync: bool) -> torch.Tensor:
        """The batch's loss, left on the device: reading it back (``.item()``) would make the
        host wait for the GPU every step; :meth:`_read_back` does that every ``--log_every``."""
        inp = inp.to(self.device, non_blocking=True)
        tgt = tgt.to(self.device, non_blocking=True)
        no_sync = getattr(self.model, 'no_sync', None)
        ctx = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
        with ctx:
            with autocast(self.amp, self.cfg.precision, self.device):
                out = self.model(inp)
            loss = self.criterion(out, tgt)
            self.scaler.scale(loss / group).backward()
        return loss.detach()

    def _optimizer_step(self) -> None:
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
            if not self.amp:             # checked with the losses, without a sync per step
                self._pending_norms.append((self._position(), norm.detach()))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def _position(self) -> tuple[int, int]:
        """(iteration, epoch) of the step being taken, 1-based, for messages."""
        return self.progress['iteration'] + 1, self.progress['epoch'] + 1

    def _read_back(self) -> list[float]:
        """Copy the pending steps' losses (and gradient norms) to the host in one go, stop on a
        non-finite one (all processes together), and return the losses.

        Called every ``--log_every`` steps and before anything that keeps or judges the state
        (validation, saving, the epoch summary, the end of the run), so a non-finite loss never
        reaches a checkpoint: the run stops without saving, naming the first bad step.
        """
        pending, norms = self._pending, self._pending_norms
        self._pending, self._pending_norms = [], []
        if not pending and not norms:
            return []
        values = torch.stack([v for _, v in pending]).double().tolist() if pending else []
        norm_values = torch.stack([v for _, v in norms]).double().tolist() if norms else []
        bad = first_non_finite(pending, values, norms, norm_values)
        finite = bad is None
        if self.info.distributed:
            finite = dist_utils.all_agree(finite, self.device)
        if not finite:
            what, at = bad if bad is not None else ('loss (on another process)',
                                                    pending[0][0] if pending else None)
            self._stop_non_finite(what, at)
        return values

    def _stop_non_finite(self, what: str, at: tuple[int, int] | None = None) -> None:
        it, ep = at or self._position()
        if self.saved_iteration is None:
            kept = 'no checkpoint had been saved yet'
        else:
            kept = f'{self.last_path} (iteration {self.saved_iteration}) is intact'
        raise TrainingError(f'non-finite {what} at iteration {it} (epoch {ep}); stopped without '
                            f'saving; {kept}; try a lower --lr or --grad_clip 1')

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> dict:
        """Mean PSNR/SSIM (Y channel, published protocol) over the whole validation images."""
        # whole images come in any size: cuDNN autotuning (on for training) would re-tune each
        bench, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
        try:
            return self._validate()
        finally:
            torch.backends.cudnn.benchmark = bench

    @torch.no_grad()
    def _validate(self) -> dict:
        dist_utils.broadcast_buffers(self.model)
        net, it = self.net, self.progress['iteration']
        net.eval()
        indices = range(self.info.rank, len(self.val_set), self.info.world_size)
        bar = tqdm(indices, desc='validate', unit='img', leave=False,
                   disable=not self.info.is_main, dynamic_ncols=True)
        shown = [0]

        def show(i, stem, inp, out, tgt, scores):
            if i == 0 and self.tb is not None:
                log_firing_rates(net, inp, self._scalar, it)
            if self.tb is not None and shown[0] < self.cfg.val_images:
                strip = torch.cat([inp, out[0].cpu(), tgt], dim=2).clamp(0, 1)
                self.tb.add_image(f'val/{stem} (input | restored | target)', strip, it)
                shown[0] += 1
        try:
            sums = score_dataset(net, self.val_set, self.device, bar, tile=self.cfg.val_tile,
                               on_image=show, batch_size=self.cfg.val_batch_size)
        except NonFiniteImageError as err:
            self._stop_non_finite(f'validation output on {err}')
        except ValueError as err:
            paths = self.plan.paths
            raise TrainingError(f'{paths.val_dir or paths.val_photos}: {err}') from None
        net.train()
        self._check_weights('after validation')
        total = dist_utils.all_reduce_sum(sums, self.device)
        result = dict(psnr=total[0] / total[2], ssim=total[1] / total[2])
        self._scalar('val/psnr', result['psnr'], it)
        self._scalar('val/ssim', result['ssim'], it)
        if result['psnr'] > self.best['psnr']:
            self.best = dict(psnr=result['psnr'], ssim=result['ssim'], iteration=it)
            if self.info.is_main:
                ckpt.save_best(net, self.best_path, psnr=result['psnr'], ssim=result['ssim'],
                               iteration=it, epoch=self.progress['epoch'])
        return result

    # -- the loop ---------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        """The training loader positioned at the current epoch and batch.

        One loader for the whole run: its workers persist (forked once, while the process is
        still small) and read the epoch from the dataset's shared memory. It has its own
        generator, so iterating it never draws from the global RNG.
        """
        epoch, skip = self.progress['epoch'], self.progress['epoch_batch']
        self.sampler.set_epoch(epoch, skip=skip * self.plan.batch_size)
        self.train_set.set_epoch(epoch)
        if self.loader is None:
            self.loader = DataLoader(
                self.train_set, batch_size=self.plan.batch_size, sampler=self.sampler,
                num_workers=self.cfg.workers, pin_memory=self.device.type == 'cuda',
                drop_last=False, persistent_workers=self.cfg.workers > 0,
                generator=torch.Generator().manual_seed(self.cfg.seed),
                worker_init_fn=functools.partial(_close_in_worker, self.lock.fd))
        return self.loader

    def _open_tensorboard(self) -> None:
        if self.cfg.tensorboard and self.info.is_main:
            from torch.utils.tensorboard import SummaryWriter
            purge = self.progress['iteration'] if self.resumed_from else None
            self.tb = SummaryWriter(log_dir=str(self.run.path / 'tensorboard'), purge_step=purge)

    def fit(self) -> dict:
        """Train until ``total_iters`` (or ``stop_after`` more steps); returns a summary."""
        self.run.acquire()                    # fit() again after an earlier fit() released it
        try:
            return self._fit()
        finally:
            self.lock.release()

    def _fit(self) -> dict:
        cfg, prog, plan = self.cfg, self.progress, self.plan
        if self.info.is_main:
            self.run.prepare(self.settings(), schedule_history(plan, cfg, self.extensions),
                             self.log)
        self._open_tensorboard()
        start_it = prog['iteration']
        stop_at = plan.total_iters if cfg.stop_after is None else min(
            plan.total_iters, start_it + cfg.stop_after)
        where = f'resumed from {self.resumed_from} at iteration {start_it}' if \
            self.resumed_from else 'new run'
        fast = 'fast path' if self.fast else 'plain path'
        self.log(f'{cfg.model} ({fast}) on {self.data_text()} ({len(self.train_set)} samples, '
                 f'{self.info.world_size} process(es) on {self.device}; {self.batch_text()}): '
                 f'{plan.total_iters} '
                 f'iterations = {plan.epochs} epochs of {plan.steps_per_epoch}; {where}; '
                 f'run folder {plan.paths.run_dir}')
        if self.val_set is None:
            self.log('note: no --val_dir: no validation, model_best.pth will not be written')
        bar = tqdm(total=plan.total_iters, initial=start_it, unit='it', dynamic_ncols=True,
                   disable=not self.info.is_main, desc='train')
        self.model.train()
        t_run = time.perf_counter()
        try:
            while prog['iteration'] < stop_at:
                self._run_epoch(bar, stop_at)
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.close()
        dist_utils.broadcast_buffers(self.model)
        minutes = (time.perf_counter() - t_run) / 60
        done = prog['iteration'] >= plan.total_iters
        state = 'finished' if done else 'stopped (--stop_after)'
        self.log(f'{state} at iteration {prog["iteration"]}/{plan.total_iters} after '
                 f'{minutes:.1f} min; {self._best_text()}; {self._state_text()}; '
                 f'{peak_memory_text(self.device)}')
        return dict(iteration=prog['iteration'], finished=done, best=dict(self.best),
                    last=str(self.last_path), best_path=str(self.best_path))

    def _best_text(self) -> str:
        """The best score, named only with the file that holds its weights."""
        if self.val_set is None:
            return 'no validation'
        if not math.isfinite(self.best['psnr']) or not self.best_path.is_file():
            return 'no validation yet, so no model_best.pth'
        return (f'best val PSNR {self.best["psnr"]:.2f} dB at iteration {self.best["iteration"]} '
                f'in {self.best_path}')

    def _state_text(self) -> str:
        """Where the state is: the file last written or resumed from, never a file not there."""
        if self.state_path is None or not self.state_path.is_file():
            return 'no checkpoint written'
        return f'state in {self.state_path}'

    def _run_epoch(self, bar: tqdm, stop_at: int) -> None:
        """Train from the current position to the end of the epoch (or ``stop_at``)."""
        cfg, prog, plan = self.cfg, self.progress, self.plan
        epoch_losses, t_epoch, seen, val = [], time.perf_counter(), 0, None
        micro, group = 0, 1
        t_log, logged_at = time.perf_counter(), prog['iteration']
        for inp, tgt in self._loader():
            if micro == 0:
                group = min(cfg.accum_steps, plan.batches_per_epoch - prog['epoch_batch'])
                step_losses = []
            step_losses.append(self._forward_backward(inp, tgt, group, sync=micro + 1 == group))
            seen += inp.shape[0] * self.info.world_size
            micro += 1
            if micro < group:
                continue
            # the step's mean loss, on the device (float64 like the former NumPy mean)
            self._pending.append((self._position(),
                                  torch.stack(step_losses).double().mean()))
            self._optimizer_step()
            micro = 0
            prog['iteration'] += 1
            prog['epoch_batch'] += group
            it = prog['iteration']
            bar.update(1)
            self._scalar('train/lr', self.optimizer.param_groups[0]['lr'], it)
            epoch_done = prog['epoch_batch'] >= plan.batches_per_epoch
            if epoch_done:
                prog['epoch'] += 1
                prog['epoch_batch'] = 0
            validate = self.val_set is not None and (it == plan.total_iters or (
                plan.val_every > 0 and it % plan.val_every == 0))
            save = it == stop_at or (plan.save_every > 0 and it % plan.save_every == 0)
            if validate or save or epoch_done or it % cfg.log_every == 0 or it >= stop_at:
                first = it - len(self._pending) + 1
                losses = self._read_back()          # the only host sync of the loss
                for i, loss in enumerate(losses):
                    self._scalar('train/loss', loss, first + i)
                epoch_losses += losses
                if losses:
                    now = time.perf_counter()
                    imgs = ((it - logged_at) * group * plan.batch_size * self.info.world_size
                            / max(now - t_log, 1e-9))
                    t_log, logged_at = now, it
                    bar.set_postfix(loss=f'{losses[-1]:.4f}', img_s=f'{imgs:.1f}')
            if validate:
                val = self.validate()
            if save:
                self.save_last()
            if epoch_done or it == stop_at:
                self._epoch_summary(epoch_losses, seen, time.perf_counter() - t_epoch, val)
            if it >= stop_at:
                break

    def _epoch_summary(self, losses: list[float], seen: int, seconds: float,
                       val: dict | None) -> None:
        prog = self.progress
        total = dist_utils.all_reduce_sum([sum(losses), len(losses)], self.device)
        mean_loss = total[0] / max(total[1], 1)
        epoch = prog['epoch'] if prog['epoch_batch'] == 0 else prog['epoch'] + 1
        text = (f'epoch {epoch}/{self.plan.epochs}  iter {prog["iteration"]}/'
                f'{self.plan.total_iters}  '
                f'loss {mean_loss:.4f}  lr {self.optimizer.param_groups[0]["lr"]:.2e}  '
                f'{seen / max(seconds, 1e-9):.1f} img/s  {seconds:.0f}s')
        if val is not None:
            text += (f'  val PSNR {val["psnr"]:.2f} SSIM {val["ssim"]:.4f}  '
                     f'(best {self.best["psnr"]:.2f} @ iter {self.best["iteration"]})')
        self.log(text)
        self._scalar('train/epoch_loss', mean_loss, prog['iteration'])
