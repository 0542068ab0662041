"""The golden tensors and counts of the official implementations (tests/fixtures/README.md);
the ``golden`` fixture of tests/conftest.py."""
from __future__ import annotations

import functools
import io
import json
import lzma
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures'


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


class Golden:
    """``golden(NAME)``: tests/fixtures/NAME.pt.xz as fresh tensors (:func:`load_reference`);
    ``golden.stats()``: the official configs' counts (:func:`official_stats`)."""

    def __call__(self, name: str) -> dict:
        return load_reference(name)

    @staticmethod
    def stats() -> dict:
        return official_stats()
