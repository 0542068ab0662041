"""evaluation.py end to end (subprocess): table, means, reports, pairing errors, --lpips."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from utils.eval.metrics import calculate_psnr, calculate_ssim

pytestmark = pytest.mark.slow          # every test runs evaluation.py in a subprocess


@pytest.fixture(scope='module')
def run(cli):
    """``python evaluation.py ARGS``: (code, stdout, stderr)."""
    return lambda *args, **kw: cli('evaluation.py', *args, **kw)


@pytest.fixture()
def folders(tmp_path):
    """restored/*.png and target/*.jpg|png with the same stems, plus the arrays."""
    rng = np.random.default_rng(0)
    arrays = {}
    for i, name in enumerate(['rain-001', 'rain-002', 'rain-010']):
        target = rng.integers(0, 256, (24, 31, 3), dtype=np.uint8)
        restored = np.clip(target.astype(int) + rng.integers(-9, 10, target.shape), 0, 255)
        arrays[name] = (restored.astype(np.uint8), target)
        (tmp_path / 'restored').mkdir(exist_ok=True)
        (tmp_path / 'target').mkdir(exist_ok=True)
        Image.fromarray(arrays[name][0]).save(tmp_path / 'restored' / f'{name}.png')
        ext = 'bmp' if i == 1 else 'png'            # extensions may differ; stems pair
        Image.fromarray(target).save(tmp_path / 'target' / f'{name}.{ext}')
    return tmp_path / 'restored', tmp_path / 'target', arrays


def test_table_means_and_reports(folders, tmp_path, run):
    restored, target, arrays = folders
    code, out, err = run('--generated_images_path', restored, '--target_path', target,
                         '--json', tmp_path / 'rep' / 'm.json', '--csv', tmp_path / 'm.csv')
    assert code == 0, err
    psnr = {n: calculate_psnr(*a) for n, a in arrays.items()}
    ssim = {n: calculate_ssim(*a) for n, a in arrays.items()}
    for n in arrays:
        assert f'{n}  ' in out and f'{psnr[n]:.4f}' in out and f'{ssim[n]:.4f}' in out
    mean_p, mean_s = np.mean(list(psnr.values())), np.mean(list(ssim.values()))
    assert f'3 images (Y, crop_border 0): PSNR {mean_p:.4f} dB, SSIM {mean_s:.4f}' in out
    doc = json.loads((tmp_path / 'rep' / 'm.json').read_text())
    assert doc['means']['psnr'] == pytest.approx(mean_p, abs=1e-9)
    assert [r['name'] for r in doc['images']] == sorted(arrays)
    rows = list(csv.DictReader((tmp_path / 'm.csv').open()))
    assert rows[-1]['name'] == 'mean' and float(rows[-1]['ssim']) == pytest.approx(mean_s)
    assert float(rows[0]['psnr']) == pytest.approx(psnr['rain-001'])


def test_missing_partner_is_named(folders, run):
    restored, target, _ = folders
    (target / 'rain-010.png').unlink()
    code, out, err = run('--restored', restored, '--target_path', target)
    assert code != 0 and 'rain-010.png' in err and 'no target image' in err
    assert 'Traceback' not in err and out == ''


def test_rgb_crop_quiet_and_unavailable_lpips(folders, tmp_path, run):
    restored, target, arrays = folders
    # An `lpips` that cannot be imported, whatever is installed on this machine.
    (tmp_path / 'fake').mkdir()
    (tmp_path / 'fake' / 'lpips.py').write_text("raise ImportError('lpips is not installed')\n")
    proc = run('--restored', restored, '--target_path', target, '--no-test_y', '--crop_border',
               '2', '--quiet', '--lpips', env={'PYTHONPATH': str(tmp_path / 'fake')})
    # LPIPS fails with a message saying how to get it; PSNR/SSIM are still computed.
    assert proc.code == 1
    assert '--lpips' in proc.stderr and 'pip install lpips' in proc.stderr
    mean_p = np.mean([calculate_psnr(*a, crop_border=2, test_y=False) for a in arrays.values()])
    assert f'(RGB, crop_border 2): PSNR {mean_p:.4f} dB' in proc.stdout
    assert 'LPIPS' not in proc.stdout and 'rain-001' not in proc.stdout     # --quiet: means only


def _photos(folder):
    """Two crops of real photos (PNG and JPEG) and a 40x50 one, too small for NIQE."""
    import skimage.data
    folder.mkdir()
    Image.fromarray(skimage.data.astronaut()[:200, :300]).save(folder / 'a.png')
    Image.fromarray(skimage.data.coffee()[:200, :300]).save(folder / 'b.jpg', quality=90)
    small = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(small).save(folder / 'small.png')
    return folder


def test_without_targets_scores_niqe_brisque_piqe(tmp_path, run):
    from utils.data.image_io import read_image_rgb
    from utils.eval.noreference import score_image
    folder = _photos(tmp_path / 'real')
    code, out, err = run('--restored', folder)
    # one image is too small for NIQE: one line naming it, no traceback
    assert code == 1 and 'small.png' in err and 'too small for NIQE' in err
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err
    (folder / 'small.png').unlink()
    code, out, err = run('--restored', folder, '--json', tmp_path / 'n.json',
                         '--csv', tmp_path / 'n.csv')
    assert code == 0, err
    scores = {s: score_image(read_image_rgb(next(folder.glob(f'{s}.*')))) for s in 'ab'}
    means = {m: np.mean([scores[s][m] for s in 'ab']) for m in ('niqe', 'brisque', 'piqe')}
    assert (f'2 images, no targets (no-reference, lower is better): NIQE {means["niqe"]:.4f}, '
            f'BRISQUE {means["brisque"]:.4f}, PIQE {means["piqe"]:.4f}') in out
    assert 'NIQE   BRISQUE      PIQE' in out and f'{scores["b"]["piqe"]:.4f}' in out
    doc = json.loads((tmp_path / 'n.json').read_text())
    assert doc['means']['niqe'] == pytest.approx(means['niqe'], abs=1e-12)
    assert [r['name'] for r in doc['images']] == ['a', 'b'] and doc['settings']['target'] is None
    rows = list(csv.DictReader((tmp_path / 'n.csv').open()))
    assert list(rows[0]) == ['name', 'niqe', 'brisque', 'piqe', 'restored']
    assert float(rows[1]['brisque']) == pytest.approx(scores['b']['brisque'])
    code, out, err = run('--restored', folder, '--no_reference', 'piqe', '--quiet')
    assert code == 0 and 'PIQE' in out and 'NIQE' not in out and 'a ' not in out
    code, _, err = run('--restored', folder, '--no_reference', 'ssim')
    assert code == 2 and 'niqe, brisque, piqe' in err
    code, _, err = run('--restored', folder, '--lpips')
    assert code == 2 and 'needs --target_path' in err


def test_no_reference_next_to_psnr_ssim(folders, tmp_path, run):
    restored, target, arrays = folders               # 24x31: large enough for BRISQUE, PIQE
    from utils.eval.noreference import score_image
    code, out, err = run('--restored', restored, '--target_path', target, '--no_reference',
                         'brisque,piqe', '--json', tmp_path / 'm.json')
    assert code == 0, err
    brisque = np.mean([score_image(a[0], ['brisque'])['brisque'] for a in arrays.values()])
    assert f'; no-reference (lower is better): BRISQUE {brisque:.4f}, PIQE ' in out
    assert 'PSNR      SSIM   BRISQUE      PIQE' in out
    doc = json.loads((tmp_path / 'm.json').read_text())
    assert set(doc['images'][0]) >= {'psnr', 'ssim', 'brisque', 'piqe'}
    assert doc['settings']['no_reference'] == ['brisque', 'piqe']
