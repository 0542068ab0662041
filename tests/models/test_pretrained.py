"""The shipped weights load strictly, remove rain from photos they never saw, and leave clean
photos alone.

The held-out set is made here: scikit-image's `coffee` and `rocket` (in the validation split of
`make photos`, never trained on), shrunk to 128 px, under the `light` and `heavy` presets and the
randomized rain, plus the clean photos. Thresholds sit a little under what the shipped files
measured (pretrained_models/README.md), so a regression fails.
"""
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch

from models import build_from_checkpoint, build_model, load_weights
from models.acceleration import optimize_for_inference, supports_fast_path
from support import ROOT
from utils.eval.heldout import heldout_pairs, judge_model
from utils.data.image_io import (list_images, read_image_rgb, read_image_tensor, resize_longest,
                                 tensor_to_uint8)
from utils.inference.restore import restore
from utils.eval.metrics import calculate_psnr

SUFFIX = '_synthetic.pth'
SHIPPED = sorted((ROOT / 'pretrained_models').glob(f'*{SUFFIX}'))
# Per model: (min mean gain on light rain, on heavy rain, min restored-clean PSNR), in dB.
THRESHOLDS = {
    'spikerain-s': (6.0, 11.0, 36.0),        # measured +6.46, +11.90, 37.09 (2026-12-02)
    'vlif-net-tiny': (6.0, 10.5, 34.5),      # measured +6.46, +11.45, 35.28 (2026-12-02)
}


def test_weights_are_shipped():
    names = {p.name[:-len(SUFFIX)] for p in SHIPPED}
    assert {'spikerain-s', 'vlif-net-tiny'} <= names, names
    for path in SHIPPED:
        assert path.stat().st_size < 8e6, f'{path.name} is not small'


@pytest.mark.parametrize('path', SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_weights_load_strictly_into_their_registry_model(path):
    name = path.name[:-len(SUFFIX)]
    model = build_model(name)                  # the registry's own config, e.g. full SpikeRain-S
    load_weights(model, path, strict=True)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in build_from_checkpoint(path).parameters())


@pytest.fixture(scope='module')
def heldout():
    photos = [(n, resize_longest(getattr(skimage.data, n)(), 128)) for n in ('coffee', 'rocket')]
    return heldout_pairs(photos, ('light', 'heavy', 'random', 'clean'), seed=0)


@pytest.mark.parametrize('path', SHIPPED, ids=[p.name for p in SHIPPED])
@pytest.mark.slow
def test_shipped_weights_derain_unseen_photos_and_spare_clean_ones(path, heldout):
    name = path.name[:-len(SUFFIX)]
    light_min, heavy_min, clean_min = THRESHOLDS[name]
    model = optimize_for_inference(build_from_checkpoint(path)) if supports_fast_path(
        build_model(name)) else build_from_checkpoint(path)
    report = judge_model(model, heldout)
    light, heavy = report.kind_summary('light'), report.kind_summary('heavy')
    clean = report.kind_summary('clean')
    assert light['gain'] >= light_min, report.table()
    assert light['worst_gain'] >= 0, report.table()       # no light-rain image made worse
    assert heavy['gain'] >= heavy_min, report.table()
    assert report.kind_summary('random')['gain'] > 0, report.table()
    assert clean['min_restored_psnr'] >= clean_min, report.table()


@pytest.fixture(scope='module')
def demo_test_split(tmp_path_factory, cli) -> Path:
    out = tmp_path_factory.mktemp('demo')
    made = cli('tools/make_demo_data.py', '--out', out)
    assert made.code == 0, made.stderr[-2000:]
    return out / 'test'


@pytest.mark.parametrize('path', [p for p in SHIPPED if supports_fast_path(
    build_model(p.name[:-len(SUFFIX)]))], ids=lambda p: p.name)
@pytest.mark.slow
def test_fast_inference_path_keeps_psnr_with_trained_weights(path, demo_test_split):
    """test.py's fast path (BN folding, fused LIF, channels-last) vs the reference, real images."""
    model = build_from_checkpoint(path).eval()
    fast = optimize_for_inference(model)
    for src in list_images(demo_test_split / 'input'):
        target = read_image_rgb(demo_test_split / 'target' / src.name)
        x = read_image_tensor(src)
        ref = calculate_psnr(tensor_to_uint8(restore(model, x)), target)
        got = calculate_psnr(tensor_to_uint8(restore(fast, x)), target)
        assert abs(got - ref) <= 0.05, f'{src.name}: {got:.3f} vs {ref:.3f} dB'
    assert np.isfinite(ref)
