"""Rain families: deterministic per seed, inside their documented ranges, leave-one-family-out."""
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import skimage.data

from utils.data.datasets import CleanPhotoRainDataset, DatasetError
from utils.eval.heldout import HeldoutPairSet, family_kinds, heldout_pairs
from utils.data.image_io import resize_longest, write_png_atomic
from utils.eval.metrics import calculate_psnr
from utils.data.rain import (CAMERA, FAMILIES, FAMILY_LEVELS, composite, family_of, family_pair,
                             make_rain_pair, parse_rain_kinds)


def _photo(h=96, w=112, seed=0):
    """A smooth photo-like scene (gradient + blobs), mid-grey so rain shows in every blend."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 70 + 80 * yy[..., None] + 40 * np.sin(6 * xx[..., None] + rng.uniform(0, 3, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


NO_CAMERA = replace(CAMERA, defocus_probability=0.0, noise_probability=0.0, jpeg_probability=0.0)


@pytest.mark.parametrize('family', FAMILIES)
def test_each_family_is_deterministic_per_seed(family):
    img = _photo()
    a = family_pair(img, family, 0.5, seed=[3, 4])
    b = family_pair(img, family, 0.5, seed=[3, 4])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = family_pair(img, family, 0.5, seed=[3, 5])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == img.shape and a[0].dtype == np.uint8


@pytest.mark.parametrize('family', FAMILIES)
def test_heavier_rain_changes_the_photo_more(family):
    """Over seeds, heavy rain leaves a lower input PSNR than light; both in the ranges
    docs/data.md gives (light about 24-40 dB, heavy about 10-30 dB on photos)."""
    img = resize_longest(skimage.data.astronaut(), 128)      # a real photo: drops refract it

    def mean_psnr(level):
        return np.mean([min(calculate_psnr(*make_rain_pair(img, f'{family}:{level}', s)), 60)
                        for s in range(6)])

    light, heavy = mean_psnr('light'), mean_psnr('heavy')
    assert heavy < light - 3, (family, light, heavy)
    assert 20 < light < 45 and 8 < heavy < 32, (family, light, heavy)


@pytest.mark.parametrize('family', FAMILIES)
def test_without_camera_effects_the_target_is_the_photo(family):
    img = _photo()
    rainy, target = family_pair(img, family, 0.8, seed=1, camera=NO_CAMERA)
    assert np.array_equal(target, img)
    assert np.abs(rainy.astype(int) - img).mean() > 1


def test_camera_noise_is_shared_by_input_and_target():
    """One noise realization in both: the model is taught to keep grain, not to remove it."""
    img = _photo()
    noisy = replace(NO_CAMERA, noise_probability=1.0, read_noise=(0.03, 0.03))
    rainy, target = family_pair(img, 'veil', 0.0, seed=2, camera=noisy)
    assert not np.array_equal(target, img)
    clean_rain, _ = family_pair(img, 'veil', 0.0, seed=2, camera=NO_CAMERA)
    # veil at heaviness 0 is nearly nothing, so input and target carry the same noise
    assert np.abs(rainy.astype(int) - target).mean() < np.abs(target.astype(int) - img).mean()


def test_blends_brighten_or_lay_colour_over():
    clean = np.full((8, 8, 3), 0.9, np.float32)
    layer = np.full((8, 8), 0.5, np.float32)
    grey = np.full(3, 0.4, np.float32)
    assert (composite(clean, layer, 'screen', grey) >= clean).all()
    assert (composite(clean, layer, 'additive', grey) >= clean).all()
    assert (composite(clean, layer, 'alpha', grey) < clean).all()       # rain darker than sky
    with pytest.raises(ValueError, match='unknown blend'):
        composite(clean, layer, 'multiply', grey)


def test_levels_are_sub_ranges_of_heaviness():
    for lo, hi in FAMILY_LEVELS.values():
        assert 0 <= lo < hi <= 1
    assert FAMILY_LEVELS['light'][1] < FAMILY_LEVELS['heavy'][0]
    with pytest.raises(ValueError, match='heaviness'):
        family_pair(_photo(), 'lens', 1.5)
    with pytest.raises(ValueError, match='unknown rain family'):
        family_pair(_photo(), 'snow', 0.5)


def test_kinds_expand_and_hold_out():
    assert parse_rain_kinds('families') == FAMILIES
    assert family_of('light') == family_of('random') == 'streaks'
    assert family_of('lens:heavy') == 'lens'
    kept = parse_rain_kinds('families,random,light,lens:heavy', holdout='lens')
    assert 'lens' not in {family_of(k) for k in kept} and 'random' in kept
    assert 'light' not in parse_rain_kinds('light,random,veil', holdout='streaks')
    with pytest.raises(ValueError, match='nothing left'):
        parse_rain_kinds('lens,lens:light', holdout='lens')
    with pytest.raises(ValueError, match='held-out family'):
        parse_rain_kinds('families', holdout='hail')
    with pytest.raises(ValueError, match='unknown'):
        parse_rain_kinds('lens:medium')


def _photos(folder, n=3):
    for i in range(n):
        write_png_atomic(folder / f'p{i}.png', _photo(80, 96, seed=i))
    return folder


@pytest.mark.parametrize('holdout', ['lens', 'streaks'])
def test_leave_one_out_never_draws_the_held_out_family(tmp_path, holdout):
    ds = CleanPhotoRainDataset(_photos(tmp_path), patch_size=24,
                               rain='families,random,light,heavy', clean_fraction=0.1,
                               holdout=holdout, samples_per_photo=60)
    drawn = Counter(family_of(ds.make_pair(i)[2]) for i in range(len(ds))
                    if ds.make_pair(i)[2] != 'none')
    assert holdout not in drawn
    assert set(drawn) == set(FAMILIES) - {holdout}, drawn
    with pytest.raises(DatasetError, match='nothing left'):
        CleanPhotoRainDataset(tmp_path, rain='lens', holdout='lens')


def test_held_out_validation_pairs_are_of_that_family_only(tmp_path):
    val = HeldoutPairSet(_photos(tmp_path, 2), family_kinds('particles'), size=48, seed=1)
    assert len(val) == 4
    stems = [val[i][2] for i in range(len(val))]
    assert all(s.endswith(('particles:light', 'particles:heavy')) for s in stems)
    inp, tgt, _ = val[1]
    assert inp.shape == tgt.shape == (3, 40, 48) and not np.array_equal(inp, tgt)
    # the same pairs as the held-out check makes for those kinds
    pairs = heldout_pairs([('p0', _photo(80, 96, 0))], family_kinds('particles'), 1)
    assert len(pairs) == 2
