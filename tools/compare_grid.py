"""A side-by-side grid PNG, one row per image: rainy | restored (one or more) | target.

What people look at first: each panel is captioned with its PSNR against the target (Y channel,
the published protocol), so a pretty but wrong result is visible at once. Example:
``python tools/compare_grid.py --rainy data/demo/test/input --restored results/spikerain-s/demo
--target data/demo/test/target --out grid.png``
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from utils.data.image_io import list_images, read_image_rgb, write_png_atomic
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import UsageError
from utils.eval.metrics import calculate_psnr
from utils.core.paths import check_writes

GAP = 4            # pixels between panels and rows
CAPTION = 20       # caption strip height above each panel


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--rainy', required=True, help='folder of rainy inputs')
    p.add_argument('--restored', required=True, action='append',
                   help='folder of restored images (repeat to compare several models)')
    p.add_argument('--labels', nargs='+', default=None,
                   help='captions for the --restored folders (default: folder names)')
    p.add_argument('--target', required=True, help='folder of ground-truth images')
    p.add_argument('--out', default='compare_grid.png',
                   help='PNG file to write (default: %(default)s)')
    p.add_argument('--names', nargs='+', default=None,
                   help='image stems to show (default: the first --num in name order)')
    p.add_argument('--num', type=int, default=4,
                   help='rows when --names is not given (default: %(default)s)')
    p.add_argument('--panel_size', type=int, default=320,
                   help='longest side of a panel in pixels; 0 keeps full size '
                        '(default: %(default)s)')
    return p.parse_args(argv)


def _index(folder: str) -> dict[str, Path]:
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f'{path}: folder not found')
    return {f.stem: f for f in list_images(path)}


def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):          # Pillow without FreeType: bitmap font
        return ImageFont.load_default()


def _panel(img: np.ndarray, caption: str, size: int, font) -> Image.Image:
    """The image scaled so its longest side is ``size`` (never enlarged), a caption above."""
    im = Image.fromarray(img)
    scale = size / max(im.size) if size > 0 else 1.0
    if scale < 1.0:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.Resampling.LANCZOS)
    width = max(im.width, int(font.getlength(caption)) + 4)
    panel = Image.new('RGB', (width, im.height + CAPTION), 'white')
    panel.paste(im, (0, CAPTION))
    ImageDraw.Draw(panel).text((2, 3), caption, fill='black', font=font)
    return panel


def build_rows(args: argparse.Namespace) -> tuple[list[list[Image.Image]], list[str]]:
    """Captioned panels for every selected image, and one printable line per row."""
    rainy, target = _index(args.rainy), _index(args.target)
    restored = [_index(d) for d in args.restored]
    labels = args.labels or [Path(d).resolve().name for d in args.restored]
    if len(labels) != len(restored):
        raise UsageError(f'--labels: {len(labels)} given for {len(restored)} --restored folders')
    common = sorted(set(rainy).intersection(target, *restored))
    names = args.names or common[:args.num]
    if not names:
        raise ValueError(f'no image stem is present in every folder ({args.rainy}, '
                         f'{", ".join(args.restored)}, {args.target})')
    font, rows, lines = _font(), [], []
    for name in names:
        for folder, index in [(args.rainy, rainy), *zip(args.restored, restored),
                              (args.target, target)]:
            if name not in index:
                raise ValueError(f'{folder}: no image named {name}.*')
        ref = read_image_rgb(target[name])
        sources = [('rainy', rainy[name])]
        sources += [(lab, idx[name]) for lab, idx in zip(labels, restored)]
        panels, scores = [], []
        for label, path in sources:
            img = read_image_rgb(path)
            if img.shape != ref.shape:
                raise ValueError(f'{path}: size {img.shape[1]}x{img.shape[0]} differs from target '
                                 f'{target[name]} ({ref.shape[1]}x{ref.shape[0]})')
            psnr = calculate_psnr(img, ref)
            scores.append(f'{label} {psnr:.2f} dB')
            panels.append(_panel(img, f'{label}  PSNR {psnr:.2f} dB', args.panel_size, font))
        panels.append(_panel(ref, f'target  {name}', args.panel_size, font))
        rows.append(panels)
        lines.append(f'{name}: ' + ', '.join(scores))
    return rows, lines


def compose(rows: list[list[Image.Image]]) -> np.ndarray:
    """Rows of panels on a white canvas, panels left-aligned in equal-width columns."""
    cols = len(rows[0])
    col_w = [max(r[c].width for r in rows) for c in range(cols)]
    row_h = [max(p.height for p in r) for r in rows]
    canvas = Image.new('RGB', (sum(col_w) + GAP * (cols + 1), sum(row_h) + GAP * (len(rows) + 1)),
                       'white')
    y = GAP
    for r, h in zip(rows, row_h):
        x = GAP
        for c, panel in enumerate(r):
            canvas.paste(panel, (x, y))
            x += col_w[c] + GAP
        y += h + GAP
    return np.asarray(canvas)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.names and args.num != 4:
        raise UsageError(f'--num {args.num}: no effect with --names (one row per name)')
    if args.num < 1 or args.panel_size < 0:
        raise UsageError('--num must be >= 1 and --panel_size >= 0')
    rows, lines = build_rows(args)
    out = Path(args.out)
    check_writes([], [('--rainy folder', args.rainy), ('--target folder', args.target),
                      *(('--restored folder', d) for d in args.restored)],
                 files=[('--out', out)])
    write_png_atomic(out, compose(rows))
    print('\n'.join(lines))
    print(f'wrote {out} ({len(rows)} rows)')
    return 0


if __name__ == '__main__':
    run_main(main, 'compare_grid.py')
