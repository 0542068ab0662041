"""Converting original benchmark releases into the standard ``{input,target}`` layout.

Original releases name and pack pairs in their own ways (JORDER's ``rain/X2/norain-Nx2.png``,
``rain-N``/``norain-N`` files, DID-MDN's rainy|clean side-by-side images). Each convention is
described by two name patterns, so adding one is a line, not a new parser. Sources are only
read: files are copied byte for byte (or split and written as PNG) into a separate folder.
"""
from __future__ import annotations

import filecmp
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from utils.core.atomic import atomic_open, write_bytes_atomic
from utils.data.datasets import DatasetError, DatasetOptionError, natural_key
from utils.data.image_io import IMAGE_EXTENSIONS, ImageReadError, read_image_rgb
from utils.data.image_io import image_size as read_image_size

# convention -> (rainy-image pattern, clean-image pattern), matched against the path of a file
# relative to the source folder, without its extension. `{id}` names the pair; `**/` is any
# (possibly empty) chain of folders; a pattern may also start below any parent folder.
PAIR_CONVENTIONS: dict[str, tuple[str, str]] = {
    'jorder': ('rain/**/norain-{id}x2', 'norain/norain-{id}'),
    'rain-norain': ('rain-{id}', 'norain-{id}'),
    'standard': ('input/{id}', 'target/{id}'),
}
SIDE_BY_SIDE = 'side-by-side'
CONVENTIONS = (*PAIR_CONVENTIONS, SIDE_BY_SIDE)


@dataclass
class PreparedSummary:
    pairs: int
    written: int      # files written (new or replaced)
    unchanged: int    # files already present with identical content
    dest: Path


def pattern_regex(pattern: str) -> re.Pattern:
    """Compile a pair pattern (see PAIR_CONVENTIONS) to a regex with an ``id`` group."""
    if pattern.count('{id}') != 1:
        raise DatasetError(f'pattern {pattern!r} must contain {{id}} exactly once')
    parts = []
    for token in re.split(r'(\{id\}|\*\*/)', pattern):
        if token == '{id}':
            parts.append(r'(?P<id>[^/]+?)')
        elif token == '**/':
            parts.append(r'(?:[^/]+/)*')
        else:
            parts.append(re.escape(token))
    return re.compile(r'(?:^|.*/)' + ''.join(parts) + r'$')


def _source_images(src: Path) -> list[Path]:
    """Every image below ``src`` (recursively), hidden files and folders skipped."""
    found = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for name in files:
            if not name.startswith('.') and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: natural_key(p.as_posix()))


def _safe_id(text: str) -> str:
    return text.replace('/', '_')


def _match(src: Path, files: list[Path], pattern: str) -> dict[str, Path]:
    regex = pattern_regex(pattern)
    found: dict[str, Path] = {}
    for path in files:
        m = regex.match(path.relative_to(src).with_suffix('').as_posix())
        if m:
            key = _safe_id(m.group('id'))
            if key in found:
                raise DatasetError(f'{found[key]} and {path}: both match {pattern!r} with '
                                   f'the same id {key!r}; keep only one')
            found[key] = path
    return found


def match_pairs(src: str | os.PathLike, input_pattern: str,
                target_pattern: str) -> list[tuple[str, Path, Path]]:
    """``(id, rainy, clean)`` for every pair in ``src``; an unpaired file is an error."""
    src = Path(src)
    files = _source_images(src)
    inputs = _match(src, files, input_pattern)
    targets = _match(src, files, target_pattern)
    if not inputs and not targets:
        raise DatasetError(f'{src}: no images named like {input_pattern!r} / {target_pattern!r}'
                           f' (wrong --convention or --src?)')
    for key, path in inputs.items():
        if key not in targets:
            raise DatasetError(f'{path}: no clean partner named like '
                               f'{target_pattern.replace("{id}", key)!r} in {src}')
    for key, path in targets.items():
        if key not in inputs:
            raise DatasetError(f'{path}: no rainy partner named like '
                               f'{input_pattern.replace("{id}", key)!r} in {src}')
    return [(k, inputs[k], targets[k]) for k in sorted(inputs, key=natural_key)]


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header (EXIF rotation applied), without decoding."""
    try:
        return read_image_size(path)
    except ImageReadError as err:
        raise DatasetError(str(err)) from None


def split_side_by_side(path: Path, rainy_side: str = 'left') -> tuple[np.ndarray, np.ndarray]:
    """``(rainy, clean)`` halves of one side-by-side image (DID-MDN's loader reads rainy left)."""
    if rainy_side not in ('left', 'right'):
        raise DatasetError(f'rainy_side must be left or right, got {rainy_side!r}')
    try:
        img = read_image_rgb(path)
    except ImageReadError as err:
        raise DatasetError(str(err)) from None
    w = img.shape[1]
    if w % 2:
        raise DatasetError(f'{path}: width {w} is odd, so it is not two side-by-side halves')
    left, right = img[:, :w // 2], img[:, w // 2:]
    return (left, right) if rainy_side == 'left' else (right, left)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='PNG')
    return buf.getvalue()


class OutputWriter:
    """Writes outputs atomically; identical existing files are kept (so re-runs are cheap and
    idempotent), different ones are refused unless ``overwrite``."""

    def __init__(self, overwrite: bool):
        self.overwrite = overwrite
        self.written = 0
        self.unchanged = 0

    def _existing(self, dest: Path, same) -> bool:
        if not dest.exists():
            return False
        if same():
            self.unchanged += 1
            return True
        if not self.overwrite:
            raise DatasetError(f'{dest}: exists with different content; pass --overwrite '
                               f'or choose another --out')
        return False

    def copy(self, src: Path, dest: Path) -> None:
        if not self._existing(dest, lambda: filecmp.cmp(src, dest, shallow=False)):
            with open(src, 'rb') as fin, atomic_open(dest, 'wb') as fout:
                shutil.copyfileobj(fin, fout)
            self.written += 1

    def png(self, img: np.ndarray, dest: Path) -> None:
        data = _png_bytes(img)
        if not self._existing(dest, lambda: dest.read_bytes() == data):
            write_bytes_atomic(dest, data)
            self.written += 1


def check_not_overlapping(src: Path, dest: Path) -> None:
    """Refuse an output folder inside (or around) the source: outputs never touch inputs."""
    s, d = src.resolve(), dest.resolve()
    if s == d or s in d.parents or d in s.parents:
        raise DatasetOptionError(f'{dest}: output folder overlaps the source {src}; '
                           f'choose an --out outside it (sources are never modified)')


def prepare_dataset(src: str | os.PathLike, dest: str | os.PathLike, convention: str,
                    rainy_side: str = 'left', input_pattern: str | None = None,
                    target_pattern: str | None = None, overwrite: bool = False,
                    progress: bool = False) -> PreparedSummary:
    """Write ``dest/input`` and ``dest/target`` (matching names) from an original release.

    ``input_pattern``/``target_pattern`` override the convention's patterns (custom layouts).
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise DatasetError(f'{src}: source folder not found')
    if convention not in CONVENTIONS:
        raise DatasetError(f'unknown convention {convention!r}; use one of '
                           f'{", ".join(CONVENTIONS)}')
    check_not_overlapping(src, dest)
    writer = OutputWriter(overwrite)
    if convention == SIDE_BY_SIDE:
        files = _source_images(src)
        if not files:
            raise DatasetError(f'{src}: no images found')
        for path in tqdm(files, desc='split', unit='img', disable=not progress):
            rainy, clean = split_side_by_side(path, rainy_side)
            key = _safe_id(path.relative_to(src).with_suffix('').as_posix())
            writer.png(rainy, dest / 'input' / f'{key}.png')
            writer.png(clean, dest / 'target' / f'{key}.png')
        return PreparedSummary(len(files), writer.written, writer.unchanged, dest)

    default_in, default_tgt = PAIR_CONVENTIONS[convention]
    pairs = match_pairs(src, input_pattern or default_in, target_pattern or default_tgt)
    for _key, rainy, clean in pairs:   # cheap header check first: fail before writing anything
        if image_size(rainy) != image_size(clean):
            (wr, hr), (wc, hc) = image_size(rainy), image_size(clean)
            raise DatasetError(f'{rainy} ({wr}x{hr}) and {clean} ({wc}x{hc}): sizes differ')
    for key, rainy, clean in tqdm(pairs, desc='copy', unit='pair', disable=not progress):
        writer.copy(rainy, dest / 'input' / f'{key}{rainy.suffix.lower()}')
        writer.copy(clean, dest / 'target' / f'{key}{clean.suffix.lower()}')
    return PreparedSummary(len(pairs), writer.written, writer.unchanged, dest)
