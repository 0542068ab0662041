"""tools/export_onnx.py: writes a checked .onnx, or nothing and one line; tools/deploy_benchmark.py
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


def test_int8_export_is_checked_and_runs_as_int8(tmp_path, run, tiny_weights):
    out, image = tmp_path / 'q.onnx', tmp_path / 'photo.png'
    Image.new('RGB', (56, 40), (120, 80, 40)).save(image)
    code, stdout, err = run('--weights', tiny_weights('spikerain-tiny'), '--out', out, '--int8',
                            '--min_psnr_int8', 15, '--image', image)
    assert code == 0, err
    assert ', int8 spike convs' in stdout and 'int8 (' in stdout
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta['spikederain.precision'] == 'int8'
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear', 'Conv'} <= ops


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


def test_deploy_benchmark_times_paths_and_judges_quality(tmp_path, cli, tiny_weights):
    """tools/deploy_benchmark.py on a tiny model: each path timed against the conv floor with
    its peak memory, quality against exact on held-out photos, int8 spikes counted."""
    photos = tmp_path / 'photos'
    photos.mkdir()
    for i, colour in enumerate([(120, 80, 40), (30, 160, 200)]):
        Image.new('RGB', (60, 40), colour).save(photos / f'p{i}.png')
    report = tmp_path / 'r.json'
    paths = ('torch exact', 'onnxruntime fp32', 'openvino int8')
    code, out, err = cli('tools/deploy_benchmark.py', '--weights', tiny_weights('spikerain-tiny'),
                         '--sizes', 32, '--repeats', 2, '--paths', *paths, '--photos',
                         photos, '--heldout_size', 32, '--json', report)
    assert code == 0, err
    assert '| onnxruntime fp32 |' in out and out.startswith('CPU: ')
    result = json.loads(report.read_text())['results'][0]
    assert set(result['sizes']) == {'32'}
    for size in result['sizes'].values():
        assert size['floor_s'] > 0 and set(size['paths']) == set(paths)
        assert all(1 <= len(r['times']) <= 2 and r['peak_bytes'] >= 0
                   for r in size['paths'].values())
    quality = result['quality']
    assert quality['torch exact']['mean_diff_db'] == 0 and quality['torch exact']['parity']
    assert quality['onnxruntime fp32']['min_vs_exact_db'] >= 50
    assert quality['torch exact']['images'] == 4                 # light and heavy per photo
    assert 0 < result['int8']['int8_convs'] < result['int8']['convs']


@pytest.mark.parametrize('args, words', [
    (('--paths', 'tensorrt fp16'), "--paths 'tensorrt fp16': this machine runs"),
    (('--photos', 'nowhere'), '--photos nowhere: no photos there'),
    (('--sizes', 8), '--sizes and --heldout_size must be >= 16'),
])
def test_deploy_benchmark_refuses_bad_options(tmp_path, cli, tiny_weights, args, words):
    code, _, err = cli('tools/deploy_benchmark.py', '--weights', tiny_weights('spikerain-tiny'),
                       *args)
    assert code == 2 or code == 1, err
    assert err.count('\n') == 1 and words in err, err


def test_measure_memory_measures_the_exported_graph(cli):
    """tools/measure_memory.py --paths onnxruntime: the runtime's own line for automatic tiling
    (printed, not written)."""
    code, out, err = cli('tools/measure_memory.py', '--model', 'spikerain-tiny', '--paths',
                         'onnxruntime', '--sizes', 32, 64)
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith('spikerain-tiny'))
    assert 'onnxruntime cpu:' in line and 'KB/pixel' in line and 'wrote' not in out
