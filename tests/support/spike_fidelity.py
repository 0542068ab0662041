"""Shared measurements for the tests of paths that change rounding (fast, bf16): how many spikes
agree with the reference path, and how far the restored images move."""
import copy

import numpy as np
import skimage.data
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.acceleration import enable_fast_training, record_spikes
from utils.eval.heldout import heldout_pairs
from utils.data.image_io import resize_longest, tensor_to_uint8, uint8_to_tensor
from utils.eval.metrics import calculate_psnr


def unseen_rainy_photos(size: int = 64) -> list:
    """(rainy tensor, clean uint8) of scikit-image's coffee and rocket (never trained on) under
    the light and heavy presets."""
    photos = [(n, resize_longest(getattr(skimage.data, n)(), size)) for n in ('coffee', 'rocket')]
    return [(uint8_to_tensor(rainy), clean)
            for _, _, rainy, clean in heldout_pairs(photos, ('light', 'heavy'), seed=0)]


def spike_fidelity(reference: nn.Module, candidate: nn.Module, pairs) -> dict:
    """Over (rainy, clean) pairs: ``worst`` per-layer spike agreement, ``mean`` agreement over
    all spikes, restored-image PSNR differences ``gaps`` (dB) and the largest output change
    ``moved``."""
    worst, same, total, gaps, moved = 1.0, 0, 0, [], 0.0
    for rainy, clean in pairs:
        with torch.no_grad():
            ref_spikes, ref_out = record_spikes(reference, rainy)
            got_spikes, got_out = record_spikes(candidate, rainy)
        assert set(ref_spikes) == set(got_spikes)
        for name, s in ref_spikes.items():
            equal = s == got_spikes[name]
            worst = min(worst, equal.float().mean().item())
            same, total = same + int(equal.sum()), total + equal.numel()
        moved = max(moved, (got_out - ref_out).abs().max().item())
        target = clean if isinstance(clean, np.ndarray) else tensor_to_uint8(clean)
        gaps.append(calculate_psnr(tensor_to_uint8(got_out.clamp(0, 1)), target)
                    - calculate_psnr(tensor_to_uint8(ref_out.clamp(0, 1)), target))
    return dict(worst=worst, mean=same / total, gaps=gaps, moved=moved)


def plain_vs_fast_training(model: nn.Module, rainy: torch.Tensor, target: torch.Tensor) -> dict:
    """One L1 training step of copies of ``model`` on the plain and the fast training path:
    per-layer spike ``agreement``, gradient ``cosine``, and the two paths' ``buffers``
    (BatchNorm statistics after the step)."""
    grads, spikes, buffers = [], [], []
    for fast in (False, True):
        m = copy.deepcopy(model).train()
        if fast:
            enable_fast_training(m)
        s, out = record_spikes(m, rainy)
        F.l1_loss(out, target).backward()
        spikes.append(s)
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
        buffers.append(torch.cat([b.float().flatten() for b in m.buffers()]))
    return dict(agreement={name: (s == spikes[1][name]).float().mean().item()
                           for name, s in spikes[0].items()},
                cosine=F.cosine_similarity(grads[0], grads[1], dim=0).item(),
                buffers=buffers)
