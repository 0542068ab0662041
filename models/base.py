"""The forward every model shares: any input size, and no spiking state carried between calls."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .spiking import reset_spiking_state


def pad_to_multiple(img: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad H and W at the bottom/right up to a multiple (reflect; replicate for tiny images)."""
    h, w = img.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return img
    mode = 'reflect' if (ph < h and pw < w) else 'replicate'
    return F.pad(img, (0, pw, 0, ph), mode=mode)


class SpikingRestorer(nn.Module):
    """Base class of the derainers: ``forward(img [B,C,H,W]) -> [B,C,H,W]`` for any H, W.

    Subclasses implement :meth:`forward_padded` on inputs whose sides are multiples of
    ``size_multiple``. This wrapper pads, resets every neuron before and after the call (so the
    same input always gives the same output), and crops back to the input's size.
    ``models.acceleration`` can set ``fast_path`` to run a faster equivalent instead.

    Every model provides the attributes declared below (tests/models/test_model_contract.py checks
    them for each registered name), so scripts and tools never need to know the class.
    """

    # Set by models.build_model: the registry name and the full constructor kwargs (plus
    # ``neuron: relu`` for an ANN twin), saved with the weights so a checkpoint rebuilds its
    # model. Absent on a model constructed directly rather than through build_model.
    model_name: str
    config: dict
    # Set by the constructor: time steps of the spiking forward, and channels of the input.
    T: int
    in_channels: int = 3
    # Input sides are padded up to a multiple of this (the U-Net's total downsampling).
    size_multiple: int = 4
    # Set by models.acceleration: a callable (model, padded image) -> output used instead of
    # forward_padded. None means the plain reference forward.
    fast_path = None
    # A model joins the fast path by defining ``fast_forward(self, img, run) -> output``: the
    # computation of forward_padded built from its blocks' ``fast_forward(x, run)`` and ``run``'s
    # primitives (a models.acceleration.FastRunner: fused neurons, convs/BNs in the chosen layout
    # and precision). None: no fast path.
    fast_forward = None
    # True where the T steps only repeat the image, so an ANN twin (ReLU instead of spikes)
    # computes T equal copies and is built with T = 1 (see models.build_model, neuron='relu').
    ann_single_step: bool = False

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() != 4 or img.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects images shaped '
                             f'[B,{self.in_channels},H,W], '
                             f'got {list(img.shape)}')
        h, w = img.shape[-2:]
        x = pad_to_multiple(img, self.size_multiple)
        reset_spiking_state(self)
        try:
            out = self.forward_padded(x) if self.fast_path is None else self.fast_path(self, x)
        finally:
            reset_spiking_state(self)
        return out[..., :h, :w]
