"""Datasets from the command line: list the benchmark presets, check a folder, prepare a release.

    python dataset_load.py list
    python dataset_load.py check data/demo/train            (or --dataset Rain200H --split test)
    python dataset_load.py prepare --convention jorder --src ~/Downloads/rain_data_train_Heavy \\
        --name Rain200H --split train --out data
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.core.cli import ArgumentParser, run_main
from utils.data.prepare import (CONVENTIONS, PAIR_CONVENTIONS, SIDE_BY_SIDE,
                                check_not_overlapping, prepare_dataset)
from utils.data.datasets import (DATASET_PRESETS, SPLITS, find_pairs, resolve_split_dir,
                                 summarize_pairs)
from utils.core.errors import UsageError
from utils.core.lock import FolderLock


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description='Benchmark presets, dataset checks, and conversion of original releases '
                    'into the standard layout NAME/{train,test}/{input,target}/.')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    p = sub.add_parser('list', help='show the dataset presets and which are present',
                       description='Show the dataset presets and which are present.')
    p.add_argument('--data_root', default='data',
                   help='folder holding NAME/{train,test} (default: data)')

    p = sub.add_parser('check', help='validate a dataset folder and print a summary',
                       description='Validate pairs (names, readability, sizes) and summarise.')
    p.add_argument('folder', nargs='?', default=None,
                   help='a folder with input/ and target/ (or use --dataset)')
    p.add_argument('--dataset', default=None,
                   help=f'preset name instead of a folder: {", ".join(DATASET_PRESETS)}')
    p.add_argument('--data_root', default='data', help='root of the presets (default: data)')
    p.add_argument('--split', default='test', choices=SPLITS,
                   help='split of --dataset to check (default: test)')

    p = sub.add_parser('prepare', help='convert an original release into the standard layout',
                       description='Copy (or split) the pairs of an original release into '
                                   'OUT/NAME/SPLIT/{input,target}/ with matching names. '
                                   'Source files are never modified.')
    conv_help = '; '.join(f'{k}: rainy {i!r}, clean {t!r}'
                          for k, (i, t) in PAIR_CONVENTIONS.items())
    p.add_argument('--convention', required=True, choices=CONVENTIONS,
                   help=f'how the release names its pairs ({conv_help}; '
                        f'{SIDE_BY_SIDE}: rainy and clean halves in one image)')
    p.add_argument('--src', required=True, type=Path,
                   help='folder of the downloaded release (searched recursively)')
    p.add_argument('--name', required=True,
                   help=f'dataset name, used as the output folder (e.g. '
                        f'{", ".join(DATASET_PRESETS)})')
    p.add_argument('--split', required=True, choices=SPLITS, help='which split SRC holds')
    p.add_argument('--out', type=Path, default=Path('data'),
                   help='root to write NAME/SPLIT/ into (default: data)')
    p.add_argument('--rainy_side', default='left', choices=('left', 'right'),
                   help=f'{SIDE_BY_SIDE} only: which half holds the rainy image (default: left, '
                        f'as DID-MDN\'s loader reads it)')
    p.add_argument('--input_pattern', default=None,
                   help='custom rainy-file pattern, e.g. "rain/rain-{id}" (overrides the '
                        'convention; path below SRC without extension; **/ = any folders)')
    p.add_argument('--target_pattern', default=None,
                   help='custom clean-file pattern, e.g. "norain/norain-{id}"')
    p.add_argument('--overwrite', action='store_true',
                   help='replace output files whose content differs (default: refuse)')
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    print(f'{"name":<10}{"train":>7}{"test":>7}  {"GT":<4}{"prepare as":<14}{"present":<9}notes')
    for p in DATASET_PRESETS.values():
        present = ','.join(s for s in SPLITS if (Path(args.data_root) / p.name / s).is_dir())
        print(f'{p.name:<10}{p.train_pairs or "-":>7}{p.test_pairs or "varies":>7}  '
              f'{"yes" if p.has_ground_truth else "no":<4}{p.original_convention:<14}'
              f'{present or "-":<9}{p.notes}')
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    if (args.folder is None) == (args.dataset is None):
        raise UsageError('check: give either a FOLDER or --dataset NAME (not both)')
    folder = Path(args.folder) if args.folder else resolve_split_dir(
        args.dataset, args.data_root, args.split)
    s = summarize_pairs(find_pairs(folder), progress=True)
    print(f'{folder}: {s.pairs} pairs OK; sizes {s.min_size[0]}x{s.min_size[1]} to '
          f'{s.max_size[0]}x{s.max_size[1]} ({s.distinct_sizes} distinct); '
          f'mean |input-target| {s.mean_abs_diff:.2f} levels')
    if s.mean_abs_diff == 0:
        print(f'{folder}: warning: inputs equal targets (no rain?)', file=sys.stderr)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    dest = args.out / args.name / args.split
    if args.src.is_dir():
        check_not_overlapping(args.src, dest)      # before the lock creates dest
    with FolderLock(dest, what='dataset_load.py prepare', option='another --name or --split'):
        s = prepare_dataset(args.src, dest, args.convention, rainy_side=args.rainy_side,
                            input_pattern=args.input_pattern,
                            target_pattern=args.target_pattern, overwrite=args.overwrite,
                            progress=True)
        find_pairs(dest)   # the result must load as a dataset
    print(f'{dest}: {s.pairs} pairs ({s.written} files written, {s.unchanged} already identical)')
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {'list': cmd_list, 'check': cmd_check, 'prepare': cmd_prepare}
    return commands[args.command](args)


if __name__ == '__main__':
    run_main(main, 'dataset_load.py')
