"""Contact sheets of synthetic rain: the rain families, or many draws of the randomized model.

    python tools/rain_samples.py --families --out docs/images/rain_families.png
    python tools/rain_samples.py --out docs/images/rain_samples.png

``--families``: one row per rain family (utils/data/rain.py), the clean photo first, then the
family's ``light`` and ``heavy`` levels on two photos (rain seed 0).

Each tile is ``utils.data.rain.add_random_rain`` with another seed, captioned with what was drawn
(blend, layers, density per layer in seeds per 1000 px, near-layer length and angle, haze, lens
drops). The first tile of each row is the clean photo; the last two are the light and heavy presets.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

from utils.core.atomic import check_output_file
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import UsageError
from utils.data.image_io import resize_longest, write_png_atomic
from utils.data.rain import FAMILIES, add_rain, add_random_rain, make_rain_pair, sample_rain_params


def caption(seed: int, shape) -> str:
    p = sample_rain_params(np.random.default_rng(seed), shape)
    dens, length, _, angle, _ = p.layers[0]
    text = (f'{p.blend} {len(p.layers)}L d{1000 * dens:.1f} '
            f'l{length:.0f} {angle:+.0f}°')
    if p.haze > 0.02:
        text += f' haze{p.haze:.2f}'
    if p.drops:
        text += ' drops'
    return text


def labelled(img: np.ndarray, text: str) -> np.ndarray:
    bar = Image.new('RGB', (img.shape[1], 14), 'white')
    ImageDraw.Draw(bar).text((2, 1), text, fill='black')
    return np.concatenate([np.asarray(bar), img], axis=0)


def family_sheet(size: int) -> np.ndarray:
    """One row per family: clean, then light and heavy on two photos."""
    photos = [resize_longest(p, size)[:size, :size]
              for p in (skimage.data.astronaut(), skimage.data.coffee())]
    rows = []
    for family in FAMILIES:
        tiles = [labelled(photos[0], f'{family}: clean')]
        for photo in photos:
            for level in ('light', 'heavy'):
                rainy, _ = make_rain_pair(photo, f'{family}:{level}', 0)
                tiles.append(labelled(rainy, f'{family}:{level}'))
        h = min(t.shape[0] for t in tiles)
        w = min(t.shape[1] for t in tiles)
        rows.append(np.concatenate([t[:h, :w] for t in tiles], axis=1))
    return np.concatenate(rows, axis=0)


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', type=Path, default=Path('docs/images/rain_samples.png'))
    p.add_argument('--size', type=int, default=200, help='tile side in pixels')
    p.add_argument('--cols', type=int, default=7, help='tiles per row')
    p.add_argument('--families', action='store_true',
                   help='one row per rain family (light and heavy) instead of random draws')
    args = p.parse_args(argv)
    check_output_file('--out', args.out)
    if args.families:
        if args.cols != p.get_default('cols'):
            raise UsageError(f'--cols {args.cols}: no effect with --families (one column per '
                             f'level)')
        if args.size < 16:
            raise UsageError(f'--size {args.size}: need --size >= 16')
        sheet = family_sheet(args.size)
        write_png_atomic(args.out, sheet)
        print(f'{args.out}: {len(FAMILIES)} families x (clean + light/heavy on 2 photos)')
        return 0
    if args.size < 16 or args.cols < 3:
        raise UsageError(f'--size {args.size} / --cols {args.cols}: need --size >= 16 and '
                         f'--cols >= 3 (clean, light and heavy tiles)')
    photos = [skimage.data.coffee(), skimage.data.chelsea(), skimage.data.astronaut()]
    rows, seed = [], 0
    for r, photo in enumerate(photos):
        img = resize_longest(photo, args.size)
        img = img[:args.size, :args.size]
        tiles = [labelled(img, 'clean')]
        for _ in range(args.cols - 3):
            # The seed the sampler sees first is the one add_random_rain uses for its params.
            tiles.append(labelled(add_random_rain(img, seed), caption(seed, img.shape[:2])))
            seed += 1
        tiles.append(labelled(add_rain(img, 'light', seed=r), 'preset light'))
        tiles.append(labelled(add_rain(img, 'heavy', seed=r), 'preset heavy'))
        h = min(t.shape[0] for t in tiles)
        rows.append(np.concatenate([t[:h] for t in tiles], axis=1))
    w = min(r.shape[1] for r in rows)
    sheet = np.concatenate([r[:, :w] for r in rows], axis=0)
    write_png_atomic(args.out, sheet)
    print(f'{args.out}: {len(rows)} photos x {args.cols} tiles')
    return 0


if __name__ == '__main__':
    run_main(main, 'rain_samples.py')
