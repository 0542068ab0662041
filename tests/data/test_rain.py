"""Synthetic rain: seeded, brighter streaks, oriented, light sparser than heavy."""
from dataclasses import replace

import numpy as np
import pytest

from utils.data.rain import (RAIN_PRESETS, add_rain, blend_rain, line_kernel, render_streaks,
                             streak_layer)


def _scene(h=64, w=80, seed=0):
    """A mid-grey textured image, so streaks can brighten it everywhere."""
    rng = np.random.default_rng(seed)
    return rng.integers(40, 160, (h, w, 3), dtype=np.uint8)


def test_same_seed_identical_other_seed_different():
    img = _scene()
    for style in RAIN_PRESETS:
        a = add_rain(img, style, seed=7)
        assert np.array_equal(a, add_rain(img, style, seed=7))
        assert not np.array_equal(a, add_rain(img, style, seed=8))
    assert np.array_equal(add_rain(img, 'light', seed=[1, 2, 3]),
                          add_rain(img, 'light', seed=[1, 2, 3]))


@pytest.mark.parametrize('blend', ['screen', 'additive'])
def test_rain_only_brightens(blend):
    img = _scene()
    rainy = add_rain(img, 'heavy', seed=1, blend=blend).astype(int)
    assert rainy.shape == img.shape
    assert (rainy >= img.astype(int)).all()
    assert rainy.mean() > img.mean() + 5
    # Streaks are achromatic: the added light is the same in the three channels (screen on
    # a grey image; allow rounding).
    grey = np.repeat(img[..., :1], 3, axis=2)
    added = add_rain(grey, 'light', seed=1, blend=blend).astype(int) - grey
    assert np.abs(added - added[..., :1]).max() <= 1


def _streak_fraction(style, seeds=range(4)):
    """Share of pixels brightened by > 20 levels, averaged over a few seeds."""
    img = np.full((96, 96, 3), 60, np.uint8)
    return np.mean([(add_rain(img, style, seed=s).astype(int) - 60 > 20).mean() for s in seeds])


def test_light_is_sparser_than_heavy():
    light, heavy = _streak_fraction('light'), _streak_fraction('heavy')
    assert 0.01 < light < heavy
    assert heavy > 2 * light


def test_streaks_follow_the_angle():
    rng = np.random.default_rng(0)
    args = dict(density=0.003, length=20, thickness=0.5, intensity=(0.5, 1.0))
    vertical = streak_layer((96, 96), rng, angle=0, **args)
    horizontal = streak_layer((96, 96), rng, angle=90, **args)

    def corr(a, axis):
        a = a - a.mean()
        return (a * np.roll(a, 3, axis=axis)).mean() / a.var()

    assert corr(vertical, 0) > 0.5 > corr(vertical, 1)
    assert corr(horizontal, 1) > 0.5 > corr(horizontal, 0)


def test_line_kernel_length_and_peak():
    k = line_kernel(length=21, angle=0, thickness=0)
    assert k.max() == pytest.approx(1.0)
    rows = np.nonzero(k.sum(axis=1) > 1e-6)[0]
    cols = np.nonzero(k.sum(axis=0) > 1e-6)[0]
    assert 19 <= np.ptp(rows) + 1 <= 23 and np.ptp(cols) + 1 <= 2


def test_more_density_more_rain():
    style = RAIN_PRESETS['light']
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    sparse = render_streaks((64, 64), style, rng_a)
    dense = render_streaks((64, 64), replace(style, density=style.density * 4), rng_b)
    assert sparse.min() >= 0 and dense.max() <= 1
    assert dense.mean() > 2 * sparse.mean()


def test_bad_arguments():
    img = _scene()
    with pytest.raises(ValueError, match='unknown rain style'):
        add_rain(img, 'drizzle')
    with pytest.raises(ValueError, match='unknown blend'):
        blend_rain(img / 255.0, np.zeros(img.shape[:2]), blend='multiply')
    with pytest.raises(ValueError, match='HxWx3 uint8'):
        add_rain(img.astype(np.float32))


# --- randomized rain ----------------------------------------------------------------------------
from utils.data.rain import (RANDOM_BLENDS, RANDOM_RAIN, add_random_rain, make_rainy,  # noqa: E402
                             sample_rain_params)


def test_random_rain_same_seed_same_rain():
    img = _scene(48, 56)
    for seed in (0, 1, [4, 5, 6]):
        a = add_random_rain(img, seed)
        assert np.array_equal(a, add_random_rain(img, seed))
    assert not np.array_equal(add_random_rain(img, 0), add_random_rain(img, 1))
    assert np.array_equal(make_rainy(img, 'random', 3), add_random_rain(img, 3))
    assert np.array_equal(make_rainy(img, 'heavy', 3), add_rain(img, 'heavy', 3))


def test_random_rain_covers_its_documented_ranges():
    r = RANDOM_RAIN
    draws = [sample_rain_params(np.random.default_rng(s), (100, 100)) for s in range(400)]
    counts = [len(p.layers) for p in draws]
    assert set(counts) == set(range(r.layers[0], r.layers[1] + 1))
    assert {p.blend for p in draws} == set(RANDOM_BLENDS)
    near = [p.layers[0] for p in draws]           # (density, length, width, angle, opacity)
    for k, (lo, hi) in [(1, r.length), (2, r.width), (3, r.angle), (4, r.opacity)]:
        vals = np.array([layer[k] for layer in near])
        if k == 3:                                # the near layer's angle includes its jitter
            lo, hi = lo - r.angle_jitter[1], hi + r.angle_jitter[1]
        assert vals.min() >= lo - 1e-9 and vals.max() <= hi + 1e-9
        span = hi - lo
        assert vals.max() - vals.min() > 0.8 * span, (k, vals.min(), vals.max())
    # Density spans drizzle to downpour (log-uniform, the first layer carries density/sqrt(n)).
    dens = np.array([p.layers[0][0] * len(p.layers) ** 0.5 for p in draws])
    assert dens.min() < 2 * r.density[0] and dens.max() > r.density[1] / 2
    assert any(p.drops > 0 for p in draws) and any(p.drops == 0 for p in draws)
    assert max(p.haze for p in draws) > 0.5 * r.haze[1]
    assert max(p.motion_blur for p in draws) > 0.8 * r.motion_blur[1]
    # Far layers are shorter, thinner and fainter than near ones.
    deep = [p for p in draws if len(p.layers) >= 3]
    assert all(p.layers[-1][1] <= p.layers[0][1] and p.layers[-1][4] < p.layers[0][4]
               for p in deep)


def test_random_rain_changes_the_image_by_varying_amounts():
    img = _scene(64, 64)
    diffs = [np.abs(add_random_rain(img, s).astype(int) - img).mean() for s in range(30)]
    assert min(diffs) < 3 < 15 < max(diffs)        # drizzle ... downpour
