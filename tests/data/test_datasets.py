"""Paired datasets: pairing by name, clear errors, conversion, deterministic crops, presets."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from utils.data.datasets import (DATASET_PRESETS, DatasetError, PairedImageDataset,
                                 PairedPatchDataset, find_pairs, pad_to_min_size,
                                 resolve_split_dir, summarize_pairs)
from utils.data.image_io import write_png_atomic


def _img(h, w, value=None, seed=0):
    if value is not None:
        return np.full((h, w, 3), value, np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_pairs(root: Path, stems, h=24, w=32) -> Path:
    """input = random image, target = 255 - input (so alignment is checkable)."""
    for i, stem in enumerate(stems):
        inp = _img(h, w, seed=i)
        write_png_atomic(root / 'input' / f'{stem}.png', inp)
        write_png_atomic(root / 'target' / f'{stem}.png', 255 - inp)
    return root


# ------------------------------------------------------------------------------ pairing
def test_pairs_matched_by_name_not_position(tmp_path):
    stems = ['rain-10', 'b', 'rain-2', 'a', 'rain-1']
    rng = np.random.default_rng(1)
    value = {stem: 40 * i for i, stem in enumerate(stems)}
    for stem in stems:
        write_png_atomic(tmp_path / 'input' / f'{stem}.png', _img(4, 4, value=value[stem]))
    # Targets written in another order and with another extension; a sort-position pairing
    # would misalign them.
    (tmp_path / 'target').mkdir()
    for stem in rng.permutation(stems):
        Image.fromarray(_img(4, 4, value=value[stem])).save(tmp_path / 'target' / f'{stem}.bmp')
    pairs = find_pairs(tmp_path)
    assert [p[0].stem for p in pairs] == ['a', 'b', 'rain-1', 'rain-2', 'rain-10']
    for inp, tgt in pairs:
        assert inp.stem == tgt.stem and tgt.suffix == '.bmp'
    ds = PairedImageDataset(tmp_path)
    for i in range(len(ds)):
        x, y, stem = ds[i]
        assert torch.equal(x, y) and stem == pairs[i][0].stem


def test_hidden_files_ignored(tmp_path):
    make_pairs(tmp_path, ['1', '2'])
    (tmp_path / 'input' / '.DS_Store').write_bytes(b'junk')
    (tmp_path / 'target' / 'Thumbs.db').write_bytes(b'junk')
    assert len(find_pairs(tmp_path)) == 2


@pytest.mark.parametrize('case, expected', [
    ('no_input', 'input'),
    ('no_target', 'target'),
    ('empty_input', 'input: folder has no images'),
    ('missing_target', 'input/2.png: no matching target'),
    ('missing_input', 'target/3.png: no matching input'),
    ('not_image', 'notes.txt: not an image file'),
    ('duplicate', 'same name'),
])
def test_layout_errors_name_the_file(tmp_path, case, expected):
    make_pairs(tmp_path, ['1', '2'])
    if case == 'no_input':
        for p in (tmp_path / 'input').iterdir():
            p.unlink()
        (tmp_path / 'input').rmdir()
    elif case == 'no_target':
        for p in (tmp_path / 'target').iterdir():
            p.unlink()
        (tmp_path / 'target').rmdir()
    elif case == 'empty_input':
        for p in (tmp_path / 'input').iterdir():
            p.unlink()
    elif case == 'missing_target':
        (tmp_path / 'target' / '2.png').unlink()
    elif case == 'missing_input':
        write_png_atomic(tmp_path / 'target' / '3.png', _img(4, 4))
    elif case == 'not_image':
        (tmp_path / 'input' / 'notes.txt').write_text('hello')
    elif case == 'duplicate':
        Image.fromarray(_img(24, 32)).save(tmp_path / 'input' / '1.bmp')
    with pytest.raises(DatasetError) as err:
        find_pairs(tmp_path)
    msg = str(err.value)
    assert expected in msg and '\n' not in msg


def test_missing_folder_and_split_hint(tmp_path):
    with pytest.raises(DatasetError, match='dataset folder not found'):
        find_pairs(tmp_path / 'nope')
    make_pairs(tmp_path / 'train', ['1'])
    with pytest.raises(DatasetError, match='pass .*train'):
        find_pairs(tmp_path)


def test_corrupt_image_named_lazily_and_with_verify(tmp_path):
    make_pairs(tmp_path, ['1', '2'])
    bad = tmp_path / 'target' / '2.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
    pairs = find_pairs(tmp_path)                 # lazy: names only
    assert len(pairs) == 2
    with pytest.raises(DatasetError, match=r'target/2\.png'):
        find_pairs(tmp_path, verify=True)
    ds = PairedPatchDataset(tmp_path, patch_size=8)
    ds[0]
    with pytest.raises(DatasetError, match=r'target/2\.png'):
        ds[1]


def test_size_mismatch_names_both_files(tmp_path):
    make_pairs(tmp_path, ['1'])
    write_png_atomic(tmp_path / 'target' / '1.png', _img(24, 30))
    for ds in (PairedPatchDataset(tmp_path, 8), PairedImageDataset(tmp_path)):
        with pytest.raises(DatasetError) as err:
            ds[0]
        assert 'input/1.png (32x24)' in str(err.value)
        assert 'target/1.png (30x24)' in str(err.value)


def test_gray_rgba_16bit_converted_to_rgb(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    (tmp_path / 'input').mkdir()
    Image.fromarray(gray, 'L').save(tmp_path / 'input' / 'g.png')
    rgba = np.dstack([np.stack([gray] * 3, -1), np.full((6, 8), 7, np.uint8)])
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'input' / 'a.png')
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / 'input' / 's.png')
    assert Image.open(tmp_path / 'input' / 's.png').mode.startswith('I')
    for stem in ('g', 'a', 's'):
        write_png_atomic(tmp_path / 'target' / f'{stem}.png', np.stack([gray] * 3, -1))
    ds = PairedImageDataset(tmp_path)
    for i in range(3):
        x, y, stem = ds[i]
        assert x.shape == (3, 6, 8) and x.dtype == torch.float32
        assert torch.equal(x, y), stem
    px, py = PairedPatchDataset(tmp_path, patch_size=4)[2]
    assert px.shape == (3, 4, 4) and torch.equal(px, py)


# ------------------------------------------------------------------------------ patches
def test_patch_shape_range_and_alignment(tmp_path):
    make_pairs(tmp_path, ['1', '2', '3'], h=40, w=50)
    ds = PairedPatchDataset(tmp_path, patch_size=16, augment=True, seed=3)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == y.shape == (3, 16, 16) and x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1
        # target = 255 - input survives the same crop/flip/rotation of both
        assert torch.allclose(x + y, torch.ones_like(x))


def test_crop_is_function_of_seed_epoch_index(tmp_path):
    make_pairs(tmp_path, ['1', '2', '3', '4'], h=48, w=64)
    a = PairedPatchDataset(tmp_path, patch_size=16, seed=5)
    b = PairedPatchDataset(tmp_path, patch_size=16, seed=5)
    a.set_epoch(3)
    b.set_epoch(3)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(4))
    b.set_epoch(4)
    assert any(not torch.equal(a[i][0], b[i][0]) for i in range(4))
    c = PairedPatchDataset(tmp_path, patch_size=16, seed=6)
    c.set_epoch(3)
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(4))
    # Reading order does not matter: index 2 read first gives what it gives after the others.
    fresh = PairedPatchDataset(tmp_path, patch_size=16, seed=5)
    fresh.set_epoch(3)
    assert torch.equal(fresh[2][0], a[2][0])


def test_no_augment_means_plain_crop(tmp_path):
    make_pairs(tmp_path, ['1'], h=20, w=20)
    ds = PairedPatchDataset(tmp_path, patch_size=20, augment=False)
    x, _ = ds[0]
    full, _, _ = PairedImageDataset(tmp_path)[0]
    assert torch.equal(x, full)


def _epochs(ds, loader, epochs):
    out = []
    for e in epochs:
        ds.set_epoch(e)
        out.append(torch.cat([x for x, _ in loader]))
    return out


def test_same_samples_with_any_number_of_workers(tmp_path):
    make_pairs(tmp_path, [str(i) for i in range(6)], h=30, w=30)
    ds = PairedPatchDataset(tmp_path, patch_size=12, seed=1)
    ref = _epochs(ds, DataLoader(ds, batch_size=2, shuffle=False, num_workers=0), [0, 1])
    assert not torch.equal(ref[0], ref[1])
    ds2 = PairedPatchDataset(tmp_path, patch_size=12, seed=1)
    loader = DataLoader(ds2, batch_size=2, shuffle=False, num_workers=2, persistent_workers=True)
    got = _epochs(ds2, loader, [0, 1])
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


@pytest.mark.parametrize('h, w, mode', [(10, 14, 'reflect'), (3, 40, 'edge'), (1, 1, 'edge')])
def test_small_images_padded(tmp_path, h, w, mode):
    img = _img(h, w, seed=2)
    padded = pad_to_min_size(img, 16)
    assert padded.shape == (max(h, 16), max(w, 16), 3)
    assert np.array_equal(padded[:h, :w], img)
    assert np.array_equal(padded, np.pad(img, ((0, max(0, 16 - h)), (0, max(0, 16 - w)), (0, 0)),
                                          mode=mode))
    make_pairs(tmp_path, ['s'], h=h, w=w)
    x, y = PairedPatchDataset(tmp_path, patch_size=16)[0]
    assert x.shape == (3, 16, 16) and torch.allclose(x + y, torch.ones_like(x))


def test_bad_patch_size(tmp_path):
    make_pairs(tmp_path, ['1'])
    with pytest.raises(DatasetError, match='patch_size'):
        PairedPatchDataset(tmp_path, patch_size=0)


def test_summarize_pairs(tmp_path):
    make_pairs(tmp_path, ['1', '2'], h=10, w=12)
    write_png_atomic(tmp_path / 'input' / '3.png', _img(8, 8, value=100))
    write_png_atomic(tmp_path / 'target' / '3.png', _img(8, 8, value=90))
    s = summarize_pairs(find_pairs(tmp_path))
    assert s.pairs == 3 and s.min_size == (8, 8) and s.max_size == (12, 10)
    assert s.distinct_sizes == 2 and s.mean_abs_diff > 10


# ------------------------------------------------------------------------------ presets
def test_presets_follow_the_protocol_table():
    assert set(DATASET_PRESETS) == {'Rain200L', 'Rain200H', 'Rain1200', 'Rain12', 'RW_Rain'}
    assert (DATASET_PRESETS['Rain200H'].train_pairs, DATASET_PRESETS['Rain200H'].test_pairs) \
        == (1800, 200)
    assert DATASET_PRESETS['Rain1200'].train_pairs == 12000
    assert not DATASET_PRESETS['Rain12'].has_train
    assert not DATASET_PRESETS['RW_Rain'].has_ground_truth


def test_resolve_split_dir(tmp_path):
    (tmp_path / 'Rain200H' / 'train').mkdir(parents=True)
    (tmp_path / 'rain200l' / 'test').mkdir(parents=True)
    assert resolve_split_dir('rain200h', tmp_path, 'train') == tmp_path / 'Rain200H' / 'train'
    assert resolve_split_dir('Rain200L', tmp_path, 'test') == tmp_path / 'rain200l' / 'test'
    with pytest.raises(DatasetError, match='dataset_load.py prepare --convention jorder'):
        resolve_split_dir('Rain200H', tmp_path, 'test')
    with pytest.raises(DatasetError, match='no training split'):
        resolve_split_dir('Rain12', tmp_path, 'train')
    with pytest.raises(DatasetError, match='unknown dataset'):
        resolve_split_dir('Rain999', tmp_path, 'train')
    with pytest.raises(DatasetError, match='unknown split'):
        resolve_split_dir('Rain200H', tmp_path, 'val')


# --- pairs made from clean photos --------------------------------------------------------------
from utils.data.datasets import CleanPhotoRainDataset, MixedTrainingSet  # noqa: E402


def _photos(tmp_path, n=3):
    from PIL import Image
    folder = tmp_path / 'photos'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (90 + 10 * i, 120, 3), dtype=np.uint8)).save(
            folder / f'p{i}.png')
    return folder


def test_clean_photo_pairs_are_a_function_of_seed_epoch_index(tmp_path):
    ds = CleanPhotoRainDataset(_photos(tmp_path), patch_size=32, rain='random,light,heavy',
                               seed=5, samples_per_photo=4, clean_fraction=0.2)
    assert len(ds) == 12
    ds.set_epoch(2)
    first = [ds[i] for i in range(len(ds))]
    again = CleanPhotoRainDataset(ds.folder, 32, 'random,light,heavy', seed=5,
                                  samples_per_photo=4, clean_fraction=0.2)
    again.set_epoch(2)
    for i, (a, b) in enumerate(first):
        c, d = again[i]
        assert a.shape == (3, 32, 32) and torch.equal(a, c) and torch.equal(b, d)
    again.set_epoch(3)
    assert not torch.equal(again[0][1], first[0][1])
    kinds = {ds.make_pair(i, e)[2] for i in range(12) for e in range(6)}
    assert kinds == {'none', 'random', 'light', 'heavy'}
    rainy, clean, kind = next(ds.make_pair(i, 0) for i in range(12)
                              if ds.make_pair(i, 0)[2] == 'none')
    assert np.array_equal(rainy, clean)


def test_clean_photo_pairs_same_with_workers(tmp_path):
    ds = CleanPhotoRainDataset(_photos(tmp_path), patch_size=24, seed=1, samples_per_photo=2)
    ds.set_epoch(1)
    plain = [torch.cat(b) for b in torch.utils.data.DataLoader(ds, batch_size=2)]
    workers = [torch.cat(b) for b in torch.utils.data.DataLoader(ds, batch_size=2,
                                                                  num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(plain, workers))


def test_clean_photo_bad_settings(tmp_path):
    folder = _photos(tmp_path, 1)
    with pytest.raises(DatasetError, match='rain kind drizzle unknown'):
        CleanPhotoRainDataset(folder, rain='random,drizzle')
    with pytest.raises(DatasetError, match='clean photo folder not found'):
        CleanPhotoRainDataset(tmp_path / 'nope')
    with pytest.raises(DatasetError, match='clean_fraction'):
        CleanPhotoRainDataset(folder, clean_fraction=1.0)


def test_mixed_training_set_reaches_every_part(tmp_path):
    photos = CleanPhotoRainDataset(_photos(tmp_path), patch_size=16, samples_per_photo=1)
    mixed = MixedTrainingSet([photos, photos])
    mixed.set_epoch(7)
    assert photos.epoch == 7 and len(mixed) == 6
