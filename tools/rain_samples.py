"""Contact sheet of the randomized rain model: one photo under many draws of rain.

    python tools/rain_samples.py --out docs/images/rain_samples.png

Each tile is ``utils.data.rain.add_random_rain`` with another seed, captioned with what was drawn
(blend, layers, density per layer in seeds per 1000 px, near-layer length and angle, haze, lens
drops). The first tile of each row is the clean photo; the last two are the light and heavy presets.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.core.cli import ArgumentParser, run_main  # noqa: E402
from utils.core.errors import UsageError  # noqa: E402
from utils.data.image_io import resize_longest, write_png_atomic  # noqa: E402
from utils.data.rain import add_rain, add_random_rain, sample_rain_params  # noqa: E402


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


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', type=Path, default=Path('docs/images/rain_samples.png'))
    p.add_argument('--size', type=int, default=200, help='tile side in pixels')
    p.add_argument('--cols', type=int, default=7, help='tiles per row')
    args = p.parse_args(argv)
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
