"""PSNR, SSIM (and optional LPIPS) as deraining papers report them, per image and per folder.

The published protocol (Restormer's ``evaluate_PSNR_SSIM.m``, reused by later papers): the
saved 8-bit images, converted to the Y channel of MATLAB's ``rgb2ycbcr`` and rounded to uint8;
no border crop; PSNR with peak 255; SSIM of Wang et al. (11x11 Gaussian window, sigma 1.5,
K1 0.01, K2 0.03, 'valid' region) computed by scikit-image; the mean over the test set.
``evaluation.py``, ``test.py --target_path`` and training validation all call these functions,
so every number in the project is computed the same way. Functions never modify their inputs.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from skimage.metrics import structural_similarity
from tqdm import tqdm

from .image_io import list_images, read_image_rgb, uint8_to_tensor

# MATLAB rgb2ycbcr, Y row, scaled by 1000 so that the arithmetic is exact in integers.
_Y_COEFFS_X1000 = np.array([65481, 128553, 24966], dtype=np.int64)
SSIM_SETTINGS = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                     data_range=255.0, K1=0.01, K2=0.03)
SSIM_MIN_SIZE = 11       # the 11x11 window must fit in the 'valid' region


def rgb_to_y(img: np.ndarray, round_to_uint8: bool = True) -> np.ndarray:
    """Y of MATLAB ``rgb2ycbcr`` for uint8 RGB ``HxWx3``: 16 + (65.481R + 128.553G + 24.966B)/255.

    Rounded like MATLAB's conversion to uint8 (nearest, ties away from zero). The sum is
    computed in exact integers, because 194 RGB colours land exactly on .5 where NumPy's
    round-half-to-even would differ. Returned as float64 either way.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {img.shape}')
    if not round_to_uint8:
        rgb = img.astype(np.float64)
        return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    num = img.astype(np.int64) @ _Y_COEFFS_X1000           # = 255000 * (Y - 16)
    return (16 + (num + 127500) // 255000).astype(np.float64)


def _prepare(img: np.ndarray, crop_border: int, test_y: bool) -> np.ndarray:
    if img.dtype != np.uint8:
        raise ValueError(f'metrics are computed on saved 8-bit images; got dtype {img.dtype}')
    if crop_border < 0:
        raise ValueError(f'crop_border must be >= 0, got {crop_border}')
    out = rgb_to_y(img) if test_y else img.astype(np.float64)
    if crop_border > 0:
        out = out[crop_border:-crop_border, crop_border:-crop_border, ...]
    return out


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f'image sizes differ: {a.shape} vs {b.shape}')


def calculate_psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 0,
                   test_y: bool = True) -> float:
    """PSNR (dB, peak 255) between two uint8 ``HxWx3`` images; ``inf`` if identical."""
    _check_pair(img, ref)
    a, b = _prepare(img, crop_border, test_y), _prepare(ref, crop_border, test_y)
    mse = np.mean((a - b) ** 2)
    return float('inf') if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def calculate_ssim(img: np.ndarray, ref: np.ndarray, crop_border: int = 0,
                   test_y: bool = True) -> float:
    """SSIM (Wang et al., MATLAB settings) between two uint8 ``HxWx3`` images.

    On Y it is one plane; on RGB it is the mean of the three channels' SSIM.
    """
    _check_pair(img, ref)
    a, b = _prepare(img, crop_border, test_y), _prepare(ref, crop_border, test_y)
    if min(a.shape[:2]) < SSIM_MIN_SIZE:
        raise ValueError(f'SSIM needs images of at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} pixels '
                         f'(after crop_border), got {a.shape[0]}x{a.shape[1]}')
    if a.ndim == 2:
        return float(structural_similarity(a, b, **SSIM_SETTINGS))
    return float(np.mean([structural_similarity(a[..., c], b[..., c], **SSIM_SETTINGS)
                          for c in range(3)]))


# --- LPIPS (optional: the `lpips` package and its backbone weights) -------------------------

class LPIPSUnavailable(RuntimeError):
    """LPIPS cannot run here (package or backbone weights missing); the message says how to fix."""


class LPIPSMetric:
    """LPIPS distance (Zhang et al. 2018) between two uint8 ``HxWx3`` images; lower is better.

    Imported lazily: ``lpips`` (which brings torchvision) is not a project dependency, and its
    backbone (AlexNet by default) is downloaded by torchvision on first use.
    """

    def __init__(self, net: str = 'alex', device: str = 'cpu'):
        try:
            import lpips
        except ImportError as err:
            raise LPIPSUnavailable(
                f'LPIPS needs the optional package `lpips` ({err}); install it with '
                f'`pip install lpips` (it brings torchvision). PSNR/SSIM do not need it') from None
        import torch
        try:
            self.model = lpips.LPIPS(net=net, verbose=False).eval().to(device)
        except (OSError, RuntimeError, ValueError) as err:
            hub = Path(torch.hub.get_dir()) / 'checkpoints'
            text = str(err).strip()
            first = text.splitlines()[0][:200] if text else type(err).__name__
            raise LPIPSUnavailable(
                f'LPIPS backbone weights ({net}) could not be loaded: {first}. torchvision '
                f'downloads them on first use into {hub}; offline, copy the file there from a '
                f'machine that has it (for alex: alexnet-owt-7be5be79.pth) or set TORCH_HOME') \
                from None
        self.device = device

    def __call__(self, img: np.ndarray, ref: np.ndarray) -> float:
        import torch
        _check_pair(img, ref)
        with torch.no_grad():
            a = uint8_to_tensor(img).to(self.device) * 2 - 1
            b = uint8_to_tensor(ref).to(self.device) * 2 - 1
            return float(self.model(a, b).item())


# --- Folders: pairing by file stem, per-image rows and means ---------------------------------

class PairingError(ValueError):
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


def _write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8', newline='') as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)            # mkstemp makes 0600; reports are for sharing
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


write_text_atomic = _write_text_atomic     # public name for other reports (tools/paper_table.py)


def write_json_report(path: str | os.PathLike, rows: list[dict], means: dict,
                      settings: dict) -> None:
    """``{'settings', 'means', 'images': rows}`` as JSON, written atomically."""
    doc = {'settings': settings,
           'means': {k: _jsonable(v) for k, v in means.items()},
           'images': [{k: _jsonable(v) for k, v in r.items()} for r in rows]}
    _write_text_atomic(path, json.dumps(doc, indent=2) + '\n')


def write_csv_report(path: str | os.PathLike, rows: list[dict], means: dict) -> None:
    """One CSV row per image, then a row named ``mean``; written atomically."""
    metrics = [k for k in ('psnr', 'ssim', 'lpips') if k in means]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['name', *metrics, 'restored', 'target'])
    for r in rows:
        writer.writerow([r['name'], *(repr(r[k]) for k in metrics), r['restored'], r['target']])
    writer.writerow(['mean', *(repr(means[k]) for k in metrics), '', ''])
    _write_text_atomic(path, buf.getvalue())


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
