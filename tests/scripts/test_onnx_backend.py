"""test.py --backend onnxruntime / openvino: the same files and scores as torch's exact path
within the export's bar, the backend in the manifest, the export made once into the cache
(subprocess)."""
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from utils.inference.outputs import MANIFEST_NAME

pytestmark = pytest.mark.slow          # every test runs test.py in a subprocess


def _psnr_db(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _scores(stdout: str) -> tuple[float, float]:
    m = re.search(r'PSNR (\d+\.\d+) dB, SSIM (\d+\.\d+)', stdout)
    assert m, stdout
    return float(m.group(1)), float(m.group(2))


def _exact_then(cli, tmp_path, split, weights, *backend_args, out='ort'):
    """test.py on ``split`` twice, into tmp_path/torch (--exact) and tmp_path/OUT (with
    ``backend_args``), sharing one ONNX cache: ``(common args, env, exact stdout, the
    backend's stdout, its stderr)``."""
    env = {'SPIKEDERAIN_CACHE': str(tmp_path / 'cache')}
    common = ('--weights', weights, '--data_path', split, '--target_path', split / 'target',
              '--no_progress')
    code, out_t, err = cli('test.py', *common, '--exact', '--save_path', tmp_path / 'torch',
                           env=env)
    assert code == 0, err
    code, out_o, err = cli('test.py', *common, *backend_args, '--save_path', tmp_path / out,
                           env=env)
    assert code == 0, err
    return common, env, out_t, out_o, err


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_exported_backend_matches_torch_exact_on_a_folder(tmp_path, cli, paired_folder,
                                                          tiny_weights, backend):
    split = paired_folder(tmp_path / 'split', 3, sizes=[(37, 50), (48, 64), (40, 40)])
    common, env, out_t, out_o, err = _exact_then(cli, tmp_path, split,
                                                 tiny_weights('vlif-net-tiny'),
                                                 '--backend', backend)
    assert 'exporting vlif-net-tiny to ONNX' in err and f'on {backend} (cpu)' in out_o
    names = sorted(p.name for p in (tmp_path / 'torch').glob('*.png'))
    assert names == sorted(p.name for p in (tmp_path / 'ort').glob('*.png')) and len(names) == 3
    for name in names:
        a = np.asarray(Image.open(tmp_path / 'torch' / name))
        b = np.asarray(Image.open(tmp_path / 'ort' / name))
        assert a.shape == b.shape and _psnr_db(a, b) >= 50, name
    (p_t, s_t), (p_o, s_o) = _scores(out_t), _scores(out_o)
    assert abs(p_t - p_o) < 0.01 and abs(s_t - s_o) < 1e-3
    recipe = json.loads((tmp_path / 'ort' / MANIFEST_NAME).read_text())['recipe']
    assert recipe['backend'].startswith(f'{backend} ') and recipe['path'] == 'onnx export'
    assert len(list((tmp_path / 'cache' / 'onnx').glob('vlif-net-tiny-*.onnx'))) == 1
    code, _, err = cli('test.py', *common, '--backend', backend, '--overwrite',
                       '--save_path', tmp_path / 'ort', env=env)      # the cache is used
    assert code == 0 and 'exporting' not in err, err


@pytest.mark.parametrize('args, words', [
    (('--precision', 'bf16'), '--precision bf16: --backend onnxruntime runs fp32, int8'),
    (('--exact',), '--exact is a torch setting'),
    (('--device', 'cuda'), '--device cuda: --backend onnxruntime runs on the CPU'),
])
def test_torch_only_options_are_refused(tmp_path, cli, args, words):
    code, _, err = cli('test.py', '--random_weights', '--model', 'spikerain-tiny',
                       '--data_path', tmp_path, '--backend', 'onnxruntime', *args)
    assert code == 2 and err.count('\n') == 1 and words in err, err


def test_int8_needs_an_exported_backend(tmp_path, cli):
    code, _, err = cli('test.py', '--random_weights', '--model', 'spikerain-tiny',
                       '--data_path', tmp_path, '--precision', 'int8')
    assert code == 2 and err.count('\n') == 1 and 'add --backend openvino' in err, err


def test_int8_backend_restores_a_folder_close_to_torch_exact(tmp_path, cli, paired_folder,
                                                             tiny_weights):
    """int8 in OpenVINO (spikes exact, weights rounded): same files, scores within 0.3 dB of
    the exact path, the precision in the manifest."""
    split = paired_folder(tmp_path / 'split', 2, sizes=[(37, 50), (48, 64)])
    _, _, out_t, out_q, _ = _exact_then(cli, tmp_path, split, tiny_weights('spikerain-tiny'),
                                        '--backend', 'openvino', '--precision', 'int8',
                                        out='int8')
    names = sorted(p.name for p in (tmp_path / 'int8').glob('*.png'))
    assert names == sorted(p.name for p in (tmp_path / 'torch').glob('*.png')) and names
    assert abs(_scores(out_t)[0] - _scores(out_q)[0]) < 0.3
    recipe = json.loads((tmp_path / 'int8' / MANIFEST_NAME).read_text())['recipe']
    assert recipe['precision'] == 'int8' and recipe['backend'].startswith('openvino ')
