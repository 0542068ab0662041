"""Write a corpus of clean photos as ``OUT/{train,val}/NAME.png`` (longest side <= --max_side).

Helper of ``tools/get_photos.sh``, which chooses the photos; this script only converts them.
Each positional argument is ``NAME=SOURCE`` where SOURCE is

* an image file,
* a folder: its largest image (by pixel count) is used, e.g. a Plasma wallpaper's
  ``contents/images/`` folder that holds one file per screen resolution,
* ``skimage:FUNC``: a photo bundled with scikit-image (``skimage.data.FUNC()``), plus
  ``skimage:motorcycle_left`` for the left view of ``stereo_motorcycle()``,
* ``matplotlib:FILE``: a photo in the installed matplotlib's ``mpl-data/sample_data/``, or
* ``bz2rgb:WxH:FILE``: a bz2-compressed raw 8-bit RGB image of W x H pixels, rows top to bottom
  (scipy's ``misc/face.dat``).

Images are converted to 8-bit RGB (EXIF orientation applied, alpha dropped), shrunk with Lanczos
so the longer side is at most ``--max_side`` (never enlarged) and saved as PNG. Names given with
``--val`` go to ``val/``, the rest to ``train/``. Reruns give identical files: a file whose bytes
would not change is left untouched, others are written to a temporary file and renamed, and image
files in ``train/``/``val/`` that are not in this run's list are removed.

With ``--meta FILE`` (tab-separated lines ``NAME SOURCE LICENCE CREDIT``, one per photo; SOURCE
may be empty for ``skimage:``/``matplotlib:`` photos, which name the installed package and its
version themselves) it also writes ``OUT/SOURCES.tsv``: a header, then one line per photo, sorted
by split and name: name, split, source (package and version), path of the original file inside
that package (for a folder, the file used), licence, credit. It is rewritten only when it changes.
"""
from __future__ import annotations

import argparse
import bz2
import io
import os
import re
import sys
from pathlib import Path

from PIL import Image, ImageOps

from utils.core.atomic import write_bytes_atomic, write_text_atomic
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import InputError, UsageError
from utils.core.lock import FolderLock

PROG = 'collect_photos.py'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff')
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
SPLITS = ('train', 'val')
SOURCES_NAME = 'SOURCES.tsv'
SOURCES_HEADER = ('name', 'split', 'source', 'path', 'licence', 'credit')
BZ2RGB_RE = re.compile(r'^bz2rgb:(\d+)x(\d+):(.+)$')


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


def package_version(dist: str) -> str:
    """``DIST VERSION (installed Python package)`` for the SOURCES.tsv record."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f'{dist} {version(dist)} (installed Python package)'
    except PackageNotFoundError:
        return f'{dist} (installed Python package)'


def open_image_file(path: Path) -> Image.Image:
    """The image file as RGB (EXIF orientation applied); :class:`PhotoError` if unreadable."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.convert('RGB')
    except (OSError, SyntaxError) as err:
        raise PhotoError(f'{path}: cannot read image ({err})') from None


def load_source(source: str) -> tuple[Image.Image, str]:
    """The source as an RGB PIL image, and a description of where it came from (a resolved file
    path, or the ``skimage:``/``matplotlib:`` source itself)."""
    if source.startswith('matplotlib:'):
        import matplotlib
        name = source.split(':', 1)[1]
        path = Path(matplotlib.get_data_path()) / 'sample_data' / name
        if not name or '/' in name or not path.is_file():
            raise PhotoError(f'{source}: matplotlib has no such sample_data file')
        return open_image_file(path), source
    match = BZ2RGB_RE.match(source)
    if match:
        width, height, path = int(match[1]), int(match[2]), Path(match[3])
        if not path.is_file():
            raise PhotoError(f'{path}: no such file')
        try:
            raw = bz2.decompress(path.read_bytes())
        except (OSError, ValueError) as err:
            raise PhotoError(f'{path}: not bz2 data ({err})') from None
        if len(raw) != width * height * 3:
            raise PhotoError(f'{path}: {len(raw)} bytes, not {width}x{height} RGB '
                             f'({width * height * 3} bytes)')
        return Image.frombytes('RGB', (width, height), raw), str(path.resolve())
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
    return open_image_file(path), str(path.resolve())


def shrink(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink (Lanczos) so that max(w, h) <= max_side, keeping the aspect ratio."""
    w, h = im.size
    if max(w, h) <= max_side:
        return im
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return im.resize(size, Image.Resampling.LANCZOS)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically (:mod:`utils.core.atomic`); skip when the file already has it."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    write_bytes_atomic(path, data)
    return True


def write_text_if_changed(path: Path, text: str) -> bool:
    """Write UTF-8 ``text`` atomically (:mod:`utils.core.atomic`); skip it when already there."""
    if path.is_file() and path.read_bytes() == text.encode('utf-8'):
        return False
    write_text_atomic(path, text)
    return True


def read_meta(path: Path) -> dict[str, tuple[str, str, str]]:
    """``NAME -> (SOURCE, LICENCE, CREDIT)`` from the tab-separated ``--meta`` file."""
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f'--meta {path}: cannot read ({err})') from None
    meta: dict[str, tuple[str, str, str]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split('\t')
        if len(fields) != 4 or not fields[0] or not fields[2]:
            raise UsageError(f'--meta {path}:{number}: expected NAME<TAB>SOURCE<TAB>LICENCE'
                             '<TAB>CREDIT with a name and a licence')
        if fields[0] in meta:
            raise UsageError(f'--meta {path}:{number}: {fields[0]} given twice')
        meta[fields[0]] = (fields[1], fields[2], fields[3])
    return meta


def package_path(origin: str, source_root: Path | None) -> tuple[str, str]:
    """(package folder, path inside it) of a source file unpacked under ``source_root`` as
    ``source_root/PACKAGE/...``; ('', absolute path) for a file elsewhere."""
    if source_root is not None:
        rel = Path(os.path.relpath(origin, source_root.resolve()))
        if rel.parts and rel.parts[0] != '..' and len(rel.parts) > 1:
            return rel.parts[0], Path(*rel.parts[1:]).as_posix()
    return '', origin


def source_record(name: str, split: str, origin: str, source_root: Path | None,
                  meta: tuple[str, str, str]) -> tuple[str, ...]:
    """One SOURCES.tsv row (see the module docstring)."""
    source, licence, credit = meta
    if origin.startswith('skimage:'):
        func = origin.split(':', 1)[1]
        call = ('stereo_motorcycle()[0]' if func == 'motorcycle_left' else
                'stereo_motorcycle()[1]' if func == 'motorcycle_right' else f'{func}()')
        path, source = f'skimage.data.{call}', source or package_version('scikit-image')
    elif origin.startswith('matplotlib:'):
        path = 'matplotlib/mpl-data/sample_data/' + origin.split(':', 1)[1]
        source = source or package_version('matplotlib')
    else:
        package, path = package_path(origin, source_root)
        source = source or package
    row = (name, split, source, path, licence, credit)
    for field in row:
        if '\t' in field or '\n' in field or '\r' in field:
            raise UsageError(f'{name}: SOURCES.tsv field {field!r} holds a tab or a newline')
    return row


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
                    help='put this photo in val/ (repeatable); an unknown name gets a note')
    ap.add_argument('--max_side', type=int, default=1024, help='longest side in pixels (1024)')
    ap.add_argument('--source_root', type=Path, default=None,
                    help='show source files relative to this folder; with --meta, files under '
                         'SOURCE_ROOT/PACKAGE/ are recorded by their path inside PACKAGE')
    ap.add_argument('--meta', type=Path, default=None, metavar='FILE',
                    help='tab-separated NAME SOURCE LICENCE CREDIT lines, one for every photo: '
                         f'also write OUT/{SOURCES_NAME} (name, split, source, path, licence, '
                         'credit)')
    args = ap.parse_args(argv)
    if args.max_side < 16:
        raise UsageError(f'--max_side {args.max_side}: must be at least 16')

    items = parse_items(args.items)
    val = set(args.val)
    meta = read_meta(args.meta) if args.meta is not None else None
    if meta is not None:
        missing = [name for name in items if name not in meta]
        if missing:
            raise UsageError(f'--meta {args.meta}: no line for {", ".join(missing)}')
    unknown = sorted(val - set(items))
    if unknown:
        print(f'note: --val {", ".join(unknown)}: no such NAME among the photos given; ignored',
              file=sys.stderr)
    with FolderLock(args.out, what=f'{PROG} run', option='another --out'):
        return collect(args, items, val, meta)


def collect(args: argparse.Namespace, items: dict[str, str], val: set[str],
            meta: dict | None) -> int:
    """Write the photos into OUT/train and OUT/val, holding OUT's lock."""
    for split in SPLITS:
        (args.out / split).mkdir(parents=True, exist_ok=True)

    counts = dict.fromkeys(SPLITS, 0)
    expected: dict[str, set[str]] = {s: set() for s in SPLITS}
    written = 0
    records: list[tuple[str, ...]] = []
    for name, source in items.items():
        split = 'val' if name in val else 'train'
        im, origin = load_source(source)
        if meta is not None:
            records.append(source_record(name, split, origin, args.source_root, meta[name]))
        if args.source_root is not None and not origin.startswith(('skimage:', 'matplotlib:')):
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
    if meta is not None:
        records.sort(key=lambda row: (SPLITS.index(row[1]), row[0]))
        text = ''.join('\t'.join(row) + '\n' for row in [SOURCES_HEADER, *records])
        changed = write_text_if_changed(args.out / SOURCES_NAME, text)
        print(f'[photos] {args.out / SOURCES_NAME}: {len(records)} photos'
              f'{"" if changed else " (unchanged)"}')
    total = sum(p.stat().st_size for s in SPLITS for p in (args.out / s).iterdir() if p.is_file())
    print(f'[photos] {counts["train"]} train, {counts["val"]} val photos in {args.out}/ '
          f'({total / 2**20:.1f} MiB; {written} written, {len(items) - written} unchanged, '
          f'{removed} removed)')
    return 0


if __name__ == '__main__':
    run_main(main, PROG)
