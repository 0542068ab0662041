"""Shared test fixtures. Tests run on the CPU with 1 thread, in float32.

The suite pins itself to the CPU: CUDA is hidden before torch is imported (here and, through the
environment, in every subprocess a test starts), so ``--device auto`` means the CPU even on a GPU
machine, where the bit-identical resume and golden tests could not hold. GPU checks are separate
(``tools/gpu_check.py``).
"""
import os

os.environ['CUDA_VISIBLE_DEVICES'] = ''          # before torch is imported anywhere

import functools  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import lzma  # noqa: E402
from pathlib import Path

import pytest
import torch

# The repository root. pytest puts it first on sys.path (pythonpath in pyproject.toml), so tests
# import the top-level scripts (train.py, test.py, ...) and this tree's models/ and utils/.
ROOT = Path(__file__).resolve().parents[1]

# Golden tensors of the official implementations (tests/fixtures/README.md).
FIXTURES = Path(__file__).resolve().parent / 'fixtures'

# One thread: the suite's cost is many small ops, and subprocess tests (torchrun, CLIs) run
# beside this process; several multi-threaded torch processes on 2 cores slow each other down
# by orders of magnitude (OpenMP oversubscription).
torch.set_num_threads(1)
os.environ.setdefault('OMP_NUM_THREADS', '1')


def _fixture_path(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():              # a missing golden file fails the test: never skip
        pytest.fail(f'golden fixture not found: {path}')
    return path


@functools.cache
def _fixture_bytes(name: str) -> bytes:
    return lzma.decompress(_fixture_path(name).read_bytes())


def load_reference(name: str) -> dict:
    """tests/fixtures/NAME.pt.xz as a dict of fresh tensors.

    The surrogate gradients are stored as int16 with a per-tensor scale; they come back as float32
    under ``grads_train`` (within absmax/65534 of the official float32 values).
    """
    ref = torch.load(io.BytesIO(_fixture_bytes(f'{name}.pt.xz')), map_location='cpu',
                     weights_only=True)
    if 'grads_train_int16' in ref:
        scales = ref.pop('grads_train_scale')
        ref['grads_train'] = {k: q.float() * scales[k]
                              for k, q in ref.pop('grads_train_int16').items()}
    return ref


def official_stats() -> dict:
    """Parameter and FLOP counts of the official full-size configs, by model
    (``spikerain_s``, ``spikerain_m``, ``spikerain_l``, ``esdnet``)."""
    return json.loads(_fixture_path('model_stats.json').read_text())['models']
