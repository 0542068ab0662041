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

from utils.image_io import NonFiniteImageError, tensor_to_uint8
from utils.inference import restore
from utils.metrics import calculate_psnr, calculate_ssim


def score_pair(restored: np.ndarray, target: np.ndarray) -> dict:
    """PSNR and SSIM of two HxWx3 uint8 images by the published protocol (Y channel, no crop).

    Raises ``ValueError`` (naming the shapes) when the images cannot be compared.
    """
    return dict(psnr=calculate_psnr(restored, target, crop_border=0, test_y=True),
                ssim=calculate_ssim(restored, target, crop_border=0, test_y=True))


@torch.no_grad()
def score_model(net: nn.Module, dataset, device: torch.device, indices: Iterable[int],
                tile: int | None = None,
                on_image: Callable[..., None] | None = None
                ) -> list[float]:
    """Restore ``dataset[i]`` (input, target, stem) for each index and score it.

    Returns ``[sum of PSNR, sum of SSIM, count]`` (sums, so processes can add theirs up).
    ``on_image(i, stem, input, restored, target, scores)`` runs after each image (TensorBoard
    strips, firing rates). A non-finite output raises :class:`utils.image_io.NonFiniteImageError`
    (``'STEM (what)'``); an
    image that cannot be scored raises ``ValueError`` naming its stem.
    """
    sums = [0.0, 0.0, 0.0]
    for i in indices:
        inp, tgt, stem = dataset[i]
        out = restore(net, inp[None].to(device), tile=tile)
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
