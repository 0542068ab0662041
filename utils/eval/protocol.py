"""Scoring a model on paired images: what train.py validates with and test.py reports.

Both follow the published protocol (Y channel of the uint8 images, no border crop), through one
function, :func:`score_pair`, so a validation PSNR in TensorBoard and ``test.py --target_path``'s
PSNR for the same weights and images are the same number.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from utils.data.image_io import NonFiniteImageError, tensor_to_uint8
from utils.inference.restore import restore, say_once
from utils.eval.metrics import calculate_psnr, calculate_ssim

# A validation whose forward would not fit says so once per process, not at every validation.
_warn_once = say_once()


def score_pair(restored: np.ndarray, target: np.ndarray) -> dict:
    """PSNR and SSIM of two HxWx3 uint8 images by the published protocol (Y channel, no crop).

    Raises ``ValueError`` (naming the shapes) when the images cannot be compared.
    """
    return dict(psnr=calculate_psnr(restored, target, crop_border=0, test_y=True),
                ssim=calculate_ssim(restored, target, crop_border=0, test_y=True))


def _same_size_runs(dataset, indices: Iterable[int], batch_size: int):
    """Consecutive items of one image size, at most ``batch_size`` at a time (validation images
    come in any size; a batch needs one)."""
    run: list = []
    for i in indices:
        item = (i, *dataset[i])
        if run and (len(run) == batch_size or run[0][1].shape != item[1].shape):
            yield run
            run = []
        run.append(item)
    if run:
        yield run


@torch.no_grad()
def score_dataset(net: nn.Module, dataset, device: torch.device, indices: Iterable[int],
                tile: int | None = None, on_image: Callable[..., None] | None = None,
                batch_size: int = 1) -> list[float]:
    """Restore ``dataset[i]`` (input, target, stem) for each index and score it.

    Returns ``[sum of PSNR, sum of SSIM, count]`` (sums, so processes can add theirs up).
    Consecutive images of one size are restored ``batch_size`` at a time (one forward: what
    keeps a GPU busy; the scores are those of one image at a time up to float rounding).
    ``on_image(i, stem, input, restored, target, scores)`` runs after each image (TensorBoard
    strips, firing rates). A non-finite output raises
    :class:`utils.data.image_io.NonFiniteImageError` (``'STEM (what)'``); an image that cannot be
    scored raises ``ValueError`` naming its stem.
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    sums = [0.0, 0.0, 0.0]
    for run in _same_size_runs(dataset, indices, batch_size):
        batch = torch.stack([inp for _, inp, _, _ in run]).to(device)
        outs = restore(net, batch, tile=tile, report=_warn_once,
                       fix='validate in tiles (train.py --val_tile N)')
        for (i, inp, tgt, stem), out in zip(run, outs):
            out = out[None]
            try:
                pred_u8 = tensor_to_uint8(out)
            except NonFiniteImageError as err:
                raise NonFiniteImageError(f'{stem} ({err})') from None
            try:
                scores = score_pair(pred_u8, tensor_to_uint8(tgt))
            except ValueError as err:
                raise ValueError(f'image {stem}: {err}') from None
            sums = [sums[0] + scores['psnr'], sums[1] + scores['ssim'], sums[2] + 1]
            if on_image is not None:
                on_image(i, stem, inp, out, tgt, scores)
    return sums
