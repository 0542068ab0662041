"""Judge weights on photos they never saw: rain removed (light, heavy, random), clean left alone.

    python tools/heldout_check.py --weights pretrained_models/spikerain-s_synthetic.pth \
        --photos data/photos/val

For every photo (shrunk to --size on the longest side) it draws light, heavy and randomized rain
(utils/data/rain.py) and also keeps the clean photo; restores each and prints, per kind, the mean
Y-PSNR of input and output, the mean gain, the worst image's gain and the restored clean PSNR.
``--save_pairs DIR`` also writes the pairs as a dataset (DIR/input, DIR/target), e.g. for
``train.py --val_dir``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from models import build_from_checkpoint
from models.acceleration import optimize_for_inference, supports_fast_path
from utils.core.atomic import check_output_file, write_text_atomic
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import InputError, UsageError
from utils.core.lock import FolderLock
from utils.eval.heldout import (ALL_KINDS, KINDS, family_kinds, heldout_pairs, load_photos,
                                judge_model)
from utils.data.rain import FAMILIES
from utils.data.image_io import write_png_atomic


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--weights', help='our checkpoint (records its model) to judge')
    p.add_argument('--photos', default='data/photos/val',
                   help='folder of clean photos never used in training')
    p.add_argument('--size', type=int, default=256, help='longest side of each test image')
    p.add_argument('--limit', type=int, default=None, help='use only the first N photos')
    p.add_argument('--kinds', default=','.join(KINDS),
                   help='comma-separated rain kinds of utils/data/rain.py (light, heavy, random, a '
                   'family such as lens, or FAMILY:light / FAMILY:heavy) and clean')
    p.add_argument('--holdout_family', choices=FAMILIES,
                   help='judge on this family only: its light and heavy levels and clean photos '
                   '(replaces --kinds; for weights trained with train.py --holdout_family)')
    p.add_argument('--seed', type=int, default=0, help='seed of the rain')
    p.add_argument('--exact', action='store_true',
                   help='plain reference forward instead of the fast inference path')
    p.add_argument('--save_pairs', type=Path, help='also write the pairs to DIR/input, DIR/target')
    p.add_argument('--json', type=Path, help='write per-image rows and summaries here')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.weights:      # before any photo is read: a run that judges nothing says so
        if not args.save_pairs:
            raise UsageError('nothing to do: give --weights to judge, --save_pairs DIR to write '
                             'the pairs, or both')
        idle = [o for o, v in (('--json', args.json), ('--exact', args.exact)) if v]
        if idle:
            raise UsageError(f'{", ".join(idle)}: no effect without --weights (only the pairs '
                             f'are written); add --weights or remove {" and ".join(idle)}')
    kinds = tuple(k.strip() for k in args.kinds.split(',') if k.strip())
    if args.holdout_family:
        if args.kinds != ','.join(KINDS):
            print(f'note: --kinds {args.kinds} replaced by --holdout_family '
                  f'{args.holdout_family}: its light and heavy levels and clean photos',
                  file=sys.stderr)
        kinds = (*family_kinds(args.holdout_family), 'clean')
    bad = [k for k in kinds if k not in ALL_KINDS]
    if not kinds or bad:
        raise UsageError(f'--kinds {args.kinds!r}: {", ".join(bad) or "empty"} unknown; use '
                         f'some of {", ".join(ALL_KINDS)}')
    if args.size < 16:
        raise UsageError(f'--size must be >= 16, got {args.size}')
    check_output_file('--json', args.json)           # before the work, not after it
    if args.weights and not Path(args.weights).is_file():
        raise InputError(f'--weights {args.weights}: file not found')
    if not Path(args.photos).is_dir():
        raise InputError(f'--photos {args.photos}: folder not found (make photos creates '
                         f'data/photos/val)')
    t0 = time.perf_counter()
    photos = load_photos(args.photos, args.size, args.limit)
    if not photos:
        raise InputError(f'--photos {args.photos}: no images')
    pairs = heldout_pairs(photos, kinds, args.seed)
    if args.save_pairs:
        with FolderLock(args.save_pairs, what='heldout_check.py run',
                        option='another --save_pairs'):
            for name, kind, inp, clean in pairs:
                stem = f'{name}_{kind.replace(":", "-")}'     # no ':' in file names (Windows)
                write_png_atomic(args.save_pairs / 'input' / f'{stem}.png', inp)
                write_png_atomic(args.save_pairs / 'target' / f'{stem}.png', clean)
        print(f'{args.save_pairs}: {len(pairs)} pairs written')
    if not args.weights:
        return 0
    torch.set_grad_enabled(False)
    model = build_from_checkpoint(args.weights).eval()
    if not args.exact and supports_fast_path(model):
        model = optimize_for_inference(model)
    report = judge_model(model, pairs, progress=lambda it: tqdm(it, desc='restore',
                                                                 unit='img'))
    print(f'{args.weights} on {len(photos)} held-out photos from {args.photos} '
          f'(longest side {args.size}, rain seed {args.seed}), Y-PSNR:')
    print(report.table())
    print(f'({time.perf_counter() - t0:.0f} s)')
    if args.json:
        write_text_atomic(args.json, json.dumps(dict(
            weights=str(args.weights), photos=str(args.photos), size=args.size, seed=args.seed,
            summaries=report.summaries(), rows=report.rows), indent=1))
    return 0


if __name__ == '__main__':
    run_main(main, 'heldout_check.py')
