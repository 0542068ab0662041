"""The ONNX export (models/export.py) run by ONNX Runtime (models/onnx_runtime.py): standard
ops only, opset >= 17, BN folded, and the output of one exported file at two image sizes within
50 dB PSNR of the exact torch path, for each model family (tiny configs)."""
import pytest
import torch

from models import build_from_checkpoint
from models.export import OPSET, graph_summary
from models.onnx_runtime import (OnnxError, OnnxRestorer, cached_export, compare_with_torch,
                                 psnr)

# Two sizes through one file (dynamic H and W); neither is a multiple of 8, so both are padded.
SIZES = ((37, 50), (60, 44))
FAMILIES = ['spikerain-tiny',
            pytest.param('esdnet-tiny', marks=pytest.mark.slow),
            pytest.param('vlif-net-tiny', marks=pytest.mark.slow)]


def _images():
    gen = torch.Generator().manual_seed(3)
    return [torch.rand(1, 3, h, w, generator=gen) for h, w in SIZES]


@pytest.fixture(scope='module')
def exported(tiny_export):
    """name -> (model, the bytes of its export), exported once per session."""
    return tiny_export


@pytest.mark.parametrize('name', FAMILIES)
def test_export_round_trips_at_two_sizes(exported, name):
    model, data = exported(name)
    graph = graph_summary(data)
    assert graph['opset'] >= 17 and OPSET >= 17
    assert graph['domains'] == [''], f'custom-domain ops: {graph["domains"]}'
    runtime = OnnxRestorer(data, model, threads=1)
    images = _images()
    scores = compare_with_torch(model, runtime, images)
    assert min(scores) >= 50, scores
    with torch.no_grad():
        out = runtime(images[1])
    assert out.shape == images[1].shape


def test_batchnorm_is_folded_and_no_neuron_op_is_custom(exported):
    import onnx
    _, data = exported('spikerain-tiny')
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert 'BatchNormalization' not in ops
    assert 'GreaterOrEqual' in ops          # the LIF's threshold, as a standard op


def test_a_batch_runs_image_by_image(exported):
    model, data = exported('spikerain-tiny')
    runtime = OnnxRestorer(data, model, threads=1)
    batch = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = runtime(batch)
        second = runtime(batch[1:])
    assert torch.equal(out[1:], second)
    assert psnr(out[:1], runtime(batch[:1])) == float('inf')


def test_missing_and_corrupt_files_are_one_line(tmp_path, exported):
    model, data = exported('spikerain-tiny')
    with pytest.raises(OnnxError, match='not found'):
        OnnxRestorer(tmp_path / 'none.onnx', model)
    bad = tmp_path / 'cut.onnx'
    bad.write_bytes(data[:len(data) // 3])
    with pytest.raises(OnnxError, match='not a loadable ONNX model') as err:
        OnnxRestorer(bad, model)
    assert '\n' not in str(err.value)


def test_another_models_or_weights_export_is_refused(tmp_path, exported, tiny_weights):
    model, data = exported('spikerain-tiny')
    path = tmp_path / 'm.onnx'
    path.write_bytes(data)
    other = build_from_checkpoint(tiny_weights('spikerain-tiny', dim=32)).eval()
    with pytest.raises(OnnxError, match='not of spikerain-tiny'):
        OnnxRestorer(path, other)
    with pytest.raises(OnnxError, match='other weights'):
        OnnxRestorer(path, model, weights_sha256='f' * 64)
    OnnxRestorer(path, model, weights_sha256='0' * 64)          # its own weights load


@pytest.mark.slow          # three exports
def test_cache_exports_once_and_replaces_a_damaged_file(tmp_path, tiny_weights):
    model = build_from_checkpoint(tiny_weights('spikerain-tiny')).eval()
    said = []
    first = cached_export(model, 'a' * 64, tmp_path, threads=1, report=said.append)
    again = cached_export(model, 'a' * 64, tmp_path, threads=1, report=said.append)
    assert first.path == again.path and len(said) == 1
    first.path.write_bytes(b'not onnx')
    cached_export(model, 'a' * 64, tmp_path, threads=1, report=said.append)
    assert len(said) == 2 and first.path.stat().st_size > 1000
    other = cached_export(model, 'b' * 64, tmp_path, threads=1)   # other weights, other file
    assert other.path != first.path


OPENVINO_CHILD = """
import json, sys, torch
from models import build_from_checkpoint
from models.export import onnx_bytes
from models.onnx_runtime import OnnxRestorer, compare_with_torch
model = build_from_checkpoint(sys.argv[1]).eval()
data = onnx_bytes(model, weights_sha256='0' * 64)
gen = torch.Generator().manual_seed(3)
images = [torch.rand(1, 3, h, w, generator=gen) for h, w in ((37, 50), (60, 44))]
fp32 = min(compare_with_torch(model, OnnxRestorer(data, model, threads=1, runtime='openvino'),
                              images))
bf16 = OnnxRestorer(data, model, threads=1, runtime='openvino', precision='bf16')
with torch.no_grad():
    out = bf16(images[0])
print(json.dumps(dict(fp32=fp32, shape=list(out.shape), finite=bool(torch.isfinite(out).all()))))
"""


def test_openvino_runs_the_same_file(exported, tiny_weights):
    """OpenVINO in a child process: its thread pool (TBB) left in the test process made a later
    fork of that process crash (seen 2026-12-06), and test.py runs it in its own process anyway."""
    import json
    import subprocess
    import sys

    from support import ROOT
    weights = str(tiny_weights('spikerain-tiny'))
    done = subprocess.run([sys.executable, '-c', OPENVINO_CHILD, weights], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got['fp32'] >= 50 and got['shape'] == [1, 3, 37, 50] and got['finite']
    model, data = exported('spikerain-tiny')
    with pytest.raises(OnnxError, match='onnxruntime backend runs fp32'):
        OnnxRestorer(data, model, runtime='onnxruntime', precision='bf16')


@pytest.mark.parametrize('lean', [True, False])
def test_export_lif_gives_spikingjellys_spikes_bit_for_bit(lean):
    """The LIF's export twin, in its lean form (the papers' neuron: reset to 0, tau 2) and in
    the general formulas, fires exactly where spikingjelly's multi-step LIF does, every T,
    inputs over four decades."""
    from models.export import ExportLIF
    from models.spiking import make_lif
    gen = torch.Generator().manual_seed(0)
    for steps in (1, 2, 4, 6):
        x = torch.randn(steps, 2, 8, 33, 29, generator=gen) * torch.logspace(-3, 1, 29)
        lif = make_lif()
        twin = ExportLIF(lif)
        assert twin.lean
        twin.lean = lean
        assert torch.equal(twin(x), lif(x)), steps
        lif.reset()
    assert not ExportLIF(make_lif(tau=3.0)).lean and not ExportLIF(make_lif(v_reset=None)).lean
