"""Shared test fixtures. Tests run on the CPU with 1 thread, in float32.

The suite pins itself to the CPU: CUDA is hidden before torch is imported (here and, through the
environment, in every subprocess a test starts), so ``--device auto`` means the CPU even on a GPU
machine, where the bit-identical resume and golden tests could not hold. GPU checks are separate
(``tools/gpu_check.py``).

Fixtures (implemented in tests/support/, which also holds the helpers that are not fixtures):

* ``paired_folder(root, count=2, size=(h, w), ...)`` writes a benchmark split, ``input/`` +
  ``target/`` PNGs (:func:`support.images.write_pairs`);
* ``tiny_weights(name='spikerain-tiny', seed=0, **overrides)``: a weights file of a tiny model,
  saved once per session (:class:`support.weights.TinyWeights`);
* ``golden(name)``: tests/fixtures/NAME.pt.xz as fresh tensors, ``golden.stats()`` the official
  counts (:class:`support.golden.Golden`);
* ``cli(script, *args, cwd=, env=, timeout=)``: ``python ROOT/SCRIPT ARGS`` in a subprocess with
  one OpenMP thread, as ``(code, stdout, stderr)`` (:func:`support.cli.run_cli`).
"""
import os

os.environ['CUDA_VISIBLE_DEVICES'] = ''          # before torch is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.register_assert_rewrite('support')

from support.cli import run_cli  # noqa: E402
from support.golden import Golden  # noqa: E402
from support.images import write_pairs  # noqa: E402
from support.weights import TinyWeights  # noqa: E402

# One thread: the suite's cost is many small ops, and subprocess tests (torchrun, CLIs) run
# beside this process; several multi-threaded torch processes on 2 cores slow each other down
# by orders of magnitude (OpenMP oversubscription).
torch.set_num_threads(1)
os.environ.setdefault('OMP_NUM_THREADS', '1')


@pytest.fixture(scope='session')
def paired_folder():
    """Factory: ``paired_folder(root, count=2, size=(20, 24), *, sizes=, stems=, name='im{i}',
    seed=0, rain=80, targets=True)`` writes ``root/input/`` (rainy) and ``root/target/`` (clean)
    PNGs with ``write_png_atomic`` and returns ``root``."""
    return write_pairs


@pytest.fixture(scope='session')
def tiny_weights(tmp_path_factory):
    """Factory: ``tiny_weights(name='spikerain-tiny', seed=0, **overrides)`` -> the path of
    ``build_model(name, **overrides)``'s weights after ``torch.manual_seed(seed)``, saved once per
    session. Shared: copy it before changing it."""
    return TinyWeights(tmp_path_factory.mktemp('tiny_weights'))


@pytest.fixture(scope='session')
def tiny_export(tiny_weights):
    """``tiny_export(name)`` -> ``(model, the bytes of its ONNX export)`` for the tiny model's
    ``tiny_weights(name)``, exported once per session (models/export.py). Shared: read only."""
    from models import build_from_checkpoint
    from models.export import onnx_bytes
    cache = {}

    def get(name):
        if name not in cache:
            model = build_from_checkpoint(tiny_weights(name)).eval()
            cache[name] = model, onnx_bytes(model, weights_sha256='0' * 64)
        return cache[name]
    return get


@pytest.fixture(scope='session')
def golden():
    """``golden(name)``: tests/fixtures/NAME.pt.xz as a dict of fresh tensors; ``golden.stats()``:
    parameter and FLOP counts of the official full-size configs."""
    return Golden()


@pytest.fixture(scope='session')
def cli():
    """``cli(script, *args, cwd=ROOT, env=None, timeout=600)``: run ROOT/SCRIPT (``'test.py'``,
    ``'tools/complexity.py'``) as a subprocess with OMP_NUM_THREADS=1; returns
    ``(code, stdout, stderr)`` (a named tuple)."""
    return run_cli
