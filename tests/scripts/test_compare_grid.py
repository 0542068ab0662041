"""tools/compare_grid.py: a rainy | restored | target grid with PSNR captions (subprocess)."""
import numpy as np
import pytest
from PIL import Image

from utils.eval.metrics import calculate_psnr

pytestmark = pytest.mark.slow          # every test runs tools/compare_grid.py in a subprocess

COLOURS = {'rainy': (200, 30, 30), 'restored': (30, 200, 30), 'target': (30, 30, 200)}


@pytest.fixture(scope='module')
def run(cli):
    """``python tools/compare_grid.py ARGS``: (code, stdout, stderr)."""
    return lambda *args: cli('tools/compare_grid.py', *args)


def _folders(tmp_path, names=('a', 'b')):
    for kind, colour in COLOURS.items():
        (tmp_path / kind).mkdir()
        for i, n in enumerate(names):
            img = np.full((40, 60, 3), colour, np.uint8)
            img[:5, :5] = 10 * i                       # rows differ a little
            Image.fromarray(img).save(tmp_path / kind / f'{n}.png')


def test_grid_has_panels_in_order_and_psnr_captions(tmp_path, run):
    _folders(tmp_path)
    out = tmp_path / 'grid' / 'g.png'
    code, stdout, err = run('--rainy', tmp_path / 'rainy', '--restored', tmp_path / 'restored',
                            '--target', tmp_path / 'target', '--out', out, '--panel_size', 0)
    assert code == 0, err
    grid = np.asarray(Image.open(out).convert('RGB'))
    assert grid.shape[0] >= 2 * 40 and grid.shape[1] >= 3 * 60
    # Along a line through the middle of the first row, the panels appear left to right.
    first = [tuple(p) for p in grid[grid.shape[0] // 4]]
    order = [min(i for i, p in enumerate(first) if p == c) for c in COLOURS.values()]
    assert order == sorted(order)
    ref = np.asarray(Image.open(tmp_path / 'target' / 'a.png'))
    rainy = np.asarray(Image.open(tmp_path / 'rainy' / 'a.png'))
    assert f'a: rainy {calculate_psnr(rainy, ref):.2f} dB' in stdout
    assert '2 rows' in stdout


def test_missing_image_is_named(tmp_path, run):
    _folders(tmp_path)
    (tmp_path / 'restored' / 'b.png').unlink()
    code, _, err = run('--rainy', tmp_path / 'rainy', '--restored', tmp_path / 'restored',
                       '--target', tmp_path / 'target', '--names', 'a', 'b',
                       '--out', tmp_path / 'g.png')
    assert code == 1 and 'no image named b' in err and not (tmp_path / 'g.png').exists()
