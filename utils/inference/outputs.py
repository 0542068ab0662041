"""Restoring folders of files, and the manifest that says which weights made them.

:func:`restore_files` runs :func:`utils.inference.restore.restore` over files the way test.py
(and the demo) need: resumable, atomic, and one bad file does not stop the rest; a manifest
records which weights made them.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm import tqdm

from utils.core.atomic import remove_stale_temps, write_text_atomic
from utils.core.errors import InputError, SpikeDerainError
from utils.core.version import code_version
from utils.data.image_io import (ImageReadError, NonFiniteImageError, is_image_file,
                                 is_out_of_space, list_images, read_image_rgb, tensor_to_uint8,
                                 uint8_to_tensor, write_png_atomic)
from utils.inference.memory import Budget, NotEnoughMemory, plan_tiling
from utils.inference.restore import AUTO, restore, say_once


# --- Folders of files: what test.py runs ------------------------------------------------------

def find_inputs(data_path: str | Path) -> tuple[list[Path], Path]:
    """Images to restore and the folder they live in.

    ``data_path`` is one image, a folder of images, or a benchmark split with ``input/`` (and
    ``target/``) subfolders, whose ``input/`` is then read.
    """
    path = Path(data_path)
    if path.is_file():
        if not is_image_file(path):
            raise InputError(f'{path}: not an image file (expected one of the usual extensions)')
        return [path], path.parent
    if not path.is_dir():
        raise InputError(f'{path}: no such file or folder')
    files = list_images(path)
    if not files and (path / 'input').is_dir():
        path = path / 'input'
        files = list_images(path)
    if not files:
        raise InputError(f'{path}: no images found')
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise InputError(f'{path}: {seen[f.stem].name} and {f.name} would both be restored to '
                             f'{f.stem}.png; rename one')
        seen[f.stem] = f
    return files, path


def output_is_complete(path: Path) -> bool:
    """A PNG that exists and decodes: writes are atomic, so anything else is a stray file."""
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


class OutputWriteError(SpikeDerainError, OSError):
    """An output that cannot be written for a reason every later one shares (disk full, ...)."""


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA or CPU allocation failure (torch reports the CPU one as a RuntimeError)."""
    text = str(err)
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or \
        'out of memory' in text or "can't allocate memory" in text


@dataclass
class RestoreSummary:
    """What :func:`restore_files` did: written, skipped (already there) and failed files."""
    restored: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.restored) / self.seconds if self.seconds > 0 else 0.0


def output_path(save_dir: Path, src: Path) -> Path:
    """Where the restored ``src`` goes: same stem, always PNG (lossless, 8-bit)."""
    return Path(save_dir) / f'{src.stem}.png'


def _restore_pending(model: nn.Module, pending: list[tuple[Path, np.ndarray]], save_dir: Path,
                     summary: RestoreSummary, total: int, report: Callable[[str], None],
                     options: dict) -> None:
    """Restore the ``pending`` images (one batch; ``options``: restore()'s tiling and batch
    keywords) and write them; a failure is noted in ``summary`` and reported."""
    batch = torch.cat([uint8_to_tensor(arr) for _, arr in pending])
    try:
        out = restore(model, batch, **options)
    except NotEnoughMemory as err:              # refused before the forward: it says why
        for src, _ in pending:
            summary.failed.append((src, str(err)))
            report(f'error: {src}: {err}')
        pending.clear()
        return
    except (RuntimeError, MemoryError) as err:
        why = ('out of memory; use --tile (e.g. 512) or a smaller --batch_size'
               if is_out_of_memory(err) else
               f'restoring failed: {str(err).strip().splitlines()[0][:200]}')
        for src, _ in pending:
            summary.failed.append((src, why))
            report(f'error: {src}: {why}')
    else:
        _write_outputs(out, pending, save_dir, summary, total, report)
    pending.clear()


def _write_outputs(out: torch.Tensor, pending: list[tuple[Path, np.ndarray]], save_dir: Path,
                   summary: RestoreSummary, total: int, report: Callable[[str], None]) -> None:
    """Write each restored image of ``out`` as a PNG; a full disk stops the whole run (every
    later write would fail too, ``total`` inputs in all)."""
    for k, (src, _) in enumerate(pending):
        dst = output_path(save_dir, src)
        try:
            img = tensor_to_uint8(out[k:k + 1])
        except NonFiniteImageError as err:
            summary.failed.append((src, str(err)))
            report(f'error: {src}: {err}')
            continue
        try:
            summary.restored.append(write_png_atomic(dst, img))
        except OSError as err:
            if is_out_of_space(err):     # every later write fails too: stop here
                left = total - len(summary.restored) - len(summary.skipped) - \
                    len(summary.failed)
                raise OutputWriteError(err.errno, f'{err.strerror} (stopped: {left} '
                                       f'image(s) not restored)', str(dst)) from None
            summary.failed.append((src, f'cannot write {dst}: {err}'))
            report(f'error: {src}: cannot write {dst}: {err}')


# Padding up to the model's size multiple is normal; past this share of what the model sees, the
# output of a tiny image is mostly made from padding, which the user should hear about.
PADDING_NOTE_SHARE = 0.25


def padding_note(model: nn.Module, src: Path, h: int, w: int) -> str | None:
    """A one-line note when padding to the model's size multiple (``models.base``) makes up more
    than :data:`PADDING_NOTE_SHARE` of the padded image (tiny photos), else ``None``."""
    m = int(getattr(model, 'size_multiple', 1) or 1)
    ph, pw = -(-h // m) * m, -(-w // m) * m
    share = 1 - (h * w) / (ph * pw)
    if share <= PADDING_NOTE_SHARE:
        return None
    return (f'note: {src} is {w}x{h}: restored padded to {pw}x{ph} (the model needs sides that '
            f'are multiples of {m}), so {share:.0%} of what it sees is padding; the output is '
            f'cropped back to {w}x{h}')


def restore_files(model: nn.Module, inputs: list[Path], save_dir: str | Path,
                  tile: int | str | None = None, tile_overlap: int = 32, batch_size: int = 1,
                  overwrite: bool = False, progress: bool = True,
                  report: Callable[[str], None] | None = None,
                  memory: Budget | int | None = None) -> RestoreSummary:
    """Restore ``inputs`` into ``save_dir/<stem>.png`` and say what happened.

    ``tile``: ``'auto'`` tiles an image only when it would not fit ``memory`` (see
    :func:`utils.inference.restore.restore`), ``None`` restores whole (warned or refused, per
    image, before a forward that would not fit), an int forces tiles of that side. Each
    distinct note or warning is reported once.

    Existing complete outputs are skipped unless ``overwrite`` (so an interrupted run resumes).
    A file that cannot be read or restored is reported through ``report`` (one line naming it)
    and the others are still processed. Untiled, consecutive images of the same size are
    batched ``batch_size`` at a time; tiled, ``batch_size`` counts tiles.
    """
    if report is None:
        def report(line: str) -> None:
            tqdm.write(line, file=sys.stderr)
    notes = say_once(report)
    save_dir = Path(save_dir)
    summary = RestoreSummary()
    pending: list[tuple[Path, np.ndarray]] = []
    per_forward = 1 if tile not in (None, AUTO) else batch_size
    start = time.perf_counter()

    def flush() -> None:
        _restore_pending(model, pending, save_dir, summary, len(inputs), report,
                         dict(tile=tile, tile_overlap=tile_overlap, batch_size=batch_size,
                              progress=progress, memory=memory, report=notes))

    bar = tqdm(inputs, desc='restoring', unit='img', disable=not progress)
    for src in bar:
        dst = output_path(save_dir, src)
        if not overwrite and dst.exists() and output_is_complete(dst):
            summary.skipped.append(dst)
            continue
        try:
            arr = read_image_rgb(src)
        except ImageReadError as err:
            summary.failed.append((src, str(err)))
            report(f'error: {err}')
            continue
        note = padding_note(model, src, *arr.shape[:2])
        if note:
            notes(note)
        if pending and (len(pending) == per_forward or arr.shape != pending[0][1].shape):
            flush()
        pending.append((src, arr))
    if pending:
        flush()
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


# --- Which weights made a folder's outputs --------------------------------------------------

MANIFEST_NAME = '.spikederain-outputs.json'
# Recipe entries that decide the pixels: outputs made with other values are other outputs.
# (The batch size changes the last bits of the floats, so it is part of the recipe too.)
RECIPE_KEYS = ('weights_sha256', 'model', 'model_config', 'path', 'precision', 'backend', 'tile',
               'tile_overlap', 'tiling', 'batch_size', 'code_version')


class OutputsMismatchError(InputError):
    """An output folder holding images made by other weights or settings than this run's."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as fh:
        for block in iter(lambda: fh.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def output_recipe(model: nn.Module, weights: str | Path | None, *, path: str,
                  precision: str = 'fp32', backend: str = 'cpu', tile: int | None = None,
                  tile_overlap: int = 32, batch_size: int = 1,
                  tiling: dict[str, str] | None = None) -> dict:
    """What decides the outputs' pixels (test.py and tools/paper_table.py record it beside
    them): the weights' SHA-256, the model and its config, the forward (``path``: fast or exact,
    ``precision``), the ``backend`` (cpu, cuda, tf32), tiling, batch size and the code version.
    ``tiling``: with ``tile='auto'``, what was chosen per image size (``{'WxH': 'whole' or
    'tiles WxH overlap N'}``, :func:`planned_tiling`)."""
    recipe = dict(model=getattr(model, 'model_name', type(model).__name__),
                  model_config=dict(getattr(model, 'config', {})),
                  weights=str(weights) if weights else None,
                  weights_sha256=file_sha256(weights) if weights else 'random weights, seed 0',
                  path=path, precision=precision, backend=backend, tile=tile,
                  tile_overlap=tile_overlap if tile else None, batch_size=batch_size,
                  code_version=code_version())
    if tiling is not None:
        recipe['tiling'] = tiling
    return json.loads(json.dumps(recipe, default=str))     # as it reads back from the file


def _describe_recipe(recipe: dict) -> str:
    sha = recipe.get('weights_sha256') or '?'
    tile = f'tile {recipe.get("tile")}/{recipe.get("tile_overlap")}' if recipe.get('tile') \
        else 'whole images'
    return (f'{recipe.get("model")} from {recipe.get("weights")} (sha256 {sha[:12]}), '
            f'{recipe.get("path")}, {tile}')


def _shown(key: str, value) -> str:
    if value is None:
        return 'none recorded' if key not in ('tile', 'tile_overlap') else 'none'
    return str(value)[:12] if key == 'weights_sha256' else str(value)


def recipe_differences(old: dict, new: dict) -> list[str]:
    """``'tile: 16 -> none'`` for every recipe entry that differs (folder's -> this run's)."""
    return [f'{k}: {_shown(k, old.get(k))} -> {_shown(k, new.get(k))}' for k in RECIPE_KEYS
            if _differs(k, old.get(k), new.get(k))]


def _differs(key: str, old, new) -> bool:
    """Automatic tiling is recorded per image size: sizes both runs saw must agree."""
    if key == 'tiling' and isinstance(old, dict) and isinstance(new, dict):
        return any(old[size] != new[size] for size in old.keys() & new.keys())
    return old != new


def image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) as :func:`read_image_rgb` will return it (EXIF rotation applied), from
    the header only; ``None`` if the file cannot be opened (it fails later, naming itself)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            rotated = im.getexif().get(0x0112) in (5, 6, 7, 8)
    except (OSError, ValueError, SyntaxError):
        return None
    return (w, h) if rotated else (h, w)


def planned_tiling(model: nn.Module, inputs: list[Path], tile_overlap: int, batch_size: int,
                   memory: Budget, image_on_model_device: bool = True) -> dict[str, str]:
    """What ``tile='auto'`` will do per image size of ``inputs`` (the recipe's ``tiling``)."""
    sizes = sorted({s for s in map(image_size, inputs) if s is not None})
    return {f'{w}x{h}': plan_tiling(model, h, w, tile_overlap, batch_size, memory,
                                    image_on_model_device).recipe()
            for h, w in sizes}


def read_manifest(save_dir: str | Path) -> dict | None:
    """The folder's manifest, ``None`` if it has none; an unreadable one is ``{}``."""
    path = Path(save_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_output_manifest(save_dir: str | Path, recipe: dict, inputs: list[Path],
                          overwrite: bool, option: str = '--save_path') -> None:
    """Refuse to skip (and re-score) outputs another model or setting made.

    A folder records the recipe of its outputs in ``MANIFEST_NAME`` (:func:`output_recipe`:
    weights' SHA-256, model, path, precision, backend, tiling, batch, code version). Without
    ``overwrite``, a folder whose existing outputs for these inputs were made by another recipe
    -- or by an unknown one: no manifest, or an ``--overwrite`` run that was interrupted -- is an
    :class:`OutputsMismatchError`; with it, they are all redone.
    """
    save_dir = Path(save_dir)
    if overwrite:
        return
    existing = [output_path(save_dir, p) for p in inputs if output_path(save_dir, p).exists()]
    if not existing:
        return
    old = read_manifest(save_dir)
    hint = f'use --overwrite to redo them with this recipe, or another {option}'
    if old is None or not old.get('recipe'):
        raise OutputsMismatchError(
            f'{option} {save_dir}: holds {len(existing)} output(s) for these inputs '
            f'({existing[0].name}, ...) with no record of the weights that made them; {hint}')
    if old.get('overwriting'):
        raise OutputsMismatchError(
            f'{option} {save_dir}: an --overwrite run into this folder was interrupted, so its '
            f'outputs may come from two models; re-run with --overwrite')
    diff = recipe_differences(old['recipe'], recipe)
    if diff:
        raise OutputsMismatchError(
            f'{option} {save_dir}: holds outputs of {_describe_recipe(old["recipe"])}, made with '
            f'another recipe (differs in {"; ".join(diff)}; folder -> this run); {hint}')


def command_line(script: str, argv: list[str] | None = None) -> str:
    """``python SCRIPT ARGS`` as a user would type it again (``argv``: the script's arguments,
    default the process's): what a manifest records as the command that made the outputs."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(['python', script, *map(str, args)])


def write_manifest(save_dir: str | Path, recipe: dict, overwriting: bool = False,
                   command: str | None = None) -> None:
    """Record the recipe of the folder's outputs (atomically), and the ``command`` that wrote
    them (shown by tools/report.py; not part of the recipe).

    Temps of a manifest write killed before its rename are removed first.
    """
    doc = {'recipe': recipe, 'overwriting': bool(overwriting)}
    if command:
        doc.update(command=command, cwd=str(Path.cwd()))
    remove_stale_temps(save_dir, [MANIFEST_NAME])
    write_text_atomic(Path(save_dir) / MANIFEST_NAME,
                      json.dumps(doc, indent=2, sort_keys=True) + '\n')
