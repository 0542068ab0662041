"""Restoring a batch with a model: the one function test.py, validation and held-out checks share.

The model itself pads to the size it needs and resets its spiking state around every forward
(see ``models.base.SpikingRestorer``); :func:`restore` adds device handling, no-grad, clamping,
tiled inference (the tiles and their blending are in :mod:`utils.inference.tiling`), and memory
ahead of time (:mod:`utils.inference.memory`): tiles chosen when an image would not fit, and a
warning or refusal before a whole forward that would not.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn as nn

from utils.inference.memory import (Budget, check_fits, estimate_forward, memory_budget,
                                    plan_tiling)
from utils.inference.tiling import blend_tiles, check_tiling

AUTO = 'auto'


def _print_note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def say_once(report: Callable[[str], None] | None = None) -> Callable[[str], None]:
    """``report`` (default: stderr) that passes each distinct line once: a folder of photos of
    one size gets one tiling note or memory warning, not one per image."""
    report = report or _print_note
    said: set[str] = set()

    def once(line: str) -> None:
        if line not in said:
            said.add(line)
            report(line)
    return once


def _forward(model: nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    return model(batch.to(device)).clamp_(0, 1)


@torch.no_grad()
def restore(model: nn.Module, img: torch.Tensor, tile: int | str | None = AUTO,
            tile_overlap: int = 32, batch_size: int = 1, progress: bool = False,
            memory: Budget | int | None = None,
            report: Callable[[str], None] | None = None, fix: str | None = None
            ) -> torch.Tensor:
    """Restore a ``[B,3,H,W]`` batch in [0, 1]; returns the same size on the input's device.

    ``tile='auto'`` (the default) runs the batch whole if the estimated peak memory fits the
    budget (``memory``: a :class:`~utils.inference.memory.Budget` or bytes; default
    :func:`~utils.inference.memory.memory_budget`), else each image in the tiles
    :func:`~utils.inference.memory.plan_tiling` picks, saying so in one line through ``report``
    (default: stderr). ``tile=None`` runs the whole batch in one forward, after
    :func:`~utils.inference.memory.check_fits` (a warning through ``report``, or
    :class:`~utils.inference.memory.NotEnoughMemory` before a forward that cannot fit; ``fix``
    replaces the advice of those lines, default ``use --tile N``). With
    an int ``tile``, each image is cut into
    ``tile``x``tile`` tiles overlapping by ``tile_overlap`` pixels, restored ``batch_size`` tiles
    per forward on the model's device and blended on the input's device, so memory is bounded
    by the tile size (keep a large image on the CPU to bound GPU memory too). A tile at least
    as large as the image gives exactly the untiled result. The overlap is capped at half a
    tile, so small tiles work with the default overlap (scripts reject such options up front
    with :func:`check_tiling`). ``progress`` shows a bar over the tiles. The caller sets
    ``model.eval()``.
    """
    device = next(model.parameters()).device
    report = report or _print_note
    if tile == AUTO:
        budget = memory if isinstance(memory, Budget) else memory_budget(device, memory)
        h, w = img.shape[-2:]
        if img.shape[0] > 1 and estimate_forward(model, h, w, img.shape[0]) > budget.bytes:
            return torch.cat([restore(model, img[b:b + 1], AUTO, tile_overlap, batch_size,
                                      progress, budget, report)     # one at a time
                              for b in range(img.shape[0])])
        plan = plan_tiling(model, h, w, tile_overlap, batch_size, budget,
                           image_on_model_device=img.device == device)
        if plan.tile is None:
            return _forward(model, img, device).to(img.device)
        report(f'note: {plan.describe(h, w)}')
        overlap = plan.overlap
        return torch.cat([blend_tiles(lambda tiles: _forward(model, tiles, device),
                                      img[b:b + 1], plan.tile, overlap, batch_size, progress)
                          for b in range(img.shape[0])])
    if tile is None:
        warning = check_fits(model, *img.shape[-2:], batch=img.shape[0], budget=memory, fix=fix)
        if warning:
            report(f'warning: {warning}')
        return _forward(model, img, device).to(img.device)
    overlap = min(tile_overlap, tile // 2)
    check_tiling(tile, overlap)
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    warning = check_fits(model, min(tile, img.shape[-2]), min(tile, img.shape[-1]),
                         batch=batch_size, what=f'--tile {tile}',
                         fix='use a smaller --tile', budget=memory)
    if warning:
        report(f'warning: {warning}')
    return torch.cat([blend_tiles(lambda tiles: _forward(model, tiles, device), img[b:b + 1],
                                  tile, overlap, batch_size, progress)
                      for b in range(img.shape[0])])
