"""tools/paper_table.py: two tiny benchmarks (one without targets), two weights, the same
numbers as evaluation.py, resumable, one-line errors (subprocess)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import build_model, save_weights

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def run(script, *args):
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def _images(folder: Path, n: int, seed: int, size=(20, 16)) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / f'im{i}.png')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('table')
    data = root / 'data'
    _images(data / 'Rain12' / 'test' / 'input', 3, 0)
    _images(data / 'Rain12' / 'test' / 'target', 3, 1)
    _images(data / 'RW_Rain' / 'test' / 'input', 2, 2)        # real rain: no ground truth
    (data / 'photos' / 'train').mkdir(parents=True)            # not a benchmark: ignored
    torch.manual_seed(0)
    save_weights(build_model('spikerain-tiny'), root / 'snn.pth')
    save_weights(build_model('spikerain-tiny', neuron='relu'), root / 'ann.pth')
    out = root / 'out'
    args = ('--data_root', data, '--weights', root / 'snn.pth', root / 'ann.pth',
            '--save_root', out, '--size', 16, '--rate_images', 1, '--format', 'all')
    first = run('tools/paper_table.py', *args)
    again = run('tools/paper_table.py', *args)
    return data, out, first, again


def test_scores_equal_evaluation_py(setup, tmp_path):
    data, out, (code, stdout, err), _ = setup
    assert code == 0, err
    doc = json.loads((out / 'paper_table.json').read_text())
    assert [e['label'] for e in doc['entries']] == ['spikerain-tiny', 'spikerain-tiny/relu']
    for entry in doc['entries']:
        rain12, rw = entry['results']
        assert (rain12['benchmark'], rw['benchmark']) == ('Rain12', 'RW_Rain')
        code, _, err = run('evaluation.py', '--restored', rain12['save_dir'], '--target_path',
                           data / 'Rain12' / 'test' / 'target', '--json', tmp_path / 'e.json',
                           '--quiet')
        assert code == 0, err
        means = json.loads((tmp_path / 'e.json').read_text())['means']
        assert (rain12['psnr'], rain12['ssim']) == (means['psnr'], means['ssim'])
        assert rain12['images'] == means['images'] == 3
        assert rw['psnr'] is None and rw['images'] == 2
        assert sorted(p.name for p in Path(rw['save_dir']).iterdir()) == ['im0.png', 'im1.png']
    snn, ann = (e['complexity'] for e in doc['entries'])
    assert snn['spikes_m'] > 0 and ann['spikes_m'] == 0 and ann['gmacs'] < snn['gmacs']
    assert doc['energy_model'] == 'papers' and doc['energy_convention']['e_spike_pj'] == 3.7


def test_prints_one_line_per_benchmark_and_three_formats(setup):
    _, out, (code, stdout, _), _ = setup
    assert code == 0
    lines = [ln for ln in stdout.splitlines() if ' | spikerain-tiny' in ln and ': ' in ln
             and ln.startswith(('Rain12', 'RW_Rain'))]
    assert len(lines) == 4 and 'PSNR' in lines[0] and 'not scored' in lines[1]
    assert '| Model | Params (M) | GMACs | Energy (mJ) | Rain12 PSNR/SSIM |' in stdout
    assert 'RW_Rain: 2 images restored, not scored' in stdout
    assert '\\begin{tabular}' in stdout and '% RW_Rain: 2 images' in stdout
    rows = list(csv.DictReader((out / 'paper_table.csv').open()))
    assert [(r['model'], r['benchmark']) for r in rows] == [
        ('spikerain-tiny', 'Rain12'), ('spikerain-tiny', 'RW_Rain'),
        ('spikerain-tiny/relu', 'Rain12'), ('spikerain-tiny/relu', 'RW_Rain')]
    assert rows[1]['psnr'] == '' and float(rows[0]['psnr']) > 0
    for ext in ('md', 'tex'):
        assert (out / f'paper_table.{ext}').stat().st_size > 0


def test_second_run_reuses_every_output(setup):
    _, out, (_, first, _), (code, again, err) = setup
    assert code == 0, err
    assert '3 images (0 restored, 3 reused)' in again and '2 images (0 restored, 2 reused)' in again
    table = lambda text: text[text.index('| Model'):]                        # noqa: E731
    assert table(again) == table(first)


def test_bad_input_is_one_line(tmp_path):
    # Missing folders and files are runtime errors (exit 1); bad options exit 2.
    code, _, err = run('tools/paper_table.py', '--data_root', tmp_path, '--weights',
                       tmp_path / 'w.pth')
    assert code == 1 and err.count('\n') == 1 and 'no benchmark found' in err
    _images(tmp_path / 'Rain12' / 'test' / 'input', 1, 0)
    code, _, err = run('tools/paper_table.py', '--data_root', tmp_path, '--weights',
                       tmp_path / 'w.pth')
    assert code == 1 and err.count('\n') == 1 and 'w.pth' in err
    code, _, err = run('tools/paper_table.py', '--data_root', tmp_path, '--weights',
                       tmp_path / 'w.pth', '--datasets', 'Rain200H')
    assert code == 1 and err.count('\n') == 1 and 'Rain200H not found' in err
    code, _, err = run('tools/paper_table.py', '--data_root', tmp_path, '--weights',
                       tmp_path / 'w.pth', '--model', 'nosuch')
    assert code == 2 and err.count('\n') == 1 and '--model nosuch: unknown' in err
