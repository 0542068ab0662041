"""Scoring folders of restored images: pairing with targets by stem, means, and report files.

The per-image numbers come from :mod:`utils.eval.metrics` (the published protocol) and, for
images without a target, :mod:`utils.eval.noreference` (NIQE, BRISQUE, PIQE); this module
decides which images are compared, summarises them, and writes the JSON/CSV reports that
``evaluation.py``, ``test.py`` and ``tools/paper_table.py`` produce.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.core.atomic import write_text_atomic
from utils.core.errors import InputError
from utils.data.image_io import list_images, read_image_rgb
from utils.eval.metrics import calculate_psnr, calculate_ssim
from utils.eval.noreference import LABELS, METRICS as NO_REFERENCE, score_image

# Every score a row may hold, in report order; the no-reference ones are lower-is-better.
SCORES = ('psnr', 'ssim', 'lpips', *NO_REFERENCE)


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
                  lpips: Callable[[np.ndarray, np.ndarray], float] | None = None,
                  no_reference: Sequence[str] = ()) -> dict:
    """One row: name, paths, PSNR, SSIM (and LPIPS, and the ``no_reference`` scores of the
    restored image); errors name the restored file."""
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
    row.update(score_image(img, no_reference, name=str(restored)))
    return row


def score_without_target(path: Path, metrics: Sequence[str] = NO_REFERENCE,
                         skip_small: bool = False) -> dict:
    """One row of an image that has no target: name, path and its no-reference scores.

    An image too small for a metric is a one-line error naming it, or with ``skip_small`` a NaN
    score that the means leave out (and count, see :func:`mean_metrics`).
    """
    return dict(name=Path(path).stem, restored=str(path),
                **score_image(read_image_rgb(path), metrics, str(path), skip_small))


def mean_metrics(rows: list[dict]) -> dict:
    """Means over images of every metric in the rows (``inf`` if any PSNR is ``inf``).

    Images identical to their targets (PSNR ``inf``) are counted in ``identical`` (with their
    names in ``identical_names``), and ``psnr_finite`` is the mean over the others, so a report
    can say so instead of printing a bare ``inf`` (see :func:`psnr_text`). A no-reference score
    that is NaN (an image too small or flat for it) is left out of its mean, and ``<metric>_images``
    says over how many images that mean is.
    """
    keys = [k for k in SCORES if rows and k in rows[0]]
    means = {}
    for k in keys:
        if k in NO_REFERENCE:
            vals = [r[k] for r in rows if not math.isnan(r[k])]
            means[k] = float(np.mean(vals)) if vals else math.nan
            if len(vals) < len(rows):
                means[f'{k}_images'] = len(vals)
        else:
            means[k] = float(np.mean([r[k] for r in rows]))
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


def no_reference_text(means: dict, metrics: Sequence[str] | None = None) -> str:
    """``NIQE 4.1234, BRISQUE 20.1234, PIQE 35.1234`` (lower is better), with how many images a
    mean covers when some were too small for its metric."""
    parts = []
    for m in (metrics if metrics is not None else [k for k in NO_REFERENCE if k in means]):
        n = means.get(f'{m}_images')
        value = 'n/a' if math.isnan(means[m]) else f'{means[m]:.4f}'
        over = '' if n is None else f' (over {n} of {means["images"]} images; the others are ' \
            f'too small or flat for it)'
        parts.append(f'{LABELS[m]} {value}{over}')
    return ', '.join(parts)


def evaluate_pairs(pairs: list[tuple[Path, Path]], test_y: bool = True, crop_border: int = 0,
                   lpips: Callable | None = None, progress: bool = False,
                   no_reference: Sequence[str] = ()) -> tuple[list[dict], dict]:
    """Rows (one per pair) and their means; stops at the first bad pair with its file named."""
    with tqdm(pairs, desc='evaluating', unit='img', disable=not progress) as bar:
        rows = [evaluate_pair(r, t, test_y, crop_border, lpips, no_reference) for r, t in bar]
    return rows, mean_metrics(rows)


def evaluate_without_targets(files: Sequence[Path], metrics: Sequence[str] = NO_REFERENCE,
                             progress: bool = False, skip_small: bool = False
                             ) -> tuple[list[dict], dict]:
    """No-reference rows (one per image, sorted by name) and their means."""
    files = sorted(map(Path, files), key=lambda p: p.stem)
    with tqdm(files, desc='scoring', unit='img', disable=not progress) as bar:
        rows = [score_without_target(f, metrics, skip_small) for f in bar]
    return rows, mean_metrics(rows)


def evaluate_folders(restored_dir: str | os.PathLike, target_dir: str | os.PathLike,
                     test_y: bool = True, crop_border: int = 0, lpips: Callable | None = None,
                     progress: bool = False) -> tuple[list[dict], dict]:
    """PSNR/SSIM (and LPIPS) of every restored image against its target, plus the means."""
    return evaluate_pairs(pair_by_stem(restored_dir, target_dir), test_y, crop_border, lpips,
                          progress)


def input_output_without_targets(pairs: Sequence[tuple[Path, Path]],
                                 metrics: Sequence[str] = NO_REFERENCE) -> tuple[dict, dict]:
    """Means of the no-reference scores of ``(rainy input, restored output)`` pairs: the inputs'
    and the outputs'. Images too small for a metric are left out of its means (counted)."""
    _, before = evaluate_without_targets([i for i, _ in pairs], metrics, skip_small=True)
    _, after = evaluate_without_targets([o for _, o in pairs], metrics, skip_small=True)
    return before, after


def input_output_text(before: dict, after: dict, metrics: Sequence[str]) -> str:
    """``NIQE 7.1234 -> 5.4321, ...``: each metric's mean on the inputs, then on the outputs."""
    parts = []
    for m in metrics:
        n = after.get(f'{m}_images', after['images'])
        if n == 0:
            parts.append(f'{LABELS[m]} n/a (every image is too small or flat for it)')
            continue
        over = '' if n == after['images'] else \
            f' (over {n} of {after["images"]} images; the others are too small or flat)'
        parts.append(f'{LABELS[m]} {before[m]:.4f} -> {after[m]:.4f}{over}')
    return ', '.join(parts)


# --- Reports ----------------------------------------------------------------------------------

def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None                             # a score the image was too small for
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
    """One CSV row per image, then a row named ``mean``; written atomically. A score an image
    was too small for is an empty cell; the ``target`` column is there when targets are."""
    metrics = [k for k in SCORES if k in means]
    paths = ['restored', 'target'] if any('target' in r for r in rows) else ['restored']
    cell = lambda v: '' if math.isnan(v) else repr(v)                 # noqa: E731
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['name', *metrics, *paths])
    for r in rows:
        writer.writerow([r['name'], *(cell(r[k]) for k in metrics), *(r[k] for k in paths)])
    writer.writerow(['mean', *(cell(means[k]) for k in metrics), *([''] * len(paths))])
    write_text_atomic(path, buf.getvalue())


def format_table(rows: list[dict], means: dict) -> str:
    """A plain-text table of the rows and the means, for the console."""
    metrics = [k for k in SCORES if k in means]
    width = max([len('mean')] + [len(r['name']) for r in rows])
    head = f'{"image":<{width}}' + ''.join(f'{m.upper():>10}' for m in metrics)
    cell = lambda v: f'{"-":>10}' if math.isnan(v) else f'{v:>10.4f}'   # noqa: E731
    lines = [head, '-' * len(head)]
    for r in rows:
        lines.append(f'{r["name"]:<{width}}' + ''.join(cell(r[m]) for m in metrics))
    lines.append('-' * len(head))
    lines.append(f'{"mean":<{width}}' + ''.join(cell(means[m]) for m in metrics))
    return '\n'.join(lines)
