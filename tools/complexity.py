"""Parameters, MACs, SOPs and energy of the derainers: the papers' efficiency table in one command.

MACs are counted at 1x3xSIZExSIZE with torch.utils.flop_counter; firing rates are measured on
the images of --images with the weights of --weights; energy is priced by --energy_model
(utils/efficiency/energy.py ENERGY_CONVENTIONS): ``horowitz`` = 4.6 pJ x MACs of layers fed by
real values + 0.9 pJ x SOPs of layers fed by spikes at 256x256; ``papers`` = the SNN deraining
papers' 12.5 pJ per real-input MAC + 77 fJ per SOP + 3.7 pJ per emitted spike at 128x128.
``--neuron relu`` scores the ANN twins (every spiking neuron a ReLU), ``both`` both. Example:
``python tools/complexity.py --model spikerain-s --weights w.pth --images data/demo/test/input``
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from models import available_models, build_from_checkpoint, build_model, is_ann_twin
from utils.core.atomic import atomic_open, check_output_file, write_text_atomic
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import InputError, UsageError
from utils.efficiency.energy import (ENERGY_CONVENTIONS, EnergyReport, energy_report,
                                     synthetic_rainy_images)
from utils.data.image_io import list_images, read_image_tensor
from utils.inference.memory import check_fits


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
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
    p.add_argument('--energy_model', choices=sorted(ENERGY_CONVENTIONS), default='horowitz',
                   help='energy convention: horowitz (4.6 pJ/MAC, 0.9 pJ/SOP, 256x256) or papers '
                        '(12.5 pJ/MAC, 77 fJ/SOP, 3.7 pJ/spike, 128x128); see '
                        'utils/efficiency/energy.py')
    p.add_argument('--size', type=int, default=None,
                   help="input side for counting MACs (default: the convention's, 256 or 128)")
    p.add_argument('--neuron', choices=('lif', 'relu', 'both'), default='lif',
                   help='lif: the spiking models; relu: their ANN twins (every spiking neuron a '
                        'ReLU); both: each model and its twin. With --weights the checkpoint '
                        'says which it is')
    p.add_argument('--per_layer', action='store_true', help='also print every layer')
    p.add_argument('--json', default=None, help='write the full report to this JSON file')
    p.add_argument('--plot', default=None, help='plot per-layer firing rates to this PNG file')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> list[str]:
    """The models to report; raises UsageError naming the bad option."""
    names = available_models() if args.model == 'all' else [args.model]
    if args.model != 'all' and args.model not in available_models():
        raise UsageError(f'--model {args.model!r}: unknown; choose one of '
                         f'{", ".join(available_models())} or all')
    if args.weights is not None and len(names) != 1:
        raise UsageError('--weights needs a single --model (not all)')
    if args.size is None:
        args.size = ENERGY_CONVENTIONS[args.energy_model].size
    if args.size < 8:
        raise UsageError(f'--size {args.size}: must be at least 8')
    if args.weights is not None and args.neuron != 'lif':
        raise UsageError(f'--neuron {args.neuron}: not with --weights (the checkpoint says '
                         f'whether it is a spiking model or an ANN twin)')
    if args.max_images < 0 or args.synthetic < 1 or args.synthetic_size < 8:
        raise UsageError('--max_images must be >= 0, --synthetic >= 1, --synthetic_size >= 8')
    if args.threads < 0:
        raise UsageError(f'--threads {args.threads}: must be >= 0')
    default = parse_args([])             # an option set away from its default had an effect
    idle = [f'--{o} {getattr(args, o)}' for o in ('synthetic', 'synthetic_size')
            if getattr(args, o) != getattr(default, o)]
    if args.images is not None and idle:
        raise UsageError(f'{", ".join(idle)}: no effect with --images (the firing rates come '
                         f'from its images)')
    if args.images is None and args.max_images != default.max_images:
        raise UsageError(f'--max_images {args.max_images}: no effect without --images (the '
                         f'firing rates come from --synthetic images)')
    for opt in ('json', 'plot'):
        path = getattr(args, opt)
        if path is not None and args.images is not None and \
                Path(path).resolve().parent == Path(args.images).resolve():
            raise UsageError(f'--{opt} {path}: is inside the --images folder; refusing to write')
        check_output_file(f'--{opt}', path)          # before the measurement, not after it
    return names


def load_images(args: argparse.Namespace) -> tuple[list[torch.Tensor], str]:
    """The images for the firing rates, and a phrase that says where they came from."""
    if args.images is None:
        images = synthetic_rainy_images(args.synthetic, args.synthetic_size)
        return images, (f'{len(images)} SYNTHETIC {args.synthetic_size}x{args.synthetic_size} '
                        f'images (no --images given)')
    folder = Path(args.images)
    if not folder.is_dir():
        raise InputError(f'--images {folder}: folder not found')
    files = list_images(folder)
    if not files:
        raise InputError(f'--images {folder}: no images found')
    files = files[:args.max_images] if args.max_images else files
    return [read_image_tensor(f) for f in files], f'{len(files)} images from {folder}'


def build(name: str, weights: str | None, neuron: str = 'lif') -> torch.nn.Module:
    if weights is not None:
        return build_from_checkpoint(weights, name).eval()
    torch.manual_seed(0)             # random weights, but the same ones on every run
    return build_model(name, neuron=neuron).eval()


def model_label(name: str, model: torch.nn.Module) -> str:
    """The row name: the registry name, with ``/relu`` for an ANN twin."""
    return f'{name}/relu' if is_ann_twin(model) else name


def convention_lines(name: str) -> list[str]:
    """What the energy column means: the convention's formula and its source."""
    conv = ENERGY_CONVENTIONS[name]
    return [f'energy convention {conv.name!r}: {conv.formula()}', f'  source: {conv.source}']


def summary_table(reports: dict[str, EnergyReport]) -> str:
    width = max([16] + [len(n) + 2 for n in reports])
    head = (f'{"model":<{width}}{"params":>12}{"GMACs":>10}{"real GMACs":>12}{"GSOPs":>10}'
            f'{"Mspikes":>10}{"energy mJ":>11}{"firing rate":>13}')
    rows = [head, '-' * len(head)]
    for name, r in reports.items():
        rows.append(f'{name:<{width}}{r.params:>12,}{r.macs / 1e9:>10.2f}'
                    f'{r.real_macs / 1e9:>12.2f}{r.sops / 1e9:>10.2f}{r.spikes / 1e6:>10.2f}'
                    f'{r.energy_mj:>11.3f}{r.mean_firing_rate:>13.3f}')
    return '\n'.join(rows)


def layer_table(name: str, r: EnergyReport) -> str:
    head = f'{"layer":<44}{"input":>6}{"MMACs":>10}{"rate":>7}{"MSOPs":>10}{"energy uJ":>11}'
    rows = [f'{name}: {len(r.layers)} layers', head]
    for lay in r.layers:
        rate = f'{lay.input_rate:.3f}' if lay.input_rate is not None else '-'
        rows.append(f'{lay.name[-44:]:<44}{lay.input:>6}{lay.macs / 1e6:>10.2f}{rate:>7}'
                    f'{lay.sops / 1e6:>10.2f}{lay.energy_pj / 1e6:>11.2f}')
    if r.spike_energy_pj:
        rows.append(f'{f"emitted spikes: {r.spikes / 1e6:.2f} M":<44}{"":>6}{"":>10}{"":>7}'
                    f'{"":>10}{r.spike_energy_pj / 1e6:>11.2f}')
    rows.append(f'{"total":<44}{"":>6}{r.macs / 1e6:>10.2f}{"":>7}{r.sops / 1e6:>10.2f}'
                f'{r.energy_mj * 1e3:>11.2f}')
    return '\n'.join(rows)


def write_json(path: str, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1))


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
        ax.set_title(f'{name}: firing rate per neuron layer '
                     f'(dashed: mean {r.mean_firing_rate:.3f})',
                     fontsize=9)
        ax.set_xlim(-1, max(len(rates), 1))
        ax.set_ylabel('rate')
    axes[-1, 0].set_xlabel('neuron layer (forward order)')
    fig.tight_layout()
    try:
        with atomic_open(path, 'wb') as fh:
            fig.savefig(fh, format='png', dpi=110)
    finally:
        plt.close(fig)


def check_memory(model: torch.nn.Module, images: list[torch.Tensor], label: str) -> None:
    """Each image is one whole forward (firing rates need the whole image): warn over the memory
    budget, refuse before the forward over the free memory."""
    for h, w in sorted({tuple(im.shape[-2:]) for im in images}):
        warning = check_fits(model, h, w, what=f'--images ({label}, {w}x{h})',
                             fix='use smaller images')
        if warning:
            print(f'warning: {warning}', file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    images, source = load_images(args)
    neurons = ['lif', 'relu'] if args.neuron == 'both' else [args.neuron]
    jobs = [(name, neuron) for name in names for neuron in neurons]
    reports = {}
    for name, neuron in tqdm(jobs, desc='models', disable=len(jobs) == 1):
        model = build(name, args.weights, neuron)
        label = model_label(name, model)
        check_memory(model, images, label)
        reports[label] = energy_report(model, tqdm(images, desc=label, leave=False),
                                       (args.size, args.size), args.energy_model)
    weights = f'weights {args.weights}' if args.weights else \
        'RANDOM weights (no --weights given): energy and rates mean nothing for the papers'
    print(f'MACs at 1x3x{args.size}x{args.size}; firing rates from {source}; {weights}')
    print('\n'.join(convention_lines(args.energy_model)))
    print(summary_table(reports))
    if args.per_layer:
        for name, r in reports.items():
            print('\n' + layer_table(name, r))
    if args.json:
        write_json(args.json, {'size': args.size, 'images': source, 'weights': args.weights,
                               'energy_model': args.energy_model,
                               'energy_convention': asdict(ENERGY_CONVENTIONS[args.energy_model]),
                               'models': {n: r.to_dict() for n, r in reports.items()}})
        print(f'wrote {args.json}')
    if args.plot:
        plot_rates(args.plot, reports)
        print(f'wrote {args.plot}')
    return 0


if __name__ == '__main__':
    run_main(main, 'complexity.py')
