"""Paired image folders as a benchmark split holds them; the ``paired_folder`` fixture."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.data.image_io import write_png_atomic


def write_pairs(root: str | Path, count: int = 2, size: tuple[int, int] = (20, 24), *,
                sizes: Sequence[tuple[int, int]] | None = None,
                stems: Sequence[str] | None = None, name: str = 'im{i}', seed: int = 0,
                rain: int = 80, targets: bool = True) -> Path:
    """``root/input/STEM.png`` (rainy) and ``root/target/STEM.png`` (clean); returns ``root``.

    Image ``i`` (``count`` of them, or one per stem) is ``size`` = (height, width), or
    ``sizes[i]``, and named ``stems[i]`` or ``name.format(i=i)``. One generator seeded with
    ``seed`` draws, image after image, the clean image (uniform uint8) and then the rain on it
    (uniform in [0, ``rain``), added and clipped). ``targets=False`` writes input/ alone, like a
    real-rain benchmark without ground truth.
    """
    root = Path(root)
    stems = list(stems) if stems is not None else [name.format(i=i) for i in range(count)]
    sizes = list(sizes) if sizes is not None else [tuple(size)] * len(stems)
    if len(sizes) != len(stems):
        raise ValueError(f'{len(sizes)} sizes for {len(stems)} images')
    rng = np.random.default_rng(seed)
    for stem, (h, w) in zip(stems, sizes):
        clean = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        rainy = np.clip(clean.astype(int) + rng.integers(0, rain, clean.shape), 0, 255)
        if targets:
            write_png_atomic(root / 'target' / f'{stem}.png', clean)
        write_png_atomic(root / 'input' / f'{stem}.png', rainy.astype(np.uint8))
    return root
