"""Train a spiking derainer: python train.py --model spikerain-s --train_dir DIR --val_dir DIR.

Settings come from the defaults (the official SpikeRain recipe, plus flips/rotations), then
``--config FILE.yaml``, then the command line. Launch with
``torchrun --nproc_per_node=N train.py ...`` for several
GPUs (or CPU processes). Re-running the same command continues an interrupted run.
One run per run folder (a second one is refused, naming the first's PID). Exit codes: 0 done,
1 error (one line), 2 bad option, 130 Ctrl-C/SIGINT, 143 SIGTERM (both keep the last complete
model_last.pth; the same command continues from it).
"""
from __future__ import annotations

import argparse
import os
from utils.train import distributed as dist_utils
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import UsageError
from utils.core.settings import env_int
from utils.train.config import (TrainConfig, add_options, check_combination, config_from_args,
                                load_config_file)
from utils.train.trainer import Trainer


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except empty ones."""

    def _get_help_string(self, action):
        if action.default in (None, []):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The options are TrainConfig's fields (utils/train/config.py), plus --config and --dim."""
    # utils.core.cli's ArgumentParser: a bad option is one line and exit 2 (no usage dump)
    p = ArgumentParser(prog='train.py', description=__doc__, formatter_class=HelpFormatter)
    p.add_argument('--config', help='YAML file of settings (keys are these options without --); '
                   'command-line options override it, e.g. configs/spikerain-s_rain200h.yaml')
    p.add_argument('--dim', type=int,
                   help='override the model width (shortcut for --model_opt dim=N)')
    add_options(p)
    return p


def given_options(argv: list[str] | None, from_file: dict) -> set[str]:
    """The options the user set: named on the command line, or in the --config file with a value
    other than the default (a run's own config.yaml writes every option)."""
    parser = build_parser()
    defaults = {a.dest: a.default for a in parser._actions}
    for action in parser._actions:     # not set_defaults(): argparse would parse the marker
        action.default = argparse.SUPPRESS
    named = set(vars(parser.parse_args(argv)))
    return named | {k for k, v in from_file.items() if v is not None and v != defaults.get(k)}


def parse_options(argv: list[str] | None = None) -> tuple[TrainConfig, list[str]]:
    """The checked config and the notes on options another one replaces; an option that would
    have no effect is refused (utils/train/config.py: check_combination)."""
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--config')
    known, _ = pre.parse_known_args(argv)
    from_file = load_config_file(known.config, parser) if known.config else {}
    parser.set_defaults(**from_file)
    cfg = config_from_args(vars(parser.parse_args(argv)))
    world = env_int('WORLD_SIZE', 1)
    return cfg, check_combination(cfg, given_options(argv, from_file) - {'config'}, world)


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    return parse_options(argv)[0]


def main(argv: list[str] | None = None) -> int:
    """Errors are raised; utils.core.cli.run_main prints the one line and exits: 0 done (or
    --stop_after reached), 1 error, 2 bad option or config value, 130 interrupted by Ctrl-C /
    SIGINT, 143 terminated by SIGTERM; after 130 or 143 the run folder's model_last.pth is the
    last complete checkpoint and the same command continues."""
    trainer = None
    try:
        cfg, notes = parse_options(argv)
        info = dist_utils.setup(cfg.device)
        try:
            trainer = Trainer(cfg, info, notes=notes)
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
    try:
        if dist_utils.launched_by_torchrun():
            return f'train.py (rank {os.environ.get("RANK")})'
    except UsageError:                # a bad WORLD_SIZE: run_main says so, in one line
        pass
    return 'train.py'


if __name__ == '__main__':
    run_main(main, program_name())
