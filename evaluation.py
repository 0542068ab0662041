"""PSNR/SSIM of restored images against their targets, by the protocol deraining papers report.

``python evaluation.py --restored results/spikerain-s/Rain200L --target_path Rain200L/test/target``
pairs files by stem, scores the saved 8-bit images on the Y channel (MATLAB ``rgb2ycbcr``,
rounded), prints a table and the means, and optionally writes JSON/CSV reports.

Without ``--target_path`` (real rain, e.g. RW_Rain, has no ground truth) it gives the
no-reference scores NIQE, BRISQUE and PIQE of each image instead (lower is better; they track
people's judgement only loosely: docs/protocol.md); ``--no_reference`` adds them next to PSNR/SSIM.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.core.cli import ArgumentParser, run_main
from utils.core.device import configure_numerics, resolve_device
from utils.core.errors import InputError, SpikeDerainError, UsageError
from utils.data.image_io import image_size, is_image_file, list_images
from utils.eval.folders import (evaluate_pairs, evaluate_without_targets, format_table,
                                no_reference_text, pair_by_stem, psnr_text, write_csv_report,
                                write_json_report)
from utils.eval.metrics import LPIPSMetric, LPIPSUnavailable
from utils.eval.noreference import NoReferenceSizeError, check_size, parse_metrics
from utils.core.paths import check_writes


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--generated_images_path', '--restored', dest='restored', required=True,
                   help='folder of restored images')
    p.add_argument('--target_path', default=None,
                   help='folder of ground-truth images; without it, the no-reference scores of '
                        'every image in --restored (an image or a folder)')
    p.add_argument('--no_reference', nargs='?', const='all', default=None, metavar='METRICS',
                   help='no-reference scores, lower is better: niqe, brisque, piqe (comma-'
                        'separated), all or none (default: all without --target_path, none with '
                        'it; the flag alone: all). About 0.3 s per metric per megapixel on a CPU. '
                        'An image too small for a metric (NIQE: 192x96, BRISQUE: 14x14, PIQE: '
                        '16x16) is an error')
    p.add_argument('--test_y', action=argparse.BooleanOptionalAction, default=True,
                   help='score the Y channel (default, the published protocol); --no-test_y '
                        'scores RGB')
    p.add_argument('--crop_border', type=int, default=0,
                   help='pixels cropped from each border before scoring (default: 0, the protocol)')
    p.add_argument('--lpips', action='store_true',
                   help='also compute LPIPS (AlexNet); needs the optional `lpips` package and '
                        'its backbone weights')
    p.add_argument('--device', default='auto', help='device for LPIPS: auto (default), cpu or cuda')
    p.add_argument('--tf32', action='store_true',
                   help='allow TF32 in LPIPS on a CUDA GPU (default: off, true float32)')
    p.add_argument('--json', default=None, help='write per-image rows and means to this JSON file')
    p.add_argument('--csv', default=None, help='write per-image rows and means to this CSV file')
    p.add_argument('--quiet', action='store_true', help='print only the means, not every image')
    return p.parse_args(argv)


def restored_files(path: str) -> list[Path]:
    """The images to score without targets: ``path`` itself, or the images in the folder."""
    p = Path(path)
    if p.is_file():
        if not is_image_file(p):
            raise InputError(f'--restored {p}: not an image file')
        return [p]
    if not p.is_dir():
        raise InputError(f'--restored {p}: no such file or folder')
    files = list_images(p)
    if not files:
        raise InputError(f'--restored {p}: no images in the folder')
    return files


def score_without_targets(args, metrics: list[str]) -> int:
    """NIQE/BRISQUE/PIQE of every image in --restored: table, means, reports."""
    if not metrics:
        raise UsageError('--no_reference none: without --target_path there is nothing else to '
                         'score')
    if args.lpips:
        raise UsageError('--lpips compares with a target: it needs --target_path')
    files = restored_files(args.restored)
    check_writes([], [('image being scored', f) for f in files],
                 files=[(f'--{opt}', getattr(args, opt)) for opt in ('json', 'csv')
                        if getattr(args, opt)])
    for f in files:                             # a too-small image: one line, before any work
        try:
            check_size(*image_size(f), metrics)
        except NoReferenceSizeError as err:
            raise NoReferenceSizeError(f'{f}: {err}') from None
    rows, means = evaluate_without_targets(files, metrics, progress=not args.quiet)
    if not args.quiet:
        print(format_table(rows, means))
    print(f'{means["images"]} images, no targets (no-reference, lower is better): '
          f'{no_reference_text(means, metrics)}')
    settings = dict(restored=args.restored, target=None, no_reference=metrics)
    if args.json:
        write_json_report(args.json, rows, means, settings)
    if args.csv:
        write_csv_report(args.csv, rows, means)
    return 0


def check_combination(args: argparse.Namespace) -> None:
    """An option that would have no effect is refused, naming what it needs (docs/reliability.md:
    no option ignored in silence)."""
    rules = ((not args.lpips, [f'--device {args.device}'] * (args.device != 'auto')
              + ['--tf32'] * args.tf32, '--lpips (LPIPS is what runs on a device)'),
             (args.target_path is None, [f'--crop_border {args.crop_border}'] *
              bool(args.crop_border) + ['--no-test_y'] * (not args.test_y),
              '--target_path (they shape PSNR/SSIM; the no-reference scores take the whole '
              'image)'))
    for off, idle, needs in rules:
        if off and idle:
            raise UsageError(f'{", ".join(idle)}: no effect without {needs}')


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.crop_border < 0:
        raise UsageError(f'--crop_border {args.crop_border}: must be >= 0')
    check_combination(args)
    try:
        metrics = parse_metrics(args.no_reference or ('none' if args.target_path else 'all'))
    except ValueError as err:
        raise UsageError(f'--no_reference {err}') from None
    if args.target_path is None:
        return score_without_targets(args, metrics)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    pairs = pair_by_stem(args.restored, args.target_path)
    configure_numerics(device, tf32=args.tf32)
    check_writes([], [('--target_path', args.target_path),
                      *(('image being scored', p) for pair in pairs for p in pair)],
                 files=[(f'--{opt}', getattr(args, opt)) for opt in ('json', 'csv')
                        if getattr(args, opt)])
    lpips, lpips_error = None, None
    if args.lpips:
        try:
            lpips = LPIPSMetric(device=str(device))
        except (LPIPSUnavailable, ValueError) as err:
            lpips_error = str(err)
    rows, means = evaluate_pairs(pairs, args.test_y, args.crop_border, lpips,
                                 progress=not args.quiet, no_reference=metrics)
    if not args.quiet:
        print(format_table(rows, means))
    channel = 'Y' if args.test_y else 'RGB'
    extra = f', LPIPS {means["lpips"]:.4f}' if 'lpips' in means else ''
    if metrics:
        extra += f'; no-reference (lower is better): {no_reference_text(means, metrics)}'
    print(f'{means["images"]} images ({channel}, crop_border {args.crop_border}): '
          f'{psnr_text(means)}, SSIM {means["ssim"]:.4f}{extra}')
    settings = dict(restored=args.restored, target=args.target_path, test_y=args.test_y,
                    crop_border=args.crop_border, lpips=lpips is not None,
                    no_reference=metrics)
    if args.json:
        write_json_report(args.json, rows, means, settings)
    if args.csv:
        write_csv_report(args.csv, rows, means)
    if lpips_error:                             # PSNR/SSIM are reported; LPIPS could not be
        raise SpikeDerainError(f'--lpips: {lpips_error}')
    return 0


if __name__ == '__main__':
    run_main(main, 'evaluation.py')
