"""Preparing original releases (one synthetic fixture per naming convention), the
dataset_load.py CLI, and tools/make_demo_data.py."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils.data.prepare import match_pairs, pattern_regex, prepare_dataset
from utils.data.datasets import DatasetError, find_pairs, read_pair
from utils.data.image_io import read_image_rgb, write_png_atomic


def _img(seed, h=12, w=16):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _tree_digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def jorder_release(src: Path, n=3) -> Path:
    """rain_data_train_Heavy-like: norain/norain-N.png, rain/X2/norain-Nx2.png, + distractors."""
    for i in range(1, n + 1):
        clean = _img(i)
        write_png_atomic(src / 'norain' / f'norain-{i}.png', clean)
        write_png_atomic(src / 'rain' / 'X2' / f'norain-{i}x2.png', 255 - clean)
        write_png_atomic(src / 'rainstreak' / f'norain-{i}x2.png', _img(100 + i))
    return src


def check_pairs(dest: Path, ids):
    """Every prepared pair is rainy = 255 - clean, as the fixtures are built."""
    pairs = find_pairs(dest)
    assert [p[0].stem for p in pairs] == list(ids)
    for inp, tgt in pairs:
        x, y = read_pair(inp, tgt)
        assert np.array_equal(x, 255 - y), inp


def test_pattern_regex():
    rx = pattern_regex('rain/**/norain-{id}x2')
    assert rx.match('rain/X2/norain-12x2').group('id') == '12'
    assert rx.match('Rain200H/rain/norain-3x2').group('id') == '3'
    assert rx.match('rainstreak/norain-3x2') is None
    assert pattern_regex('rain-{id}').match('norain-3') is None
    with pytest.raises(DatasetError, match='exactly once'):
        pattern_regex('rain')


def test_prepare_jorder(tmp_path):
    src = jorder_release(tmp_path / 'release')
    before = _tree_digest(src)
    s = prepare_dataset(src, tmp_path / 'out' / 'Rain200H' / 'train', 'jorder')
    assert (s.pairs, s.written, s.unchanged) == (3, 6, 0)
    check_pairs(tmp_path / 'out' / 'Rain200H' / 'train', ['1', '2', '3'])
    assert _tree_digest(src) == before            # sources untouched
    again = prepare_dataset(src, tmp_path / 'out' / 'Rain200H' / 'train', 'jorder')
    assert (again.written, again.unchanged) == (0, 6)


@pytest.mark.parametrize('sub', ['', 'rain/', 'mixed'])
def test_prepare_rain_norain(tmp_path, sub):
    src = tmp_path / 'release'
    for i in (1, 2, 10):
        clean = _img(i)
        rainy_dir = {'': '', 'rain/': 'rain/', 'mixed': 'rainy/'}[sub]
        clean_dir = {'': '', 'rain/': 'norain/', 'mixed': ''}[sub]
        write_png_atomic(src / f'{clean_dir}norain-{i}.png', clean)
        write_png_atomic(src / f'{rainy_dir}rain-{i}.png', 255 - clean)
    prepare_dataset(src, tmp_path / 'out', 'rain-norain')
    check_pairs(tmp_path / 'out', ['1', '2', '10'])


@pytest.mark.parametrize('side', ['left', 'right'])
def test_prepare_side_by_side(tmp_path, side):
    src = tmp_path / 'DID-MDN'
    for level in ('Rain_Light', 'Rain_Heavy'):
        for i in (1, 2):
            clean = _img(i)
            halves = (255 - clean, clean) if side == 'left' else (clean, 255 - clean)
            (src / level).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate(halves, axis=1)).save(src / level / f'{i}.png')
    prepare_dataset(src, tmp_path / 'out', 'side-by-side', rainy_side=side)
    check_pairs(tmp_path / 'out', ['Rain_Heavy_1', 'Rain_Heavy_2', 'Rain_Light_1', 'Rain_Light_2'])
    assert read_image_rgb(tmp_path / 'out' / 'input' / 'Rain_Light_1.png').shape == (12, 16, 3)


def test_side_by_side_odd_width(tmp_path):
    write_png_atomic(tmp_path / 'src' / '7.png', _img(0, 8, 15))
    with pytest.raises(DatasetError, match=r'7\.png: width 15 is odd'):
        prepare_dataset(tmp_path / 'src', tmp_path / 'out', 'side-by-side')


def test_prepare_standard_and_custom_patterns(tmp_path):
    src = tmp_path / 'src'
    for i in (1, 2):
        clean = _img(i)
        write_png_atomic(src / 'target' / f'{i}.png', clean)
        write_png_atomic(src / 'input' / f'{i}.png', 255 - clean)
        write_png_atomic(src / 'Rain12' / f'{i}_GT.png', clean)
        write_png_atomic(src / 'Rain12' / f'{i}_in.png', 255 - clean)
    prepare_dataset(src, tmp_path / 'std', 'standard')
    check_pairs(tmp_path / 'std', ['1', '2'])
    prepare_dataset(src, tmp_path / 'custom', 'standard', input_pattern='Rain12/{id}_in',
                    target_pattern='Rain12/{id}_GT')
    check_pairs(tmp_path / 'custom', ['1', '2'])


def test_prepare_errors_name_the_file(tmp_path):
    src = jorder_release(tmp_path / 'release')
    (src / 'norain' / 'norain-2.png').unlink()
    with pytest.raises(DatasetError, match=r'X2/norain-2x2\.png: no clean partner'):
        prepare_dataset(src, tmp_path / 'out', 'jorder')
    write_png_atomic(src / 'norain' / 'norain-2.png', _img(0, 10, 16))
    with pytest.raises(DatasetError, match=r'norain-2x2\.png \(16x12\) and .*norain-2\.png '
                                           r'\(16x10\): sizes differ'):
        prepare_dataset(src, tmp_path / 'out', 'jorder')
    assert not (tmp_path / 'out').exists()       # nothing written before the checks pass
    with pytest.raises(DatasetError, match='overlaps the source'):
        prepare_dataset(src, src / 'prepared', 'jorder')
    write_png_atomic(tmp_path / 'other' / 'photo.png', _img(0))
    with pytest.raises(DatasetError, match='no images named like'):
        prepare_dataset(tmp_path / 'other', tmp_path / 'out', 'rain-norain')


def test_prepare_refuses_to_replace_different_files(tmp_path):
    src = jorder_release(tmp_path / 'release')
    dest = tmp_path / 'out'
    prepare_dataset(src, dest, 'jorder')
    write_png_atomic(dest / 'target' / '1.png', _img(99))
    with pytest.raises(DatasetError, match=r'target/1\.png: exists with different content'):
        prepare_dataset(src, dest, 'jorder')
    prepare_dataset(src, dest, 'jorder', overwrite=True)
    check_pairs(dest, ['1', '2', '3'])


def test_match_pairs_duplicate_id(tmp_path):
    write_png_atomic(tmp_path / 'a' / 'rain-1.png', _img(0))
    write_png_atomic(tmp_path / 'b' / 'rain-1.png', _img(0))
    write_png_atomic(tmp_path / 'norain-1.png', _img(0))
    with pytest.raises(DatasetError, match='same id'):
        match_pairs(tmp_path, 'rain-{id}', 'norain-{id}')


# ------------------------------------------------------------------------------ the CLI
@pytest.mark.slow
def test_cli_prepare_check_list(tmp_path, cli):
    src = jorder_release(tmp_path / 'release')
    out = tmp_path / 'data'
    r = cli('dataset_load.py', 'prepare', '--convention', 'jorder', '--src', src,
             '--name', 'Rain200H', '--split', 'test', '--out', out)
    assert r.code == 0, r.stderr
    assert '3 pairs' in r.stdout
    r = cli('dataset_load.py', 'check', '--dataset', 'rain200h', '--data_root', out)
    assert r.code == 0, r.stderr
    assert '3 pairs OK' in r.stdout and '16x12' in r.stdout
    r = cli('dataset_load.py', 'list', '--data_root', out)
    assert r.code == 0
    for name in ('Rain200L', 'Rain200H', 'Rain1200', 'Rain12', 'RW_Rain'):
        assert name in r.stdout
    assert [ln for ln in r.stdout.splitlines() if ln.startswith('Rain200H')][0].count('test')


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path, cli):
    (tmp_path / 'ds' / 'input').mkdir(parents=True)
    write_png_atomic(tmp_path / 'ds' / 'input' / 'a.png', _img(0))
    write_png_atomic(tmp_path / 'ds' / 'target' / 'b.png', _img(0))
    r = cli('dataset_load.py', 'check', tmp_path / 'ds')
    assert r.code == 1
    assert r.stderr.strip().count('\n') == 0 and 'a.png: no matching target' in r.stderr


# ------------------------------------------------------------------------------ demo data tool
@pytest.mark.slow
def test_make_demo_data_from_clean_dir_is_idempotent(tmp_path, cli):
    for i in range(4):
        write_png_atomic(tmp_path / 'clean' / f'photo{i}.png', _img(i, 40, 60))
    out = tmp_path / 'demo'
    args = ('tools/make_demo_data.py', '--clean_dir', tmp_path / 'clean', '--out', out,
            '--train_samples', '2', '--test_samples', '2', '--size', '32')
    r = cli(*args)
    assert r.code == 0, r.stderr
    first = _tree_digest(out)
    train, test = find_pairs(out / 'train'), find_pairs(out / 'test')
    assert (len(train), len(test)) == (6, 2)       # 3 train photos x 2, 1 test photo x 2
    train_photos = {p[0].stem.rsplit('_', 2)[0] for p in train}
    test_photos = {p[0].stem.rsplit('_', 2)[0] for p in test}
    assert not train_photos & test_photos and len(train_photos | test_photos) == 4
    x, y = read_pair(*train[0])
    assert x.shape == (21, 32, 3) and (x.astype(int) >= y).all() and (x > y).any()
    assert read_image_rgb(out / 'preview.png').shape[1] > 2 * 32
    r = cli(*args)
    assert r.code == 0 and '0 files written' in r.stdout
    assert _tree_digest(out) == first


@pytest.mark.slow
def test_make_demo_data_default_photos(tmp_path, cli):
    r = cli('tools/make_demo_data.py', '--out', tmp_path / 'demo', '--train_samples', '1',
             '--test_samples', '1', '--size', '48')
    assert r.code == 0, r.stderr
    test_stems = [p[0].stem for p in find_pairs(tmp_path / 'demo' / 'test')]
    assert test_stems == ['coffee_00_light', 'rocket_00_light']
    train = find_pairs(tmp_path / 'demo' / 'train')
    assert len(train) == 5
    assert max(read_image_rgb(train[0][0]).shape[:2]) == 48
