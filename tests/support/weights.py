"""Tiny model weights saved once per test session; the ``tiny_weights`` fixture."""
from __future__ import annotations

from pathlib import Path

import torch

from models import build_model, save_weights


class TinyWeights:
    """``tiny_weights(NAME='spikerain-tiny', seed=0, **overrides)``: the path of a weights file
    of ``build_model(NAME, **overrides)`` initialised after ``torch.manual_seed(seed)``, saved
    with ``save_weights`` the first time it is asked for and shared afterwards.

    The file is shared by every test of the session: read it, pass it to a script, or copy it;
    never change it. Saving leaves the global torch RNG as it was.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._paths: dict[tuple, Path] = {}

    def __call__(self, name: str = 'spikerain-tiny', seed: int = 0, **overrides) -> Path:
        key = (name, seed, tuple(sorted(overrides.items())))
        if key not in self._paths:
            extra = ''.join(f'_{k}-{v}' for k, v in key[2])
            path = self.folder / f'{name}_seed{seed}{extra}.pth'
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                save_weights(build_model(name, **overrides), path)
            self._paths[key] = path
        return self._paths[key]
