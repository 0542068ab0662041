"""PSNR/SSIM of restored images against their targets, by the protocol deraining papers report.

``python evaluation.py --restored results/spikerain-s/Rain200L --target_path Rain200L/test/target``
pairs files by stem, scores the saved 8-bit images on the Y channel (MATLAB ``rgb2ycbcr``,
rounded), prints a table and the means, and optionally writes JSON/CSV reports.
"""
from __future__ import annotations

import argparse

from utils.core.cli import ArgumentParser, run_main
from utils.core.device import configure_numerics, resolve_device
from utils.core.errors import SpikeDerainError, UsageError
from utils.eval.folders import (evaluate_pairs, format_table, pair_by_stem, psnr_text,
                                write_csv_report, write_json_report)
from utils.eval.metrics import LPIPSMetric, LPIPSUnavailable
from utils.core.paths import check_writes


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--generated_images_path', '--restored', dest='restored', required=True,
                   help='folder of restored images')
    p.add_argument('--target_path', required=True, help='folder of ground-truth images')
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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.crop_border < 0:
        raise UsageError(f'--crop_border {args.crop_border}: must be >= 0')
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
                                 progress=not args.quiet)
    if not args.quiet:
        print(format_table(rows, means))
    channel = 'Y' if args.test_y else 'RGB'
    extra = f', LPIPS {means["lpips"]:.4f}' if 'lpips' in means else ''
    print(f'{means["images"]} images ({channel}, crop_border {args.crop_border}): '
          f'{psnr_text(means)}, SSIM {means["ssim"]:.4f}{extra}')
    settings = dict(restored=args.restored, target=args.target_path, test_y=args.test_y,
                    crop_border=args.crop_border, lpips=lpips is not None)
    if args.json:
        write_json_report(args.json, rows, means, settings)
    if args.csv:
        write_csv_report(args.csv, rows, means)
    if lpips_error:                             # PSNR/SSIM are reported; LPIPS could not be
        raise SpikeDerainError(f'--lpips: {lpips_error}')
    return 0


if __name__ == '__main__':
    run_main(main, 'evaluation.py')
