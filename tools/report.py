"""One self-contained HTML page to compare restorations by eye: sliders, zoom, scores, energy.

Each image gets a before/after slider per model (rainy input vs restored), a click zooms every
column on the same spot, scores are PSNR/SSIM on Y where targets exist (no-reference scores where
not), and each model's energy and firing rates come from --complexity JSON files
(tools/complexity.py --json) or are measured here from the weights its folder's manifest names.
The page loads nothing from the network; previews are embedded, full images linked. Example:
``python tools/report.py --input data/demo/test --restored demo_output/spikerain-s
demo_output/vlif-net-tiny --out demo_output/report.html``
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.core.atomic import check_writable
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import UsageError
from utils.eval.report import (ReportSet, attach_complexity, efficiency_entry, gather,
                               no_reference_scorer, read_complexity_json, render_html, score,
                               write_report)
from utils.inference.outputs import command_line, file_sha256


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--input', required=True,
                   help='folder of rainy inputs, or a benchmark split (input/ and target/)')
    p.add_argument('--restored', required=True, nargs='+',
                   help="restored folders (test.py --save_path), one per model, side by side")
    p.add_argument('--labels', nargs='+', default=None,
                   help="column names (default: each folder's model, from its manifest)")
    p.add_argument('--target', default=None,
                   help='folder of clean targets (default: the split\'s target/, if any)')
    p.add_argument('--out', default='report.html', help='HTML file to write')
    p.add_argument('--title', default='Deraining report', help='page title')
    p.add_argument('--max_images', type=int, default=0,
                   help='show the first N inputs by name (0: all)')
    p.add_argument('--preview', type=int, default=1024,
                   help='longest side of the embedded JPEG previews, pixels')
    p.add_argument('--quality', type=int, default=85, help='JPEG quality of the previews')
    p.add_argument('--complexity', nargs='+', default=[],
                   help='tools/complexity.py --json files with the models\' energy and firing '
                        'rates (matched by model and weights file name)')
    p.add_argument('--energy', choices=('measure', 'none'), default='measure',
                   help='for a model no --complexity file covers: measure its energy from the '
                        "weights its folder's manifest names, or leave it out")
    p.add_argument('--energy_model', default='horowitz',
                   help='energy convention when measuring (horowitz or papers; see '
                        'tools/complexity.py)')
    p.add_argument('--energy_images', type=int, default=2,
                   help='inputs (shrunk to at most 256 px) the firing rates are measured on')
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.preview < 16:
        raise UsageError(f'--preview {args.preview}: must be at least 16')
    if not 1 <= args.quality <= 95:
        raise UsageError(f'--quality {args.quality}: must be 1 to 95')
    if args.energy_images < 1:
        raise UsageError(f'--energy_images {args.energy_images}: must be at least 1')
    if not args.out.lower().endswith(('.html', '.htm')):
        raise UsageError(f'--out {args.out}: must end in .html')
    from utils.efficiency.energy import ENERGY_CONVENTIONS
    if args.energy_model not in ENERGY_CONVENTIONS:
        raise UsageError(f'--energy_model {args.energy_model!r}: choose one of '
                         f'{", ".join(sorted(ENERGY_CONVENTIONS))}')
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f'--out {out}: is a folder; give the HTML file to write')
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f'--out {out}: {folder} is a file, not a folder')
    check_writable(folder)          # before the scoring and energy work, not after


def _weights_file(recipe: dict, manifest: dict) -> Path | None:
    """The manifest's weights file as seen from here (or from the folder it was run in)."""
    name = recipe.get('weights')
    if not name:
        return None
    for candidate in (Path(name), Path(manifest.get('cwd', '.')) / name):
        if candidate.is_file():
            return candidate
    return None


def measure_energy(report: ReportSet, args: argparse.Namespace) -> None:
    """Energy and firing rates of each column still without them, from its manifest's weights
    (checked against the recorded SHA-256), on a few inputs shrunk to at most 256 px."""
    import torch

    from models import build_from_checkpoint
    from utils.data.image_io import read_image_rgb, resize_longest, uint8_to_tensor
    from utils.efficiency.energy import ENERGY_CONVENTIONS, energy_report
    conv = ENERGY_CONVENTIONS[args.energy_model]
    files = list(report.inputs.values())[:args.energy_images]
    images = None
    for col in report.columns:
        if col.efficiency is not None:
            continue
        recipe = col.recipe
        if args.energy == 'none':
            col.efficiency_note = 'energy left out (--energy none)'
            continue
        if not recipe:
            col.efficiency_note = 'no manifest: which model made it is unknown'
            continue
        weights = _weights_file(recipe, col.manifest)
        if weights is None:
            col.efficiency_note = (f'weights {recipe.get("weights")} not found; pass '
                                   f'--complexity')
            continue
        if file_sha256(weights) != recipe.get('weights_sha256'):
            col.efficiency_note = f'{weights} changed since it made these outputs (SHA-256)'
            continue
        if images is None:
            images = [uint8_to_tensor(resize_longest(read_image_rgb(f), 256)) for f in files]
        print(f'measuring energy of {col.label} ({weights}) on {len(images)} input(s)',
              flush=True)
        with torch.no_grad():
            model = build_from_checkpoint(weights, recipe.get('model')).eval()
            stats = energy_report(model, images, convention=conv).to_dict()
        col.efficiency = efficiency_entry(
            stats, weights=str(weights), convention=stats['convention'],
            images=f'{len(images)} input(s) from {report.input_dir}, at most 256 px',
            source='measured by tools/report.py')


def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    report = gather(args.input, args.restored, args.labels, args.target, args.max_images)
    no_ref = no_reference_scorer() if report.targets is None else None
    score(report, no_ref, progress=print)
    for path in args.complexity:
        attach_complexity(report, read_complexity_json(path))
    measure_energy(report, args)
    page = render_html(report, args.out, command_line('tools/report.py', argv), args.title,
                       args.preview, args.quality)
    out = write_report(args.out, page)
    n = len(report.columns)
    print(f'wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {len(report.stems)} images, '
          f'{n} model{"s" if n != 1 else ""})')
    return 0


if __name__ == '__main__':
    run_main(main, 'report.py')
