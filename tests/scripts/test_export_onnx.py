"""tools/export_onnx.py: writes a checked .onnx, or nothing and one line; tools/onnx_benchmark.py
(subprocess)."""
import json

import onnx
import pytest
from PIL import Image

pytestmark = pytest.mark.slow          # every test runs tools/export_onnx.py in a subprocess


@pytest.fixture(scope='module')
def run(cli):
    """``python tools/export_onnx.py ARGS``: (code, stdout, stderr)."""
    return lambda *args: cli('tools/export_onnx.py', *args)


def test_export_writes_a_checked_standard_graph(tmp_path, run, tiny_weights):
    image = tmp_path / 'photo.png'
    Image.new('RGB', (70, 45), (120, 80, 40)).save(image)
    out = tmp_path / 'm.onnx'
    code, stdout, err = run('--weights', tiny_weights('esdnet-tiny'), '--out', out,
                            '--image', image)
    assert code == 0, err
    assert 'PSNR 45x70:' in stdout and ', 33x52:' in stdout        # two sizes, one file
    assert 'opset 17' in stdout and 'esdnet-tiny' in stdout
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta['spikederain.model'] == 'esdnet-tiny'
    assert len(meta['spikederain.weights_sha256']) == 64
    assert {n.domain for n in proto.graph.node} == {''}


def test_a_failed_check_writes_nothing(tmp_path, run):
    out = tmp_path / 'm.onnx'
    image = tmp_path / 'photo.png'
    Image.new('RGB', (40, 30), (20, 80, 140)).save(image)
    code, _, err = run('--random_weights', '--model', 'esdnet-tiny', '--out', out,
                       '--min_psnr', 1e6, '--image', image)
    assert code == 1 and err.count('\n') == 1 and 'nothing written' in err
    assert not out.exists()


@pytest.mark.parametrize('args, code, words', [
    (('--random_weights', '--model', 'esdnet-tiny', '--opset', 16), 2, '--opset 16'),
    (('--model', 'esdnet-tiny'), 2, '--weights is required'),
    (('--weights', 'missing.pth'), 1, 'missing.pth'),
    (('--random_weights', '--model', 'esdnet-tiny', '--image', 'none.png'), 1, 'none.png'),
])
def test_bad_input_is_one_line(tmp_path, run, args, code, words):
    got, _, err = run(*args, '--out', tmp_path / 'm.onnx')
    assert got == code and err.count('\n') == 1 and words in err, err
    assert not (tmp_path / 'm.onnx').exists()


def test_out_must_be_onnx(tmp_path, run):
    code, _, err = run('--random_weights', '--model', 'esdnet-tiny', '--out', tmp_path / 'm.pth')
    assert code == 2 and 'name the file .onnx' in err


def test_onnx_benchmark_reports_fidelity_and_times(tmp_path, cli, tiny_weights):
    report = tmp_path / 'r.json'
    code, out, err = cli('tools/onnx_benchmark.py', '--weights', tiny_weights('esdnet-tiny'),
                         '--size', 32, '--repeats', 1, '--json', report)
    assert code == 0, err
    assert 'time per image' in out and '1 thread(s)' in out
    result = json.loads(report.read_text())['results'][0]
    assert [r['photo'] for r in result['photos']] == ['astronaut', 'coffee', 'chelsea', 'rocket']
    assert min(r['vs_exact_db']['onnxruntime fp32'] for r in result['photos']) >= 50
    timed = set(result['seconds_per_image'])
    assert {'torch default (fast)', 'onnxruntime fp32', 'openvino fp32'} <= timed
    assert 'torch exact' not in timed                  # only with --time_exact
    assert min(r['vs_exact_db']['openvino fp32'] for r in result['photos']) >= 50
