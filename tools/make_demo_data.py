"""Make a small paired deraining dataset with synthetic rain, for demos, CI and quick experiments.

By default it uses the colour photographs bundled with scikit-image (no download) and writes
``data/demo/{train,test}/{input,target}/`` plus ``data/demo/preview.png`` (clean | rainy).
With ``--clean_dir`` any folder of clean images becomes a dataset in the same layout. The
train/test split is by photo, so no test scene is seen in training. Same seed -> identical files;
files already identical are left untouched.
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import skimage.data
from tqdm import tqdm

from utils.core.cli import ArgumentParser, run_main
from utils.data.prepare import OutputWriter, check_not_overlapping
from utils.data.datasets import DatasetError
from utils.core.errors import InputError, UsageError
from utils.core.lock import FolderLock
from utils.data.image_io import list_images, read_image_rgb, resize_longest
from utils.data.rain import RAIN_KINDS, make_rainy

# Bundled colour photos; the two motorcycle views show one scene, so they share a split.
DEMO_TRAIN = ('astronaut', 'chelsea', 'motorcycle_left', 'motorcycle_right', 'hubble_deep_field')
DEMO_TEST = ('coffee', 'rocket')


def skimage_photo(name: str) -> np.ndarray:
    """One bundled scikit-image photo as HxWx3 uint8 (shipped with the wheel, no network)."""
    if name in ('motorcycle_left', 'motorcycle_right'):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name == 'motorcycle_left' else right
    return getattr(skimage.data, name)()


def split_clean_dir(folder: Path, test_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic split of a folder's images by file: (train paths, test paths)."""
    files = list_images(folder)
    if len(files) < 2:
        raise DatasetError(f'{folder}: needs at least 2 images to split by image, '
                           f'found {len(files)}')
    order = np.random.default_rng(seed).permutation(len(files))
    n_test = min(len(files) - 1, max(1, round(test_fraction * len(files))))
    test = sorted(files[i] for i in order[:n_test])
    train = sorted(files[i] for i in order[n_test:])
    return train, test


def make_split(photos: list[tuple[str, np.ndarray]], out: Path, samples: int,
               styles: list[str], seed: int, writer: OutputWriter) -> list[tuple]:
    """Write ``samples`` rainy versions of each photo; returns (clean, rainy) for the preview."""
    made = []
    for name, clean in photos:
        photo_id = zlib.crc32(name.encode())
        for k in range(samples):
            style = styles[k % len(styles)]
            rainy = make_rainy(clean, style, seed=[seed, photo_id, k])
            stem = f'{name}_{k:02d}_{style}'
            writer.png(rainy, out / 'input' / f'{stem}.png')
            writer.png(clean, out / 'target' / f'{stem}.png')
            made.append((stem, clean, rainy))
    return made


def preview_image(rows: list[tuple], gap: int = 4) -> np.ndarray:
    """Rows of clean | rainy, padded with white to a common width."""
    strips = [np.concatenate([c, np.full((c.shape[0], gap, 3), 255, np.uint8), r], axis=1)
              for _, c, r in rows]
    width = max(s.shape[1] for s in strips)
    padded = []
    for s in strips:
        pad = np.full((s.shape[0] + gap, width, 3), 255, np.uint8)
        pad[:s.shape[0], :s.shape[1]] = s
        padded.append(pad)
    return np.concatenate(padded, axis=0)[:-gap]


def stale_files(out: Path, expected: set[str]) -> list[Path]:
    """Files in the output's input/target folders that this run did not produce."""
    found = []
    for split in ('train', 'test'):
        for side in ('input', 'target'):
            folder = out / split / side
            if folder.is_dir():
                found += [p for p in list_images(folder) if f'{split}/{p.stem}' not in expected]
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('data/demo'),
                        help='output root; writes OUT/{train,test}/{input,target} and '
                             'OUT/preview.png (default: data/demo)')
    parser.add_argument('--clean_dir', type=Path, default=None,
                        help='folder of clean images to use instead of the bundled photos')
    parser.add_argument('--test_fraction', type=float, default=0.25,
                        help='--clean_dir only: share of images held out for test (default 0.25)')
    parser.add_argument('--train_samples', type=int, default=4,
                        help='rainy versions per training photo (default: 4)')
    parser.add_argument('--test_samples', type=int, default=2,
                        help='rainy versions per test photo (default: 2)')
    parser.add_argument('--styles', default='light,heavy',
                        help=f'comma-separated rain styles, cycled over samples (from: '
                             f'{", ".join(RAIN_KINDS)}; random draws every rain parameter per '
                             f'sample; default: light,heavy)')
    parser.add_argument('--size', type=int, default=256,
                        help='longest side of the written images in pixels (default: 256)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    return parser


def check_args(args: argparse.Namespace) -> list[str]:
    styles = [s.strip() for s in args.styles.split(',') if s.strip()]
    bad = [s for s in styles if s not in RAIN_KINDS]
    if not styles or bad:
        raise UsageError(f'--styles: unknown style(s) {bad or args.styles!r}; '
                           f'use {", ".join(RAIN_KINDS)}')
    for opt in ('train_samples', 'test_samples', 'size'):
        if getattr(args, opt) < 1:
            raise UsageError(f'--{opt}: must be at least 1, got {getattr(args, opt)}')
    if not 0 < args.test_fraction < 1:
        raise UsageError(f'--test_fraction: must be between 0 and 1, got {args.test_fraction}')
    if args.clean_dir is None and args.test_fraction != build_parser().get_default('test_fraction'):
        raise UsageError(f'--test_fraction {args.test_fraction}: no effect without --clean_dir '
                         f'(the bundled photos have a fixed train/test split)')
    if args.clean_dir is not None:
        if not args.clean_dir.is_dir():
            raise InputError(f'--clean_dir: {args.clean_dir} is not a folder')
        check_not_overlapping(args.clean_dir, args.out)
    return styles


def load_photos(args: argparse.Namespace) -> tuple[list, list]:
    """(train, test) lists of (name, resized HxWx3 uint8)."""
    if args.clean_dir is None:
        train_names, test_names = DEMO_TRAIN, DEMO_TEST
        load = skimage_photo
    else:
        train_paths, test_paths = split_clean_dir(args.clean_dir, args.test_fraction, args.seed)
        train_names = [p.stem for p in train_paths]
        test_names = [p.stem for p in test_paths]
        by_stem = {p.stem: p for p in train_paths + test_paths}
        if len(by_stem) != len(train_paths) + len(test_paths):
            raise DatasetError(f'{args.clean_dir}: two images share a name; rename one')

        def load(stem):
            return read_image_rgb(by_stem[stem])
    photos = {n: resize_longest(load(n), args.size)
              for n in tqdm([*train_names, *test_names], desc='photos', unit='img', leave=False)}
    return [(n, photos[n]) for n in train_names], [(n, photos[n]) for n in test_names]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    styles = check_args(args)
    with FolderLock(args.out, what='make_demo_data.py run', option='another --out'):
        return make_data(args, styles, t0)


def make_data(args: argparse.Namespace, styles: list[str], t0: float) -> int:
    train, test = load_photos(args)
    writer = OutputWriter(overwrite=True)
    made_train = make_split(train, args.out / 'train', args.train_samples, styles,
                            args.seed, writer)
    made_test = make_split(test, args.out / 'test', args.test_samples, styles,
                           args.seed, writer)
    writer.png(preview_image(made_test), args.out / 'preview.png')
    expected = {f'train/{m[0]}' for m in made_train} | {f'test/{m[0]}' for m in made_test}
    stale = stale_files(args.out, expected)
    if stale:
        print(f'warning: {len(stale)} older files in {args.out} were not made by this run '
              f'(e.g. {stale[0]}); delete {args.out} to start clean', file=sys.stderr)
    sizes = sorted({f'{c.shape[1]}x{c.shape[0]}' for _, c in train + test})
    print(f'{args.out}: train {len(made_train)} pairs from {len(train)} photos, '
          f'test {len(made_test)} pairs from {len(test)} photos; sizes {", ".join(sizes)}; '
          f'{writer.written} files written, {writer.unchanged} unchanged; '
          f'preview {args.out / "preview.png"}; {time.perf_counter() - t0:.1f}s')
    return 0


if __name__ == '__main__':
    run_main(main, 'make_demo_data.py')
