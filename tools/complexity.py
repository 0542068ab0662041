"""Parameters, MACs, SOPs and energy of the derainers: the papers' efficiency table in one command.

MACs are counted at 1x3xSIZExSIZE with torch.utils.flop_counter; firing rates are measured on
the images of --images with the weights of --weights; energy = 4.6 pJ x MACs of layers fed by
real values + 0.9 pJ x SOPs of layers fed by spikes (see utils/energy.py). Example:
``python tools/complexity.py --model spikerain-s --weights w.pth --images data/demo/test/input``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import WeightsError, available_models, build_from_checkpoint, build_model  # noqa: E402
from utils.cli import describe, print_error, run_main  # noqa: E402
from utils.energy import EnergyReport, energy_report, synthetic_rainy_images  # noqa: E402
from utils.image_io import ImageReadError, list_images, read_image_tensor  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--model', default='all',
                   help=f'registered model name or "all" ({", ".join(available_models())})')
    p.add_argument('--weights', default=None,
                   help='checkpoint to load (needs a single --model); default: random init')
    p.add_argument('--images', default=None,
                   help='folder of (rainy) images for the firing rates, e.g. '
                        'data/demo/test/input; default: a few synthetic rainy images')
    p.add_argument('--max_images', type=int, default=8,
                   help='use at most this many images of --images (0: all)')
    p.add_argument('--synthetic', type=int, default=2,
                   help='number of synthetic images when --images is not given')
    p.add_argument('--synthetic_size', type=int, default=64, help='side of the synthetic images')
    p.add_argument('--size', type=int, default=256, help='input side for counting MACs')
    p.add_argument('--per_layer', action='store_true', help='also print every layer')
    p.add_argument('--json', default=None, help='write the full report to this JSON file')
    p.add_argument('--plot', default=None, help='plot per-layer firing rates to this PNG file')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> list[str]:
    """The models to report; raises ValueError naming the bad option."""
    names = available_models() if args.model == 'all' else [args.model]
    if args.model != 'all' and args.model not in available_models():
        raise ValueError(f'--model {args.model!r}: unknown; choose one of '
                         f'{", ".join(available_models())} or all')
    if args.weights is not None and len(names) != 1:
        raise ValueError('--weights needs a single --model (not all)')
    if args.size < 8:
        raise ValueError(f'--size {args.size}: must be at least 8')
    if args.max_images < 0 or args.synthetic < 1 or args.synthetic_size < 8:
        raise ValueError('--max_images must be >= 0, --synthetic >= 1, --synthetic_size >= 8')
    if args.threads < 0:
        raise ValueError(f'--threads {args.threads}: must be >= 0')
    for opt in ('json', 'plot'):
        path = getattr(args, opt)
        if path is not None and args.images is not None and \
                Path(path).resolve().parent == Path(args.images).resolve():
            raise ValueError(f'--{opt} {path}: is inside the --images folder; refusing to write')
    return names


def load_images(args: argparse.Namespace) -> tuple[list[torch.Tensor], str]:
    """The images for the firing rates, and a phrase that says where they came from."""
    if args.images is None:
        images = synthetic_rainy_images(args.synthetic, args.synthetic_size)
        return images, (f'{len(images)} SYNTHETIC {args.synthetic_size}x{args.synthetic_size} '
                        f'images (no --images given)')
    folder = Path(args.images)
    if not folder.is_dir():
        raise ValueError(f'--images {folder}: folder not found')
    files = list_images(folder)
    if not files:
        raise ValueError(f'--images {folder}: no images found')
    files = files[:args.max_images] if args.max_images else files
    return [read_image_tensor(f) for f in files], f'{len(files)} images from {folder}'


def build(name: str, weights: str | None) -> torch.nn.Module:
    model = build_model(name) if weights is None else build_from_checkpoint(weights, name)
    return model.eval()


def summary_table(reports: dict[str, EnergyReport]) -> str:
    head = (f'{"model":<16}{"params":>12}{"GMACs":>10}{"real GMACs":>12}{"GSOPs":>10}'
            f'{"energy mJ":>11}{"firing rate":>13}')
    rows = [head, '-' * len(head)]
    for name, r in reports.items():
        rows.append(f'{name:<16}{r.params:>12,}{r.macs / 1e9:>10.2f}{r.real_macs / 1e9:>12.2f}'
                    f'{r.sops / 1e9:>10.2f}{r.energy_mj:>11.3f}{r.mean_firing_rate:>13.3f}')
    return '\n'.join(rows)


def layer_table(name: str, r: EnergyReport) -> str:
    head = f'{"layer":<44}{"input":>6}{"MMACs":>10}{"rate":>7}{"MSOPs":>10}{"energy uJ":>11}'
    rows = [f'{name}: {len(r.layers)} layers', head]
    for lay in r.layers:
        rate = f'{lay.input_rate:.3f}' if lay.input_rate is not None else '-'
        rows.append(f'{lay.name[-44:]:<44}{lay.input:>6}{lay.macs / 1e6:>10.2f}{rate:>7}'
                    f'{lay.sops / 1e6:>10.2f}{lay.energy_pj / 1e6:>11.2f}')
    rows.append(f'{"total":<44}{"":>6}{r.macs / 1e6:>10.2f}{"":>7}{r.sops / 1e6:>10.2f}'
                f'{r.energy_mj * 1e3:>11.2f}')
    return '\n'.join(rows)


def _atomic_target(path: Path, suffix: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=suffix, dir=path.parent)
    os.close(fd)
    return tmp


def write_json(path: str, data: dict) -> None:
    path = Path(path)
    tmp = _atomic_target(path, '.tmp')
    try:
        with open(tmp, 'w') as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def plot_rates(path: str, reports: dict[str, EnergyReport]) -> None:
    """One bar chart per model: each neuron layer's firing rate, in forward order."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(reports), 1, figsize=(12, 2.6 * len(reports)), squeeze=False)
    for ax, (name, r) in zip(axes[:, 0], reports.items()):
        rates = list(r.neuron_rates.values())
        ax.bar(range(len(rates)), rates, width=0.9)
        ax.axhline(r.mean_firing_rate, color='k', lw=0.8, ls='--')
        ax.set_title(f'{name}: firing rate per neuron layer (dashed: mean {r.mean_firing_rate:.3f})',
                     fontsize=9)
        ax.set_xlim(-1, max(len(rates), 1))
        ax.set_ylabel('rate')
    axes[-1, 0].set_xlabel('neuron layer (forward order)')
    fig.tight_layout()
    path = Path(path)
    tmp = _atomic_target(path, '.png')
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        names = check_args(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        images, source = load_images(args)
        reports = {}
        for name in tqdm(names, desc='models', disable=len(names) == 1):
            model = build(name, args.weights)
            reports[name] = energy_report(model, tqdm(images, desc=name, leave=False),
                                          (args.size, args.size))
    except (ValueError, ImageReadError, WeightsError) as err:
        print_error(describe(err), 'complexity.py')
        return 2 if str(err).startswith('--') else 1
    weights = f'weights {args.weights}' if args.weights else \
        'RANDOM weights (no --weights given): energy and rates mean nothing for the papers'
    print(f'MACs at 1x3x{args.size}x{args.size}; firing rates from {source}; {weights}')
    print('energy = 4.6 pJ x MACs of real-input layers + 0.9 pJ x SOPs of spike-input layers')
    print(summary_table(reports))
    if args.per_layer:
        for name, r in reports.items():
            print('\n' + layer_table(name, r))
    if args.json:
        write_json(args.json, {'size': args.size, 'images': source, 'weights': args.weights,
                               'models': {n: r.to_dict() for n, r in reports.items()}})
        print(f'wrote {args.json}')
    if args.plot:
        plot_rates(args.plot, reports)
        print(f'wrote {args.plot}')
    return 0


if __name__ == '__main__':
    run_main(main, 'complexity.py')
