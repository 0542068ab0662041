"""tools/complexity.py: the efficiency table, JSON and firing-rate plot (subprocess)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import build_model, save_weights

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def run(*args):
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'complexity.py'),
                           *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def test_table_json_and_plot_on_synthetic_images(tmp_path):
    code, out, err = run('--model', 'spikerain-tiny', '--size', 32, '--synthetic', 1,
                         '--synthetic_size', 24, '--per_layer', '--json', tmp_path / 'r.json',
                         '--plot', tmp_path / 'rates.png')
    assert code == 0, err
    assert 'SYNTHETIC' in out and 'RANDOM weights' in out and 'spikerain-tiny' in out
    assert 'encoder_level1.0.layers.0.1' in out            # --per_layer
    report = json.loads((tmp_path / 'r.json').read_text())['models']['spikerain-tiny']
    assert report['params'] == 484_875
    assert report['energy_mj'] * 1e9 == pytest.approx(sum(x['energy_pj'] for x in report['layers']))
    assert report['macs'] == sum(x['macs'] for x in report['layers'])
    assert len(report['neuron_rates']) == 35
    with Image.open(tmp_path / 'rates.png') as im:
        assert im.width > 200 and im.height > 100


def test_real_images_and_weights(tmp_path):
    folder = tmp_path / 'input'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(folder / f'{i}.png')
    weights = tmp_path / 'w.pth'
    save_weights(build_model('esdnet-tiny'), weights)
    code, out, err = run('--model', 'esdnet-tiny', '--weights', weights, '--images', folder,
                         '--size', 32)
    assert code == 0, err
    assert f'2 images from {folder}' in out and f'weights {weights}' in out
    assert 'esdnet-tiny' in out and '375,735' in out


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    code, _, err = run('--weights', tmp_path / 'w.pth')            # with --model all
    assert code == 2 and err.count('\n') == 1 and '--weights needs a single --model' in err
    folder = tmp_path / 'bad'
    folder.mkdir()
    (folder / 'broken.png').write_bytes(b'not an image')
    code, _, err = run('--model', 'spikerain-tiny', '--images', folder, '--size', 16)
    assert code == 1 and err.count('\n') == 1 and 'broken.png' in err
    code, _, err = run('--model', 'spikerain-tiny', '--weights', tmp_path / 'missing.pth')
    assert code == 1 and err.count('\n') == 1 and 'missing.pth' in err
