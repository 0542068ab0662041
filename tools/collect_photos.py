"""Write a corpus of clean photos as ``OUT/{train,val}/NAME.png`` (longest side <= --max_side).

Helper of ``tools/get_photos.sh``, which chooses the photos; this script only converts them.
Each positional argument is ``NAME=SOURCE`` where SOURCE is

* an image file,
* a folder: its largest image (by pixel count) is used, e.g. a Plasma wallpaper's
  ``contents/images/`` folder that holds one file per screen resolution, or
* ``skimage:FUNC``: a photo bundled with scikit-image (``skimage.data.FUNC()``), plus
  ``skimage:motorcycle_left`` for the left view of ``stereo_motorcycle()``.

Images are converted to 8-bit RGB (EXIF orientation applied, alpha dropped), shrunk with Lanczos
so the longer side is at most ``--max_side`` (never enlarged) and saved as PNG. Names given with
``--val`` go to ``val/``, the rest to ``train/``. Reruns give identical files: a file whose bytes
would not change is left untouched, others are written to a temporary file and renamed, and image
files in ``train/``/``val/`` that are not in this run's list are removed.
"""
from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.atomic import write_bytes_atomic  # noqa: E402
from utils.cli import ArgumentParser, run_main  # noqa: E402
from utils.errors import InputError, UsageError  # noqa: E402

PROG = 'collect_photos.py'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff')
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
SPLITS = ('train', 'val')


class PhotoError(InputError):
    """A source photo that is missing or unreadable; printed as one line (exit 1)."""


def largest_image(folder: Path) -> Path:
    """The image in ``folder`` with the most pixels (ties: first by name).

    Symbolic links are followed and the real file is returned (Plasma names several screen
    sizes as links to one file)."""
    best, best_area = None, -1
    files = {p.resolve() for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
    for path in sorted(files):
        with Image.open(path) as im:
            area = im.size[0] * im.size[1]
        if area > best_area:
            best, best_area = path, area
    if best is None:
        raise PhotoError(f'{folder}: no image files in this folder')
    return best


def load_source(source: str) -> tuple[Image.Image, str]:
    """The source as an RGB PIL image, and a description of where it came from."""
    if source.startswith('skimage:'):
        import numpy as np
        import skimage.data
        func = source.split(':', 1)[1]
        if func in ('motorcycle_left', 'motorcycle_right'):
            left, right, _ = skimage.data.stereo_motorcycle()
            arr = left if func == 'motorcycle_left' else right
        elif hasattr(skimage.data, func):
            arr = getattr(skimage.data, func)()
        else:
            raise PhotoError(f'{source}: scikit-image has no such bundled image')
        arr = np.asarray(arr)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
            raise PhotoError(f'{source}: not an 8-bit colour photo ({arr.shape}, {arr.dtype})')
        return Image.fromarray(np.ascontiguousarray(arr[..., :3])), source
    path = Path(source)
    if path.is_dir():
        path = largest_image(path)
    if not path.is_file():
        raise PhotoError(f'{path}: no such file')
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.convert('RGB'), str(path.resolve())
    except (OSError, SyntaxError) as err:
        raise PhotoError(f'{path}: cannot read image ({err})') from None


def shrink(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink (Lanczos) so that max(w, h) <= max_side, keeping the aspect ratio."""
    w, h = im.size
    if max(w, h) <= max_side:
        return im
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return im.resize(size, Image.Resampling.LANCZOS)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically (:mod:`utils.atomic`); skip when the file already has it."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    write_bytes_atomic(path, data)
    return True


def parse_items(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, source = item.partition('=')
        if not sep or not source:
            raise UsageError(f'{item!r}: expected NAME=SOURCE')
        if not NAME_RE.match(name):
            raise UsageError(f'{name!r}: names may use letters, digits, "_", "-", "." only')
        if name in out:
            raise UsageError(f'{name}: given twice')
        out[name] = source
    return out


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    ap.add_argument('items', nargs='+', metavar='NAME=SOURCE')
    ap.add_argument('--out', required=True, type=Path, help='writes OUT/train and OUT/val')
    ap.add_argument('--val', action='append', default=[], metavar='NAME',
                    help='put this photo in val/ (repeatable); unknown names are ignored')
    ap.add_argument('--max_side', type=int, default=1024, help='longest side in pixels (1024)')
    ap.add_argument('--source_root', type=Path, default=None,
                    help='only for the log: show source files relative to this folder')
    args = ap.parse_args(argv)
    if args.max_side < 16:
        raise UsageError(f'--max_side {args.max_side}: must be at least 16')

    items = parse_items(args.items)
    val = set(args.val)
    for split in SPLITS:
        (args.out / split).mkdir(parents=True, exist_ok=True)

    counts = dict.fromkeys(SPLITS, 0)
    expected: dict[str, set[str]] = {s: set() for s in SPLITS}
    written = 0
    for name, source in items.items():
        split = 'val' if name in val else 'train'
        im, origin = load_source(source)
        if args.source_root is not None and not origin.startswith('skimage:'):
            origin = os.path.relpath(origin, args.source_root.resolve())
        small = shrink(im, args.max_side)
        buf = io.BytesIO()
        small.save(buf, format='PNG')
        target = args.out / split / f'{name}.png'
        changed = write_if_changed(target, buf.getvalue())
        written += changed
        expected[split].add(target.name)
        counts[split] += 1
        print(f'[photos] {split:5s} {target.name:28s} {small.size[0]}x{small.size[1]}'
              f'  <- {origin} ({im.size[0]}x{im.size[1]}){"" if changed else " (unchanged)"}',
              flush=True)

    removed = 0
    for split in SPLITS:
        for path in sorted((args.out / split).iterdir()):
            if (path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
                    and path.name not in expected[split]):
                path.unlink()
                removed += 1
                print(f'[photos] removed stale {split}/{path.name}')

    if counts['train'] == 0 or counts['val'] == 0:
        raise UsageError(f'{counts["train"]} train, {counts["val"]} val photos: '
                         'both splits need at least one')
    total = sum(p.stat().st_size for s in SPLITS for p in (args.out / s).iterdir() if p.is_file())
    print(f'[photos] {counts["train"]} train, {counts["val"]} val photos in {args.out}/ '
          f'({total / 2**20:.1f} MiB; {written} written, {len(items) - written} unchanged, '
          f'{removed} removed)')
    return 0


if __name__ == '__main__':
    run_main(main, PROG)
