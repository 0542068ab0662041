"""tools/paper_table.py: two tiny benchmarks (one without targets, scored by NIQE/BRISQUE/PIQE),
two weights, the same numbers as evaluation.py, resumable, one-line errors (subprocess)."""
import csv
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow          # every test runs tools/paper_table.py in a subprocess


@pytest.fixture(scope='module')
def setup(tmp_path_factory, paired_folder, tiny_weights, cli):
    root = tmp_path_factory.mktemp('table')
    data = root / 'data'
    paired_folder(data / 'Rain12' / 'test', 3, (16, 20))
    # real rain: no ground truth; one image large enough for NIQE (192x96), one too small
    paired_folder(data / 'RW_Rain' / 'test', sizes=[(96, 192), (16, 20)], seed=2, targets=False)
    (data / 'photos' / 'train').mkdir(parents=True)            # not a benchmark: ignored
    out = root / 'out'
    args = ('--data_root', data, '--weights', tiny_weights('spikerain-tiny'),
            tiny_weights('spikerain-tiny', neuron='relu'), '--save_root', out, '--size', 16,
            '--rate_images', 1, '--format', 'all')
    first = cli('tools/paper_table.py', *args)
    again = cli('tools/paper_table.py', *args)
    return data, out, first, again


def test_scores_equal_evaluation_py(setup, tmp_path, cli):
    data, out, (code, stdout, err), _ = setup
    assert code == 0, err
    doc = json.loads((out / 'paper_table.json').read_text())
    assert [e['label'] for e in doc['entries']] == ['spikerain-tiny', 'spikerain-tiny/relu']
    for entry in doc['entries']:
        rain12, rw = entry['results']
        assert (rain12['benchmark'], rw['benchmark']) == ('Rain12', 'RW_Rain')
        code, _, err = cli('evaluation.py', '--restored', rain12['save_dir'], '--target_path',
                           data / 'Rain12' / 'test' / 'target', '--json', tmp_path / 'e.json',
                           '--quiet')
        assert code == 0, err
        means = json.loads((tmp_path / 'e.json').read_text())['means']
        assert (rain12['psnr'], rain12['ssim']) == (means['psnr'], means['ssim'])
        assert rain12['images'] == means['images'] == 3
        assert rw['psnr'] is None and rw['images'] == 2
        # no ground truth: the no-reference scores, as evaluation.py gives them without targets
        code, _, err = cli('evaluation.py', '--restored', rw['save_dir'], '--no_reference',
                           'brisque,piqe', '--json', tmp_path / 'n.json', '--quiet')
        assert code == 0, err
        blind = json.loads((tmp_path / 'n.json').read_text())['means']
        assert (rw['brisque'], rw['piqe']) == (blind['brisque'], blind['piqe'])
        code, _, err = cli('evaluation.py', '--restored', Path(rw['save_dir']) / 'im0.png',
                           '--json', tmp_path / 'one.json', '--quiet')
        assert code == 0, err
        assert rw['niqe'] == json.loads((tmp_path / 'one.json').read_text())['means']['niqe']
        assert rw['no_reference']['niqe_images'] == 1          # im1 is too small for NIQE
        assert set(rw['inputs_no_reference']) >= {'niqe', 'brisque', 'piqe'}
        assert rw['inputs_no_reference']['brisque'] != rw['brisque']
        assert sorted(p.name for p in Path(rw['save_dir']).iterdir()) == \
            ['.spikederain-outputs.json', 'im0.png', 'im1.png']      # outputs and their recipe
        assert rw['recipe']['weights_sha256'] and rain12['recipe']['path'] == 'exact path'
    snn, ann = (e['complexity'] for e in doc['entries'])
    assert snn['spikes_m'] > 0 and ann['spikes_m'] == 0 and ann['gmacs'] < snn['gmacs']
    assert doc['energy_model'] == 'papers' and doc['energy_convention']['e_spike_pj'] == 3.7


def test_prints_one_line_per_benchmark_and_three_formats(setup):
    _, out, (code, stdout, _), _ = setup
    assert code == 0
    lines = [ln for ln in stdout.splitlines() if ' | spikerain-tiny' in ln and ': ' in ln
             and ln.startswith(('Rain12', 'RW_Rain'))]
    assert len(lines) == 4 and 'PSNR' in lines[0] and 'NIQE' in lines[1]
    assert 'rainy inputs: NIQE' in lines[1] and 'not scored' not in stdout
    assert ('| Model | Params (M) | GMACs | Energy (mJ) | Rain12 PSNR/SSIM | '
            'RW_Rain NIQE/BRISQUE/PIQE (lower is better) |') in stdout
    assert 'RW_Rain rainy inputs: NIQE ' in stdout and 'NIQE over 1' in stdout
    assert '\\begin{tabular}' in stdout and '% RW_Rain rainy inputs' in stdout
    rows = list(csv.DictReader((out / 'paper_table.csv').open()))
    assert [(r['model'], r['benchmark']) for r in rows] == [
        ('spikerain-tiny', 'Rain12'), ('spikerain-tiny', 'RW_Rain'),
        ('spikerain-tiny/relu', 'Rain12'), ('spikerain-tiny/relu', 'RW_Rain')]
    assert rows[1]['psnr'] == '' and float(rows[0]['psnr']) > 0
    assert rows[0]['niqe'] == '' and float(rows[1]['brisque']) >= 0
    for ext in ('md', 'tex'):
        assert (out / f'paper_table.{ext}').stat().st_size > 0


def test_second_run_reuses_every_output(setup):
    _, out, (_, first, _), (code, again, err) = setup
    assert code == 0, err
    assert '3 images (0 restored, 3 reused)' in again and '2 images (0 restored, 2 reused)' in again
    table = lambda text: text[text.index('| Model'):]                        # noqa: E731
    assert table(again) == table(first)


def test_bad_input_is_one_line(tmp_path, cli, paired_folder):
    # Missing folders and files are runtime errors (exit 1); bad options exit 2.
    code, _, err = cli('tools/paper_table.py', '--data_root', tmp_path, '--weights',
                       tmp_path / 'w.pth')
    assert code == 1 and err.count('\n') == 1 and 'no benchmark found' in err
    paired_folder(tmp_path / 'Rain12' / 'test', 1, (16, 20), targets=False)
    code, _, err = cli('tools/paper_table.py', '--data_root', tmp_path, '--weights',
                       tmp_path / 'w.pth')
    assert code == 1 and err.count('\n') == 1 and 'w.pth' in err
    code, _, err = cli('tools/paper_table.py', '--data_root', tmp_path, '--weights',
                       tmp_path / 'w.pth', '--datasets', 'Rain200H')
    assert code == 1 and err.count('\n') == 1 and 'Rain200H not found' in err
    code, _, err = cli('tools/paper_table.py', '--data_root', tmp_path, '--weights',
                       tmp_path / 'w.pth', '--model', 'nosuch')
    assert code == 2 and err.count('\n') == 1 and '--model nosuch: unknown' in err
