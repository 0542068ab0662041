"""Scoring folders of restored images: pairing with targets by stem, means, and report files.

The per-image numbers come from :mod:`utils.eval.metrics` (the published protocol); this module
decides which images are compared, summarises them, and writes the JSON/CSV reports that
``evaluation.py``, ``test.py --target_path`` and ``tools/paper_table.py`` produce.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.core.atomic import write_text_atomic
from utils.core.errors import InputError
from utils.data.image_io import list_images, read_image_rgb
from utils.eval.metrics import calculate_psnr, calculate_ssim


class PairingError(InputError):
    """Restored and target folders whose files do not pair up one-to-one by stem."""


def _by_stem(files: Iterable[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise PairingError(f'{folder}: two images share the name {f.stem!r} '
                               f'({out[f.stem].name} and {f.name}); pairs are matched by stem')
        out[f.stem] = f
    return out


def target_folder(path: str | os.PathLike) -> Path:
    """``path``, or its ``target/`` when ``path`` is a benchmark split (no images of its own)."""
    path = Path(path)
    if path.is_dir() and (path / 'target').is_dir() and not list_images(path):
        return path / 'target'
    return path


def pair_by_stem(restored_dir: str | os.PathLike, target_dir: str | os.PathLike
                 ) -> list[tuple[Path, Path]]:
    """``(restored, target)`` pairs matched by file stem (extensions may differ), sorted.

    Every image must have its partner: a missing one is an error naming the file, because a
    mean over a silently smaller set is not comparable with published numbers.
    """
    rdir, tdir = Path(restored_dir), target_folder(target_dir)
    if not rdir.is_dir():
        raise PairingError(f'{rdir}: restored folder not found')
    restored = _by_stem(list_images(rdir), rdir)
    if not restored:
        raise PairingError(f'{rdir}: no images in the restored folder')
    pairs = pair_with_targets(list(restored.values()), tdir)
    targets = _by_stem(list_images(tdir), tdir)
    extra = sorted(set(targets) - set(restored))
    if extra:
        raise PairingError(f'{targets[extra[0]]}: no restored image named {extra[0]}.* in {rdir}'
                           f' ({len(extra)} target image(s) unmatched)')
    return pairs


def pair_with_targets(restored: list[Path], target: str | os.PathLike
                      ) -> list[tuple[Path, Path]]:
    """Pair given restored files with the same-stem images of a target folder (or one file)."""
    tpath = target_folder(target)
    if tpath.is_file():
        if len(restored) != 1:
            raise PairingError(f'{tpath}: one target image for {len(restored)} restored images')
        return [(Path(restored[0]), tpath)]
    if not tpath.is_dir():
        raise PairingError(f'{tpath}: target folder not found')
    targets = _by_stem(list_images(tpath), tpath)
    pairs = []
    for r in sorted(map(Path, restored), key=lambda p: p.stem):
        if r.stem not in targets:
            raise PairingError(f'{r}: no target image named {r.stem}.* in {tpath}')
        pairs.append((r, targets[r.stem]))
    return pairs


def evaluate_pair(restored: Path, target: Path, test_y: bool = True, crop_border: int = 0,
                  lpips: Callable[[np.ndarray, np.ndarray], float] | None = None) -> dict:
    """One row: name, paths, PSNR, SSIM (and LPIPS); errors name the restored file."""
    img, ref = read_image_rgb(restored), read_image_rgb(target)
    if img.shape != ref.shape:
        raise ValueError(f'{restored}: size {img.shape[1]}x{img.shape[0]} differs from its target '
                         f'{target} ({ref.shape[1]}x{ref.shape[0]})')
    try:
        row = dict(name=Path(restored).stem, restored=str(restored), target=str(target),
                   psnr=calculate_psnr(img, ref, crop_border, test_y),
                   ssim=calculate_ssim(img, ref, crop_border, test_y))
    except ValueError as err:
        raise ValueError(f'{restored}: {err}') from None
    if lpips is not None:
        row['lpips'] = lpips(img, ref)
    return row


def mean_metrics(rows: list[dict]) -> dict:
    """Means over images of every metric in the rows (``inf`` if any PSNR is ``inf``).

    Images identical to their targets (PSNR ``inf``) are counted in ``identical`` (with their
    names in ``identical_names``), and ``psnr_finite`` is the mean over the others, so a report
    can say so instead of printing a bare ``inf`` (see :func:`psnr_text`).
    """
    keys = [k for k in ('psnr', 'ssim', 'lpips') if rows and k in rows[0]]
    means = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    means['images'] = len(rows)
    if 'psnr' in means:
        same = [r for r in rows if r['psnr'] == math.inf]
        if same:
            finite = [r['psnr'] for r in rows if r['psnr'] != math.inf]
            means['identical'] = len(same)
            means['identical_names'] = [r.get('name', '?') for r in same]
            means['psnr_finite'] = float(np.mean(finite)) if finite else math.nan
    return means


def psnr_text(means: dict) -> str:
    """``PSNR 31.2345 dB``, or for images identical to their targets what that ``inf`` means."""
    if not means.get('identical'):
        return f'PSNR {means["psnr"]:.4f} dB'
    n, total = means['identical'], means['images']
    names = ', '.join(means.get('identical_names', [])[:3]) + \
        (', ...' if n > 3 else '')
    rest = (f'; mean over the other {total - n}: {means["psnr_finite"]:.4f} dB'
            if total > n else '')
    return f'PSNR inf ({n} of {total} images identical to their targets: {names}{rest})'


def evaluate_pairs(pairs: list[tuple[Path, Path]], test_y: bool = True, crop_border: int = 0,
                   lpips: Callable | None = None, progress: bool = False
                   ) -> tuple[list[dict], dict]:
    """Rows (one per pair) and their means; stops at the first bad pair with its file named."""
    with tqdm(pairs, desc='evaluating', unit='img', disable=not progress) as bar:
        rows = [evaluate_pair(r, t, test_y, crop_border, lpips) for r, t in bar]
    return rows, mean_metrics(rows)


def evaluate_folders(restored_dir: str | os.PathLike, target_dir: str | os.PathLike,
                     test_y: bool = True, crop_border: int = 0, lpips: Callable | None = None,
                     progress: bool = False) -> tuple[list[dict], dict]:
    """PSNR/SSIM (and LPIPS) of every restored image against its target, plus the means."""
    return evaluate_pairs(pair_by_stem(restored_dir, target_dir), test_y, crop_border, lpips,
                          progress)


# --- Reports ----------------------------------------------------------------------------------

def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)                       # 'inf': JSON has no infinity
    return value


def write_json_report(path: str | os.PathLike, rows: list[dict], means: dict,
                      settings: dict) -> None:
    """``{'settings', 'means', 'images': rows}`` as JSON, written atomically."""
    doc = {'settings': settings,
           'means': {k: _jsonable(v) for k, v in means.items()},
           'images': [{k: _jsonable(v) for k, v in r.items()} for r in rows]}
    write_text_atomic(path, json.dumps(doc, indent=2) + '\n')


def write_csv_report(path: str | os.PathLike, rows: list[dict], means: dict) -> None:
    """One CSV row per image, then a row named ``mean``; written atomically."""
    metrics = [k for k in ('psnr', 'ssim', 'lpips') if k in means]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['name', *metrics, 'restored', 'target'])
    for r in rows:
        writer.writerow([r['name'], *(repr(r[k]) for k in metrics), r['restored'], r['target']])
    writer.writerow(['mean', *(repr(means[k]) for k in metrics), '', ''])
    write_text_atomic(path, buf.getvalue())


def format_table(rows: list[dict], means: dict) -> str:
    """A plain-text table of the rows and the means, for the console."""
    metrics = [k for k in ('psnr', 'ssim', 'lpips') if k in means]
    width = max([len('mean')] + [len(r['name']) for r in rows])
    head = f'{"image":<{width}}' + ''.join(f'{m.upper():>10}' for m in metrics)
    lines = [head, '-' * len(head)]
    for r in rows:
        lines.append(f'{r["name"]:<{width}}' + ''.join(f'{r[m]:>10.4f}' for m in metrics))
    lines.append('-' * len(head))
    lines.append(f'{"mean":<{width}}' + ''.join(f'{means[m]:>10.4f}' for m in metrics))
    return '\n'.join(lines)
