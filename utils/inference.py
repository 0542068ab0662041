"""Restoring images with a model: the one function test.py and training validation share.

The model itself pads to the size it needs and resets its spiking state (see
``models.base.SpikingRestorer``); this module adds device handling, no-grad, and clamping.
"""
from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def restore(model: nn.Module, img: torch.Tensor) -> torch.Tensor:
    """Restore a ``[B,3,H,W]`` batch in [0, 1]; returns the same size on the input's device."""
    device = next(model.parameters()).device
    out = model(img.to(device))
    return out.clamp_(0, 1).to(img.device)
