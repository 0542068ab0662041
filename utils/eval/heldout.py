"""Held-out deraining check: does a model remove rain from unseen photos and leave clean ones alone?

From a folder of clean photos (never used for training) it makes, for every photo, one image per
rain kind (``light``, ``heavy``, ``random``, or any kind of :mod:`utils.data.rain`, such as a
held-out family at its ``:light``/``:heavy`` level) plus the clean photo itself, restores each
with the model and scores input and output against the clean photo (Y-PSNR, the published
protocol). The report is what the shipped weights are judged by: mean gain per kind, the worst
light-rain image, and the PSNR of a restored clean image. Pure functions of (photos, seed), so
runs compare.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils.data.image_io import (list_images, read_image_rgb, resize_longest, tensor_to_uint8,
                                 uint8_to_tensor)
from utils.inference.restore import restore, say_once
from utils.eval.metrics import calculate_psnr
from utils.data.rain import RAIN_KINDS, make_rain_pair
from utils.eval.protocol import score_pair

KINDS = ('light', 'heavy', 'random', 'clean')
ALL_KINDS = (*RAIN_KINDS, 'clean')


def family_kinds(family: str) -> tuple[str, ...]:
    """What a held-out family is judged on: its light and heavy levels."""
    return f'{family}:light', f'{family}:heavy'


def heldout_pairs(photos: list[tuple[str, np.ndarray]], kinds=KINDS, seed: int = 0
                  ) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(name, kind, input, target)`` for every photo and kind (``clean``: input = target =
    the photo; a family's target is the photo through that sample's camera)."""
    out = []
    for name, clean in photos:
        photo_id = zlib.crc32(name.encode())
        for k, kind in enumerate(kinds):
            if kind == 'clean':
                out.append((name, kind, clean, clean))
            else:
                out.append((name, kind, *make_rain_pair(clean, kind, [seed, photo_id, k])))
    return out


class HeldoutPairSet(torch.utils.data.Dataset):
    """Pairs made in memory from clean photos, as validation images: ``(input [3,H,W],
    target [3,H,W], 'NAME_KIND')`` (what :class:`utils.data.datasets.PairedImageDataset` gives)."""

    def __init__(self, folder: str | Path, kinds, size: int = 192, seed: int = 1):
        photos = load_photos(folder, size)
        if not photos:
            raise ValueError(f'{folder}: no images')
        self.pairs = heldout_pairs(photos, tuple(kinds), seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        name, kind, inp, target = self.pairs[index]
        return uint8_to_tensor(inp)[0], uint8_to_tensor(target)[0], f'{name}_{kind}'


def load_photos(folder: str | Path, size: int = 256, limit: int | None = None
                ) -> list[tuple[str, np.ndarray]]:
    """The folder's photos, shrunk to ``size`` on the longest side, sorted by name."""
    files = list_images(folder)[:limit]
    return [(p.stem, resize_longest(read_image_rgb(p), size)) for p in files]


@dataclass
class HeldoutReport:
    """Per-image rows and per-kind summaries of one model on one held-out set."""
    rows: list[dict] = field(default_factory=list)

    def kind_summary(self, kind: str) -> dict:
        rows = [r for r in self.rows if r['kind'] == kind]
        if not rows:
            return {}
        gains = [r['restored_psnr'] - r['input_psnr'] for r in rows]
        return dict(kind=kind, images=len(rows),
                    input_psnr=float(np.mean([r['input_psnr'] for r in rows])),
                    restored_psnr=float(np.mean([r['restored_psnr'] for r in rows])),
                    restored_ssim=float(np.mean([r['restored_ssim'] for r in rows])),
                    gain=float(np.mean(gains)), worst_gain=float(min(gains)),
                    min_restored_psnr=float(min(r['restored_psnr'] for r in rows)))

    def summaries(self) -> list[dict]:
        kinds = dict.fromkeys(r['kind'] for r in self.rows)
        return [self.kind_summary(k) for k in kinds]

    def table(self) -> str:
        lines = ['| rain | images | input Y-PSNR | restored Y-PSNR | gain (dB) | worst gain | '
                 'lowest restored | restored SSIM |', '|---|---|---|---|---|---|---|---|']
        for s in self.summaries():
            inp = 'inf (clean)' if s['kind'] == 'clean' else f'{s["input_psnr"]:.2f}'
            gain = '—' if s['kind'] == 'clean' else f'{s["gain"]:+.2f}'
            worst = '—' if s['kind'] == 'clean' else f'{s["worst_gain"]:+.2f}'
            lines.append(f'| {s["kind"]} | {s["images"]} | {inp} | {s["restored_psnr"]:.2f} | '
                         f'{gain} | {worst} | {s["min_restored_psnr"]:.2f} | '
                         f'{s["restored_ssim"]:.4f} |')
        return '\n'.join(lines)


PSNR_CAP = 100.0   # a restored image identical to its target would otherwise score inf


@torch.no_grad()
def judge_model(model: torch.nn.Module, pairs, device: torch.device | str = 'cpu',
                progress=None) -> HeldoutReport:
    """Restore every pair's input with ``model`` (eval mode) and score input and output."""
    model.eval()
    report = HeldoutReport()
    warn = say_once()                    # the memory warning before a forward, once per size
    for name, kind, inp, target in (progress(pairs) if progress else pairs):
        out = restore(model, uint8_to_tensor(inp).to(device), tile=None,   # scored: whole
                      fix='use a smaller --size', report=warn)
        scores = score_pair(tensor_to_uint8(out), target)      # the same rule as validation
        input_psnr = min(calculate_psnr(inp, target), PSNR_CAP)
        report.rows.append(dict(name=name, kind=kind, input_psnr=input_psnr,
                                restored_psnr=min(scores['psnr'], PSNR_CAP),
                                restored_ssim=scores['ssim']))
    return report
