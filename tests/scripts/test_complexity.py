"""tools/complexity.py: the efficiency table, JSON and firing-rate plot (subprocess)."""
import json

import pytest
from PIL import Image

pytestmark = pytest.mark.slow          # every test runs tools/complexity.py in a subprocess


@pytest.fixture(scope='module')
def run(cli):
    """``python tools/complexity.py ARGS``: (code, stdout, stderr)."""
    return lambda *args: cli('tools/complexity.py', *args)


def test_table_json_and_plot_on_synthetic_images(tmp_path, run):
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


def test_real_images_and_weights(tmp_path, run, paired_folder, tiny_weights):
    folder = paired_folder(tmp_path, 2, (20, 28), name='{i}', targets=False) / 'input'
    weights = tiny_weights('esdnet-tiny')
    code, out, err = run('--model', 'esdnet-tiny', '--weights', weights, '--images', folder,
                         '--size', 32)
    assert code == 0, err
    assert f'2 images from {folder}' in out and f'weights {weights}' in out
    assert 'esdnet-tiny' in out and '375,735' in out


def test_bad_input_is_one_line_and_nonzero(tmp_path, run):
    code, _, err = run('--weights', tmp_path / 'w.pth')            # with --model all
    assert code == 2 and err.count('\n') == 1 and '--weights needs a single --model' in err
    folder = tmp_path / 'bad'
    folder.mkdir()
    (folder / 'broken.png').write_bytes(b'not an image')
    code, _, err = run('--model', 'spikerain-tiny', '--images', folder, '--size', 16)
    assert code == 1 and err.count('\n') == 1 and 'broken.png' in err
    code, _, err = run('--model', 'spikerain-tiny', '--weights', tmp_path / 'missing.pth')
    assert code == 1 and err.count('\n') == 1 and 'missing.pth' in err


def test_memory_is_checked_before_each_whole_forward(tmp_path, cli, paired_folder):
    """Firing rates need whole images: over the budget a warning, beyond the free memory a
    one-line refusal before the forward (a 12 MP photo would need hundreds of GB here)."""
    folder = paired_folder(tmp_path, 1, (20, 28), name='{i}', targets=False) / 'input'
    code, out, err = cli('tools/complexity.py', '--model', 'spikerain-tiny', '--images', folder,
                         '--size', 16, env={'SPIKEDERAIN_MEMORY_BUDGET': '1K'})
    assert code == 0, err
    assert err.count('warning: --images (spikerain-tiny, 28x20)') == 1 and 'budget' in err
    big = tmp_path / 'big'
    big.mkdir()
    Image.new('RGB', (4000, 3000), (90, 120, 150)).save(big / 'photo.png')
    code, out, err = cli('tools/complexity.py', '--model', 'spikerain-tiny', '--images', big,
                         '--size', 16)
    assert code == 1 and err.count('\n') == 1, err
    assert '4000x3000' in err and 'free; use smaller images' in err
