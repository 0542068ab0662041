"""Train a spiking derainer: python train.py --model spikerain-s --train_dir DIR --val_dir DIR.

Settings come from the defaults (the official SpikeRain recipe, plus flips/rotations), then
``--config FILE.yaml``, then the command line. Launch with ``torchrun --nproc_per_node=N train.py ...`` for several
GPUs (or CPU processes). Re-running the same command continues an interrupted run.
One run per run folder (a second one is refused, naming the first's PID). Exit codes: 0 done,
1 error (one line), 2 bad option, 130 Ctrl-C/SIGINT, 143 SIGTERM (both keep the last complete
model_last.pth; the same command continues from it).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import fields

import yaml

from models import available_models
from utils import distributed as dist_utils
from utils.cli import ArgumentParser, run_main
from utils.trainer import ConfigError, TrainConfig, Trainer


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except empty ones."""

    def _get_help_string(self, action):
        if action.default in (None, []):
            return action.help
        return super()._get_help_string(action)


# argparse that reports a bad option in one line, exit 2 (no usage dump): utils.cli.run_main.
OneLineParser = ArgumentParser


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = OneLineParser(prog='train.py', description=__doc__,
                      formatter_class=HelpFormatter)
    add = p.add_argument
    add('--config', help='YAML file of settings (keys are these options without --); '
        'command-line options override it, e.g. configs/spikerain-s_rain200h.yaml')
    add('--model', default=d.model, choices=available_models(), help='model to train')
    add('--dim', type=int, help='override the model width (shortcut for --model_opt dim=N)')
    add('--model_opt', action='append', default=[], metavar='KEY=VALUE',
        help='override a model constructor option, e.g. T=2 or en_num_blocks=[1,1,1,1] '
             '(repeatable)')
    add('--init_weights', metavar='PATH', help='start from these weights (fine-tuning: a new '
        'run whose optimizer and schedule start fresh; a resumed run ignores it)')
    add('--train_dir', help='training folder holding input/ and target/')
    add('--clean_dir', help='folder of clean photos: every training sample is a new crop with '
        'synthetic rain drawn over it (mixable with --train_dir)')
    add('--rain', default=d.rain, help="--clean_dir rain: 'random' (every parameter drawn per "
        "sample), 'light', 'heavy', or several separated by commas (one drawn per sample)")
    add('--clean_fraction', type=float, default=d.clean_fraction,
        help='--clean_dir: share of samples left without rain (teaches the model to leave '
             'clean images alone)')
    add('--samples_per_photo', type=int, default=d.samples_per_photo,
        help='--clean_dir: samples drawn from each photo per epoch')
    add('--val_dir', help='validation folder holding input/ and target/ (whole images)')
    add('--dataset', help='benchmark preset (Rain200L, Rain200H, Rain1200, ...): uses '
        'DATA_ROOT/NAME/train and DATA_ROOT/NAME/test unless --train_dir/--val_dir are given')
    add('--data_root', default=d.data_root, help='folder holding the benchmark folders')
    add('--model_save_dir', help='run folder for checkpoints, logs and config.yaml '
        '[default: experiments/<model>_<dataset or training folder>]')
    add('--batch_size', type=int, default=d.batch_size, help='patches per step per process '
        '(under torchrun the global batch is N times this; see --global_batch_size)')
    add('--global_batch_size', type=int, default=d.global_batch_size,
        help='patches per step over all processes: sets --batch_size to this / number of '
             'processes (must divide evenly), so the papers\' batch is the same on any GPU count')
    add('--patch_size', type=int, default=d.patch_size, help='training patch side in pixels')
    add('--augment', action=argparse.BooleanOptionalAction, default=d.augment,
        help='random flips and 90-degree rotations of training patches')
    add('--lr', type=float, default=d.lr, help='peak learning rate (AdamW)')
    add('--min_lr', type=float, default=d.min_lr, help='learning rate at the end of the cosine')
    add('--weight_decay', type=float, default=d.weight_decay, help='AdamW weight decay')
    add('--num_epochs', type=int, default=d.num_epochs, help='training length in epochs')
    add('--iters', type=int, help='training length in optimizer steps (overrides --num_epochs)')
    add('--warmup', default=d.warmup, help='linear warm-up length: N iterations or Nep epochs')
    add('--loss', default=d.loss, help="loss: ssim (1-SSIM), psnr, l1, mse, charbonnier, or a "
        "weighted sum such as 'ssim+0.1*l1'")
    add('--grad_clip', type=float, default=d.grad_clip,
        help='clip the gradient norm to this value (0: off)')
    add('--accum_steps', type=int, default=d.accum_steps,
        help='accumulate gradients over this many batches per optimizer step')
    add('--amp', action=argparse.BooleanOptionalAction, default=d.amp,
        help='mixed precision (float16 autocast; CUDA only, ignored on the CPU)')
    add('--tf32', action=argparse.BooleanOptionalAction, default=d.tf32,
        help='allow TF32 convolutions/matmuls on a CUDA GPU (faster on Ampere or newer, less '
             'exact; default: off, true float32; see docs/training.md)')
    add('--log_every', type=int, default=d.log_every,
        help='read the loss back from the device (progress bar, TensorBoard, non-finite check) '
             'every N optimizer steps; the other steps never wait for the GPU')
    add('--val_every', default=d.val_every,
        help='validate every N iterations or Nep epochs (0: only at the end)')
    add('--val_tile', type=int, help='validate in tiles of this size (bounds GPU memory on '
        'large images) [default: whole images]')
    add('--val_images', type=int, default=d.val_images,
        help='validation images shown in TensorBoard')
    add('--save_every', default=d.save_every, help='write model_last.pth every N iterations or '
        'Nep epochs (0: only at the end); always written when the run ends')
    add('--stop_after', type=int, help='end this run after N more iterations, saving its state '
        '(for time-limited jobs; the same command continues it)')
    add('--resume', default=d.resume, help="'auto': continue from the run folder's "
        "model_last.pth if there is one; a path: continue from that file; 'none': refuse to "
        "touch an existing run")
    add('--seed', type=int, default=d.seed, help='seed of initialisation, shuffling and crops')
    add('--device', default=d.device,
        help='auto: CUDA when available, else CPU; cpu; cuda; cuda:N (one process only: '
             'under torchrun each process takes the GPU of its LOCAL_RANK)')
    add('--workers', type=int, default=d.workers, help='DataLoader worker processes')
    add('--fast', action=argparse.BooleanOptionalAction, default=d.fast,
        help='fast training path (fused LIF, channels-last) where the model has one; '
             '--no-fast: the plain reference forward')
    add('--tensorboard', action=argparse.BooleanOptionalAction, default=d.tensorboard,
        help='log loss, lr, PSNR/SSIM, images and firing rates to <run folder>/tensorboard')
    return p


def load_config_file(path: str, parser: argparse.ArgumentParser) -> dict:
    """Defaults from a YAML file, checked against the options (unknown key -> one line)."""
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as err:
        raise ConfigError(f'--config {path}: cannot read ({err.strerror})') from None
    except yaml.YAMLError as err:
        raise ConfigError(f'--config {path}: not valid YAML ({str(err).splitlines()[0]})') \
            from None
    if not isinstance(data, dict):
        raise ConfigError(f'--config {path}: expected a mapping of option: value')
    actions = {a.dest: a for a in parser._actions if a.dest not in ('help', 'config')}
    out = {}
    for key, value in data.items():
        action = actions.get(str(key).replace('-', '_'))
        if action is None:
            raise ConfigError(f'--config {path}: unknown key {key!r} (keys are the options of '
                              f'train.py --help without --)')
        try:
            if key == 'model_opt':
                value = ([f'{k}={v}' for k, v in value.items()] if isinstance(value, dict)
                         else list(value))
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
        if action.choices is not None and value not in action.choices:
            raise ConfigError(f'--config {path}: key {key!r}: {value!r} is not one of '
                              f'{", ".join(map(str, action.choices))}')
        out[action.dest] = value
    return out


def parse_model_opts(items: list[str], dim: int | None) -> dict:
    opts = {}
    for item in items:
        key, sep, value = str(item).partition('=')
        if not sep or not key.strip():
            raise ConfigError(f'--model_opt {item!r}: expected KEY=VALUE, e.g. dim=16')
        opts[key.strip()] = yaml.safe_load(value)
    if dim is not None:
        opts['dim'] = dim
    return opts


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--config')
    known, _ = pre.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_config_file(known.config, parser))
    args = vars(parser.parse_args(argv))
    args['model_opt'] = parse_model_opts(args.pop('model_opt'), args.pop('dim'))
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in args.items() if k in names})
    cfg.validate()
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Errors are raised; utils.cli.run_main prints the one line and exits: 0 done (or
    --stop_after reached), 1 error, 2 bad option or config value, 130 interrupted by Ctrl-C /
    SIGINT, 143 terminated by SIGTERM; after 130 or 143 the run folder's model_last.pth is the
    last complete checkpoint and the same command continues."""
    trainer = None
    try:
        cfg = parse_config(argv)
        info = dist_utils.setup(cfg.device)
        try:
            trainer = Trainer(cfg, info)
            trainer.fit()
        finally:
            dist_utils.cleanup()
    except KeyboardInterrupt as stop:            # run_main prints it with what was kept
        if trainer is not None and trainer.saved_iteration is not None:
            stop.detail = (f'{trainer.last_path} (iteration {trainer.saved_iteration}) is the '
                           f'last complete checkpoint; the same command continues from it')
        elif trainer is not None:
            stop.detail = 'no checkpoint had been saved yet; the same command starts over'
        else:
            stop.detail = 'nothing was written'
        raise
    return 0


def program_name() -> str:
    """``train.py``, or ``train.py (rank N)`` under torchrun: which process said it."""
    if dist_utils.launched_by_torchrun():
        return f'train.py (rank {os.environ.get("RANK")})'
    return 'train.py'


if __name__ == '__main__':
    run_main(main, program_name())
