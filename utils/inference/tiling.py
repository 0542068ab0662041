"""Tiled inference: cut an image into overlapping tiles, run each, blend them back seamlessly.

Tiling bounds memory for large images: each tile is an independent forward, tiles overlap, and
the overlaps are blended with smooth weights (a partition of unity) so that no seam shows.
``utils.inference.restore.restore(model, img, tile=N)`` is the usual way in.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm import tqdm


def check_tiling(tile: int | None, tile_overlap: int) -> None:
    """Reject tiling options that cannot work, with a message naming the option."""
    if tile is None:
        return
    if tile < 8:
        raise ValueError(f'--tile {tile}: tiles must be at least 8 pixels')
    if tile_overlap < 0 or tile_overlap >= tile:
        raise ValueError(f'--tile_overlap {tile_overlap}: must be >= 0 and smaller than '
                         f'--tile ({tile})')


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``length``: stride ``tile - overlap``, last one flush."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _ramp_1d(size: int, overlap: int, rise: bool, fall: bool) -> torch.Tensor:
    """Weights along one side of a tile: 1 inside, sin^2 ramps where a neighbour overlaps.

    The ramps are strictly positive and a rising ramp plus the falling ramp of the neighbour
    sums to 1 over an overlap of exactly ``overlap`` pixels, so blending is a partition of unity
    (the accumulated weights are still normalised, for the last, flush tile).
    """
    w = torch.ones(size)
    r = min(overlap, size // 2)
    if r > 0:
        ramp = torch.sin(0.5 * math.pi * (torch.arange(r) + 0.5) / r) ** 2
        if rise:
            w[:r] = ramp
        if fall:
            w[size - r:] = ramp.flip(0)
    return w


def _tile_weight(y: int, x: int, th: int, tw: int, h: int, w: int, overlap: int) -> torch.Tensor:
    wy = _ramp_1d(th, overlap, rise=y > 0, fall=y + th < h)
    wx = _ramp_1d(tw, overlap, rise=x > 0, fall=x + tw < w)
    return wy[:, None] * wx[None, :]


def blend_tiles(forward: Callable[[torch.Tensor], torch.Tensor], img: torch.Tensor,
                tile: int | tuple[int, int], overlap: int, batch_size: int = 1,
                progress: bool = False) -> torch.Tensor:
    """``forward`` applied to one ``[1,C,H,W]`` image tile by tile, the overlaps blended.

    ``tile`` is a side, or ``(height, width)`` (automatic tiling picks rectangles that cover
    the image evenly).

    ``forward`` maps a batch of up to ``batch_size`` tiles to outputs of the same size (on any
    device); the output and the weight buffers live on the image's device, so memory is
    bounded by the tile size. The caller checks the options (:func:`check_tiling`).
    """
    _, c, h, w = img.shape
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    th, tw = min(th, h), min(tw, w)
    coords = [(y, x) for y in tile_starts(h, th, overlap) for x in tile_starts(w, tw, overlap)]
    out = torch.zeros(1, c, h, w, dtype=img.dtype, device=img.device)
    weight = torch.zeros(1, 1, h, w, dtype=img.dtype, device=img.device)
    for i in tqdm(range(0, len(coords), batch_size), desc='tiles', unit='batch', leave=False,
                  disable=not progress or len(coords) <= batch_size):
        chunk = coords[i:i + batch_size]
        tiles = torch.cat([img[..., y:y + th, x:x + tw] for y, x in chunk])
        pred = forward(tiles).to(img.device, img.dtype)
        for k, (y, x) in enumerate(chunk):
            wt = _tile_weight(y, x, th, tw, h, w, overlap).to(img.device, img.dtype)
            out[..., y:y + th, x:x + tw] += pred[k:k + 1] * wt
            weight[..., y:y + th, x:x + tw] += wt
    return out.div_(weight)
