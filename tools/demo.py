"""The README's main command: a short end-to-end run on the CPU.

For now this is a self-check: build every registered model, restore one image with each,
and print parameters, output shape and time.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import available_models, build_model  # noqa: E402


def main() -> int:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 37, 53)
    print(f'{"model":<16}{"params":>12}{"output":>18}{"seconds":>10}')
    for name in available_models():
        model = build_model(name).eval()
        n = sum(p.numel() for p in model.parameters())
        t0 = time.perf_counter()
        with torch.no_grad():
            y = model(x)
        dt = time.perf_counter() - t0
        ok = y.shape == x.shape and torch.isfinite(y).all()
        print(f'{name:<16}{n:>12,}{str(list(y.shape)):>18}{dt:>10.2f}{"" if ok else "  FAILED"}')
        if not ok:
            return 1
    print('self-check passed: every model restores a 3x37x53 image on the CPU')
    return 0


if __name__ == '__main__':
    sys.exit(main())
