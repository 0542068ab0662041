"""Every training setting, declared once: its default, its help, and its checks.

``train.py``'s command line is generated from :class:`TrainConfig`'s fields (:func:`add_options`),
``--config FILE.yaml`` accepts the same names, and a run folder's ``config.yaml`` is the same
dataclass written back, so an option cannot exist in one place and be missing in another.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, dataclass, field, fields

import yaml

from models import available_models
from utils.core.errors import UsageError
from utils.core.settings import cli_float, cli_int
from utils.train.losses import LossSpecError, build_loss
from utils.data.rain import FAMILIES, parse_rain_kinds
from utils.train.recipe import period_to_iters


class ConfigError(UsageError):
    """A training setting that cannot work; the message names the option (exit 2)."""


def opt(default, help: str, **cli):
    """A setting: its default, its ``--help`` text, and extra argparse keywords (``cli``)."""
    kw = dict(default_factory=default) if callable(default) else dict(default=default)
    return field(metadata=dict(help=help, cli=cli), **kw)


@dataclass
class TrainConfig:
    """Every setting of a run. Defaults: the official SpikeRain recipe, plus flips/rotations."""
    model: str = opt('spikerain-s', 'model to train', choices=available_models())
    model_opt: dict = opt(dict, 'override a model constructor option, e.g. T=2 or '
                          'en_num_blocks=[1,1,1,1] (repeatable)', action='append',
                          metavar='KEY=VALUE')
    init_weights: str | None = opt(None, 'start from these weights (fine-tuning: a new run whose '
                                   'optimizer and schedule start fresh; a resumed run ignores '
                                   'it)', metavar='PATH')
    train_dir: str | None = opt(None, 'training folder holding input/ and target/')
    clean_dir: str | None = opt(None, 'folder of clean photos: every training sample is a new '
                                'crop with synthetic rain drawn over it (mixable with '
                                '--train_dir)')
    rain: str = opt('random', "--clean_dir rain: a family (streaks, particles, benchmark, lens, "
                    "veil; 'families' for all five), 'random' (the original model, every "
                    "parameter drawn per sample), 'light', 'heavy', or several separated by "
                    "commas (one drawn per sample); see docs/data.md")
    holdout_family: str | None = opt(None, 'leave-one-family-out: --clean_dir never draws rain of '
                                     'this family, and validation (unless --val_dir is given) '
                                     'is --val_photos under this family only, light and heavy',
                                     choices=FAMILIES)
    val_photos: str = opt('data/photos/val', '--holdout_family: clean photos the validation '
                          'pairs are made from (never trained on)')
    val_size: int = opt(192, '--holdout_family: longest side of those validation images')
    clean_fraction: float = opt(0.1, '--clean_dir: share of samples left without rain (teaches '
                                'the model to leave clean images alone)')
    samples_per_photo: int = opt(32, '--clean_dir: samples drawn from each photo per epoch')
    val_dir: str | None = opt(None, 'validation folder holding input/ and target/ (whole '
                              'images)')
    dataset: str | None = opt(None, 'benchmark preset (Rain200L, Rain200H, Rain1200, ...): uses '
                              'DATA_ROOT/NAME/train and DATA_ROOT/NAME/test unless '
                              '--train_dir/--val_dir are given')
    data_root: str = opt('data', 'folder holding the benchmark folders')
    model_save_dir: str | None = opt(None, 'run folder for checkpoints, logs and config.yaml '
                                     '[default: experiments/<model>_<dataset or training '
                                     'folder>]')
    batch_size: int = opt(16, 'patches per step per process (under torchrun the global batch '
                          'is N times this; see --global_batch_size)')
    global_batch_size: int | None = opt(None, "patches per step over all processes: sets "
                                        "--batch_size to this / number of processes (must "
                                        "divide evenly), so the papers' batch is the same on "
                                        "any GPU count")
    patch_size: int = opt(64, 'training patch side in pixels')
    augment: bool = opt(True, 'random flips and 90-degree rotations of training patches')
    lr: float = opt(1e-3, 'peak learning rate (AdamW)')
    min_lr: float = opt(1e-7, 'learning rate at the end of the cosine')
    weight_decay: float = opt(0.01, 'AdamW weight decay')
    num_epochs: int = opt(2000, 'training length in epochs')
    iters: int | None = opt(None, 'training length in optimizer steps (overrides --num_epochs)')
    warmup: str = opt('5ep', 'linear warm-up length: N iterations or Nep epochs')
    loss: str = opt('ssim', "loss: ssim (1-SSIM), psnr, l1, mse, charbonnier, or a weighted "
                    "sum such as 'ssim+0.1*l1'")
    grad_clip: float = opt(0.0, 'clip the gradient norm to this value (0: off)')
    accum_steps: int = opt(1, 'accumulate gradients over this many batches per optimizer step')
    precision: str = opt('fp32', "bf16: convolutions in bfloat16 autocast (neuron state stays "
                         "float32), on CPUs with native bf16 or on a GPU; faster, less exact; "
                         "validation stays float32; --amp is the CUDA float16 alternative",
                         choices=('fp32', 'bf16'))
    amp: bool = opt(False, 'mixed precision (float16 autocast; CUDA only, ignored on the CPU)')
    log_every: int = opt(10, 'read the loss back from the device (progress bar, TensorBoard, '
                         'non-finite check) every N optimizer steps; the other steps never '
                         'wait for the GPU')
    tf32: bool = opt(False, 'allow TF32 convolutions/matmuls on a CUDA GPU (faster on Ampere or '
                     'newer, less exact; default: off, true float32; see docs/training.md)')
    val_every: str = opt('1ep', 'validate every N iterations or Nep epochs (0: only at the end)')
    val_tile: int | None = opt(None, 'validate in tiles of this size (bounds GPU memory on large '
                               'images) [default: whole images]')
    val_batch_size: int = opt(4, 'validation images of one size restored per forward pass '
                              '(what keeps a GPU busy; 1: one at a time)')
    val_images: int = opt(3, 'validation images shown in TensorBoard')
    save_every: str = opt('1ep', 'write model_last.pth every N iterations or Nep epochs (0: '
                          'only at the end); always written when the run ends')
    stop_after: int | None = opt(None, 'end this run after N more iterations, saving its state '
                                 '(for time-limited jobs; the same command continues it)')
    resume: str = opt('auto', "'auto': continue from the run folder's model_last.pth if there "
                      "is one; a path: continue from that file; 'none': refuse to touch an "
                      "existing run")
    extend: bool = opt(False, "allow resuming with a longer schedule (--iters/--num_epochs "
                       "above the saved run's): the steps already taken stay, the learning "
                       "rate follows a cosine from its current value to --min_lr at the new "
                       "end; recorded in the run folder's schedule.yaml")
    seed: int = opt(1234, 'seed of initialisation, shuffling and crops')
    device: str = opt('auto', 'auto: CUDA when available, else CPU; cpu; cuda; cuda:N (one '
                      'process only: under torchrun each process takes the GPU of its '
                      'LOCAL_RANK)')
    workers: int = opt(min(4, os.cpu_count() or 1), 'DataLoader worker processes')
    checkpoint: bool = opt(False, 'fast path only: keep only each block\'s input and recompute the '
                           'whole block, convs included, in the backward pass (least memory; '
                           'steps about a third slower)')
    recompute: bool = opt(True, 'fast path only: keep conv outputs and recompute the cheap '
                          'work between convs (BN, neurons, attention) in the backward pass: '
                          'the same gradients; ESDNet/VLIF-Net keep 0.63x/0.48x of the live '
                          'memory, steps 1%%/17%% slower on a 2-core CPU; --no-recompute keeps '
                          'everything')
    tensorboard: bool = opt(True, 'log loss, lr, PSNR/SSIM, images and firing rates to '
                            '<run folder>/tensorboard')
    fast: bool = opt(True, 'fast training path (fused LIF, channels-last) where the model has '
                     'one; --no-fast: the plain reference forward')

    def validate(self) -> None:
        """Reject impossible values with one message naming the option."""
        def need(cond, name, what):
            if not cond:
                raise ConfigError(f'--{name} must be {what}, got {getattr(self, name)!r}')
        for f in fields(self):              # nan/inf pass every comparison-free check below
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f'--{f.name} must be a finite number, got {value!r}')
        for key, value in (self.model_opt or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f'--model_opt {key}={value!r}: must be a finite number')
        need(self.batch_size >= 1, 'batch_size', '>= 1')
        need(self.global_batch_size is None or self.global_batch_size >= 1,
             'global_batch_size', '>= 1')
        need(self.log_every >= 1, 'log_every', '>= 1')
        need(self.patch_size >= 8, 'patch_size', '>= 8 pixels')
        need(self.lr > 0, 'lr', '> 0')
        need(0 <= self.min_lr <= self.lr, 'min_lr', 'between 0 and --lr')
        need(self.weight_decay >= 0, 'weight_decay', '>= 0')
        need(self.num_epochs >= 1, 'num_epochs', '>= 1')
        need(self.iters is None or self.iters >= 1, 'iters', '>= 1')
        need(self.grad_clip >= 0, 'grad_clip', '>= 0 (0 turns clipping off)')
        need(self.accum_steps >= 1, 'accum_steps', '>= 1')
        need(self.val_images >= 0, 'val_images', '>= 0')
        need(self.val_batch_size >= 1, 'val_batch_size', '>= 1')
        if self.precision == 'bf16' and self.amp:
            raise ConfigError('--precision bf16 and --amp (float16) are two kinds of mixed '
                              'precision; choose one')
        if self.checkpoint and not self.fast:
            raise ConfigError('--checkpoint recomputes blocks of the fast training path; it '
                              'cannot be combined with --no-fast')
        need(self.val_tile is None or self.val_tile >= 8, 'val_tile', '>= 8 pixels')
        need(self.stop_after is None or self.stop_after >= 1, 'stop_after', '>= 1')
        need(self.workers >= 0, 'workers', '>= 0')
        need(0 <= self.clean_fraction < 1, 'clean_fraction', 'in [0, 1)')
        need(self.samples_per_photo >= 1, 'samples_per_photo', '>= 1')
        try:
            parse_rain_kinds(str(self.rain), self.holdout_family)
        except ValueError as err:
            raise ConfigError(f'--rain: {err}') from None
        if self.holdout_family and (self.clean_dir is None or self.train_dir or self.dataset):
            raise ConfigError('--holdout_family needs --clean_dir alone: rain in --train_dir or '
                              '--dataset pairs cannot be held out')
        need(self.val_size >= 16, 'val_size', '>= 16 pixels')
        for name in ('warmup', 'val_every', 'save_every'):
            try:
                period_to_iters(getattr(self, name), 1, f'--{name}')
            except ValueError as err:
                raise ConfigError(str(err)) from None
        try:
            build_loss(self.loss)
        except LossSpecError as err:
            raise ConfigError(f'--loss: {err}') from None
        if self.train_dir is None and self.dataset is None and self.clean_dir is None:
            raise ConfigError('give --train_dir (a folder with input/ and target/), '
                              '--clean_dir (a folder of clean photos) or --dataset NAME')


# annotation (a string under ``from __future__ import annotations``) -> argparse type: checked
# numbers (no nan, inf, 1e400 or negative counts) whatever parser the options are added to
_TYPES = {'int': cli_int, 'float': cli_float, 'str': str}


def add_options(parser: argparse.ArgumentParser) -> None:
    """One ``--name`` per field of :class:`TrainConfig`, with its default and help."""
    for f in fields(TrainConfig):
        kw = dict(help=f.metadata['help'])
        kw['default'] = f.default if f.default is not MISSING else []
        kind = str(f.type).replace(' | None', '')
        if kind == 'bool':
            kw['action'] = argparse.BooleanOptionalAction
        elif kind in _TYPES and kind != 'str':
            kw['type'] = _TYPES[kind]
        kw.update(f.metadata['cli'])
        parser.add_argument(f'--{f.name}', **kw)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key written twice in one mapping is an error (plain
    YAML keeps the last value without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f'key {key!r} is given twice (line {key_node.start_mark.line + 1}'
                                  f'); keep one')
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config_file(path: str, parser: argparse.ArgumentParser) -> dict:
    """Defaults from a YAML file, checked against the options (unknown key -> one line). A key
    given twice, or under two spellings (``batch-size`` and ``batch_size``), is refused."""
    try:
        with open(path) as fh:
            data = yaml.load(fh, Loader=_UniqueKeyLoader) or {}
    except ConfigError as err:
        raise ConfigError(f'--config {path}: {err}') from None
    except OSError as err:
        raise ConfigError(f'--config {path}: cannot read ({err.strerror})') from None
    except yaml.YAMLError as err:
        raise ConfigError(f'--config {path}: not valid YAML ({str(err).splitlines()[0]})') \
            from None
    if not isinstance(data, dict):
        raise ConfigError(f'--config {path}: expected a mapping of option: value')
    actions = {a.dest: a for a in parser._actions if a.dest not in ('help', 'config')}
    out, spelled = {}, {}
    for key, value in data.items():
        action = actions.get(str(key).replace('-', '_'))
        if action is None:
            raise ConfigError(f'--config {path}: unknown key {key!r} (keys are the options of '
                              f'train.py --help without --)')
        if action.dest in out:
            raise ConfigError(f'--config {path}: keys {spelled[action.dest]!r} and {key!r} are '
                              f'the same option; keep one')
        spelled[action.dest] = key
        try:
            if action.dest == 'model_opt':
                value = ([f'{k}={v}' for k, v in value.items()] if isinstance(value, dict)
                         else list(value or []))
            elif isinstance(action, argparse.BooleanOptionalAction):
                if not isinstance(value, bool):
                    raise ValueError('expected true or false')
            elif value is not None and action.type is not None:
                value = action.type(value)
            elif value is not None:
                value = str(value)
        except (TypeError, ValueError) as err:
            raise ConfigError(f'--config {path}: key {key!r}: bad value {value!r} ({err})') \
                from None
        unset = value is None and action.default is None   # a run's own config.yaml writes null
        if action.choices is not None and value not in action.choices and not unset:
            raise ConfigError(f'--config {path}: key {key!r}: {value!r} is not one of '
                              f'{", ".join(map(str, action.choices))}')
        out[action.dest] = value
    return out


def parse_model_opts(items: list[str], dim: int | None) -> dict:
    """``['T=2', 'en_num_blocks=[1,1,1,1]']`` (+ ``--dim``) -> constructor keyword arguments."""
    opts = {}
    for item in items:
        key, sep, value = str(item).partition('=')
        if not sep or not key.strip():
            raise ConfigError(f'--model_opt {item!r}: expected KEY=VALUE, e.g. dim=16')
        opts[key.strip()] = yaml.safe_load(value)
    if dim is not None and opts.get('dim', dim) != dim:
        raise ConfigError(f'--dim {dim} and --model_opt dim={opts["dim"]}: two widths; give one')
    if dim is not None:
        opts['dim'] = dim
    return opts


def config_from_args(args: dict) -> TrainConfig:
    """Parsed ``train.py`` options -> a checked :class:`TrainConfig`."""
    args = dict(args)
    args['model_opt'] = parse_model_opts(args.pop('model_opt') or [], args.pop('dim', None))
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in args.items() if k in names})
    cfg.validate()
    return cfg


# -- options that would have no effect (docs/reliability.md, "No option ignored in silence") --
# An option whose feature is off is refused: the user most likely forgot the option that turns
# it on. An option replaced by another one the user gave gets a note with the final value.
_NEEDS = (   # (options, when they act, what turns them on)
    (('rain', 'clean_fraction', 'samples_per_photo'), lambda c: c.clean_dir is not None,
     '--clean_dir (they shape the rain drawn over clean photos; --train_dir pairs have theirs)'),
    (('val_photos', 'val_size'), lambda c: c.holdout_family is not None,
     '--holdout_family (they make its validation pairs)'),
    (('val_tile', 'val_batch_size', 'val_images', 'val_every'),
     lambda c: bool(c.val_dir or c.dataset or c.holdout_family),
     '--val_dir, --dataset or --holdout_family (there is no validation set)'),
    (('recompute',), lambda c: c.fast, '--fast (it changes the fast training path)'),
    (('data_root',), lambda c: c.dataset is not None, '--dataset (it locates its folders)'),
)


def check_combination(cfg: TrainConfig, given: set[str], world_size: int = 1) -> list[str]:
    """Options in ``given`` (named on the command line or set in a --config file) that would
    have no effect: a :class:`ConfigError` when their feature is off; for an option another one
    replaces, the notes to print (final value and why)."""
    for names, active, needs in _NEEDS:
        idle = [n for n in names if n in given]
        if idle and not active(cfg):
            shown = ', '.join(f'--{n} {getattr(cfg, n)}' for n in idle)
            raise ConfigError(f'{shown}: no effect without {needs}; remove '
                              f'{"it" if len(idle) == 1 else "them"} or add what turns '
                              f'{"it" if len(idle) == 1 else "them"} on')
    notes = []
    if 'batch_size' in given and cfg.global_batch_size is not None:
        per = cfg.global_batch_size // max(world_size, 1)
        notes.append(f'--batch_size {cfg.batch_size} replaced: --global_batch_size '
                     f'{cfg.global_batch_size} over {world_size} process(es) is {per} per '
                     f'process')
    if 'num_epochs' in given and cfg.iters is not None:
        notes.append(f'--num_epochs {cfg.num_epochs} has no effect: --iters {cfg.iters} sets '
                     f'the length of the run')
    if 'val_dir' in given and cfg.holdout_family and ({'val_photos', 'val_size'} & given):
        notes.append(f'--val_dir {cfg.val_dir} is the validation set: --val_photos/--val_size '
                     f'are not used')
    if {'train_dir', 'val_dir'} <= given and cfg.dataset:
        notes.append(f'--dataset {cfg.dataset}: --train_dir and --val_dir replace both of its '
                     f'folders; it only names the run folder')
    return notes
