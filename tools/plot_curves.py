"""Plot a run's training loss and validation PSNR from its TensorBoard scalars (PNG).

    python tools/plot_curves.py --run experiments/spikerain-s_photos --out curve.png

Reads ``RUN/tensorboard`` (the scalars train.py logs: train/loss, val/psnr), smooths the loss
with a moving average, and draws loss (left axis) and validation PSNR (right axis) against the
iteration, so a model card can show how a shipped file was trained.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from utils.core.atomic import atomic_open, check_output_file
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import InputError


def read_scalars(logdir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag -> (steps, values), from every event file under ``logdir`` (last write wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(logdir), size_guidance={'scalars': 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get('scalars', []):
        by_step = {e.step: e.value for e in acc.Scalars(tag)}
        steps = np.array(sorted(by_step))
        out[tag] = (steps, np.array([by_step[s] for s in steps]))
    return out


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--run', type=Path, required=True, help='run folder (holds tensorboard/)')
    p.add_argument('--out', type=Path, required=True, help='PNG to write')
    p.add_argument('--smooth', type=int, default=50, help='moving-average window of the loss')
    p.add_argument('--title', default=None, help='figure title (default: the run folder name)')
    args = p.parse_args(argv)
    check_output_file('--out', args.out)
    logdir = args.run / 'tensorboard'
    if not logdir.is_dir():
        raise InputError(f'{logdir}: no TensorBoard folder (was the run made with --tensorboard?)')
    scalars = read_scalars(logdir)
    if 'train/loss' not in scalars:
        raise InputError(f'{logdir}: no train/loss scalars')
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    steps, loss = scalars['train/loss']
    k = max(1, min(args.smooth, len(loss)))
    smooth = np.convolve(loss, np.ones(k) / k, mode='valid')
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ax.plot(steps, loss, color='tab:blue', alpha=0.25, lw=0.8)
    ax.plot(steps[k - 1:], smooth, color='tab:blue', lw=1.6, label=f'train loss ({k}-step mean)')
    ax.set_xlabel('iteration')
    ax.set_ylabel('training loss', color='tab:blue')
    lines = ax.get_lines()[1:]
    if 'val/psnr' in scalars:
        vs, vp = scalars['val/psnr']
        ax2 = ax.twinx()
        lines += ax2.plot(vs, vp, 'o-', color='tab:red', lw=1.6, label='validation Y-PSNR (dB)')
        ax2.set_ylabel('validation PSNR (dB)', color='tab:red')
    ax.legend(lines, [ln.get_label() for ln in lines], loc='center right', fontsize=8)
    ax.set_title(args.title or args.run.name, fontsize=10)
    fig.tight_layout()
    with atomic_open(args.out, 'wb') as fh:
        fig.savefig(fh, format='png')
    print(f'{args.out}: {len(loss)} loss points, '
          f'{len(scalars.get("val/psnr", ([], []))[0])} validation points')
    return 0


if __name__ == '__main__':
    run_main(main, 'plot_curves.py')
