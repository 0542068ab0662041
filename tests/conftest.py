"""Shared test fixtures. Tests run on the CPU with 2 threads, in float32."""
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get('SPIKEDERAIN_SHARED', ROOT.parent / 'shared'))
REFERENCE = SHARED / 'reference'

# One thread: the suite's cost is many small ops, and subprocess tests (torchrun, CLIs) run
# beside this process; several multi-threaded torch processes on 2 cores slow each other down
# by orders of magnitude (OpenMP oversubscription).
torch.set_num_threads(1)
os.environ.setdefault('OMP_NUM_THREADS', '1')


@pytest.fixture(scope='session')
def reference_dir() -> Path:
    """../shared/reference; a missing folder fails the test (it must not be skipped)."""
    if not REFERENCE.is_dir():
        pytest.fail(f'golden reference folder not found: {REFERENCE}')
    return REFERENCE


def load_reference(name: str) -> dict:
    path = REFERENCE / f'{name}.pt'
    if not path.is_file():
        pytest.fail(f'golden reference file not found: {path}')
    return torch.load(path, map_location='cpu', weights_only=True)
