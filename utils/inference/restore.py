"""Restoring a batch with a model: the one function test.py, validation and held-out checks share.

The model itself pads to the size it needs and resets its spiking state around every forward
(see ``models.base.SpikingRestorer``); :func:`restore` adds device handling, no-grad, clamping
and, optionally, tiled inference (the tiles and their blending are in
:mod:`utils.inference.tiling`).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from utils.inference.tiling import blend_tiles, check_tiling


def _forward(model: nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    return model(batch.to(device)).clamp_(0, 1)


@torch.no_grad()
def restore(model: nn.Module, img: torch.Tensor, tile: int | None = None, tile_overlap: int = 32,
            batch_size: int = 1, progress: bool = False) -> torch.Tensor:
    """Restore a ``[B,3,H,W]`` batch in [0, 1]; returns the same size on the input's device.

    ``tile=None`` runs the whole batch in one forward. With ``tile``, each image is cut into
    ``tile``x``tile`` tiles overlapping by ``tile_overlap`` pixels, restored ``batch_size`` tiles
    per forward on the model's device and blended on the input's device, so memory is bounded
    by the tile size (keep a large image on the CPU to bound GPU memory too). A tile at least
    as large as the image gives exactly the untiled result. The overlap is capped at half a
    tile, so small tiles work with the default overlap (scripts reject such options up front
    with :func:`check_tiling`). ``progress`` shows a bar over the tiles. The caller sets
    ``model.eval()``.
    """
    device = next(model.parameters()).device
    if tile is None:
        return _forward(model, img, device).to(img.device)
    overlap = min(tile_overlap, tile // 2)
    check_tiling(tile, overlap)
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    return torch.cat([blend_tiles(lambda tiles: _forward(model, tiles, device), img[b:b + 1],
                                  tile, overlap, batch_size, progress)
                      for b in range(img.shape[0])])
