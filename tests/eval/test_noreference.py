"""NIQE, BRISQUE and PIQE (utils/eval/noreference.py): equal to reference implementations within
0.01, clean photos score better than noisy or rainy ones, deterministic, one-line errors."""
import importlib.util
import json
import math

import numpy as np
import pytest
import skimage
import skimage.data

from support import ROOT
from utils.core.errors import InputError
from utils.data.rain import add_rain
from utils.eval.noreference import (METRICS, NO_REFERENCE, NoReferenceError,
                                    NoReferenceSizeError, parse_metrics, score_image)

FIXTURES = ROOT / 'tests' / 'fixtures' / 'noreference'
TOLERANCE = 0.01                 # issue 24: equal to the reference within 0.01


@pytest.fixture(scope='module')
def reference():
    """The test images (made again by make_reference.images()) and the reference scores."""
    spec = importlib.util.spec_from_file_location('noreference_make_reference',
                                                  FIXTURES / 'make_reference.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = json.loads((FIXTURES / 'reference.json').read_text())
    return module, module.images(), doc['images']


def test_equal_to_the_reference_implementations(reference):
    """BasicSR 1.4.2 (NIQE), OpenCV contrib 5.1 (BRISQUE) and pypiqe 1.2 (PIQE), run once in a
    scratch environment, on 8 images: clean, noisy, blurred, streaked, odd-sized."""
    module, images, rows = reference
    assert len(rows) >= 5
    misses = []
    for name, row in rows.items():
        img = images[name]
        assert module.digest(img) == row['sha256_16'], \
            (f'{name}: the test image differs from the one scored (scikit-image '
             f'{skimage.__version__}); remake reference.json with make_reference.py')
        for metric in METRICS:
            ours = NO_REFERENCE[metric](img)
            if not abs(ours - row[metric]) <= TOLERANCE:
                misses.append(f'{name} {metric}: ours {ours:.4f}, reference {row[metric]:.4f}')
    assert not misses, '; '.join(misses)


def _photos():
    astronaut = np.ascontiguousarray(skimage.data.astronaut()[:384, :384])
    chelsea = np.ascontiguousarray(skimage.data.chelsea()[:288, :384])
    return {'astronaut': astronaut, 'chelsea': chelsea}


@pytest.mark.parametrize('metric', METRICS)
def test_clean_scores_better_than_noisy_or_rainy(metric):
    """Lower is better: clean < light rain < heavy rain, and clean < Gaussian noise (sigma 25)."""
    fn = NO_REFERENCE[metric]
    for name, img in _photos().items():
        rng = np.random.default_rng(0)
        noisy = np.clip(img + rng.normal(0, 25, img.shape), 0, 255).astype(np.uint8)
        clean, light, heavy = fn(img), fn(add_rain(img, 'light', 0)), fn(add_rain(img, 'heavy', 0))
        assert clean < light < heavy, (name, clean, light, heavy)
        assert clean < fn(noisy), (name, clean, fn(noisy))


def test_deterministic():
    img = _photos()['chelsea']
    first = score_image(img)
    assert score_image(img.copy()) == first
    assert all(math.isfinite(v) for v in first.values())


@pytest.mark.parametrize('metric, small, smallest', [
    ('niqe', (96, 150), (96, 192)),            # two 96x96 blocks
    ('brisque', (13, 40), (14, 14)),           # the 7x7 window at half scale
    ('piqe', (40, 15), (16, 16)),              # one 16x16 block
])
def test_too_small_is_one_line(metric, small, smallest):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (*small, 3), dtype=np.uint8)
    with pytest.raises(NoReferenceSizeError) as err:
        NO_REFERENCE[metric](img)
    text = str(err.value)
    assert '\n' not in text and f'{small[1]}x{small[0]}' in text and metric.upper() in text
    assert isinstance(err.value, InputError)              # run_main: one line, exit 1
    assert math.isfinite(NO_REFERENCE[metric](rng.integers(0, 256, (*smallest, 3), np.uint8)))
    with pytest.raises(NoReferenceSizeError, match=r'^photo\.png: '):
        score_image(img, [metric], name='photo.png')
    assert math.isnan(score_image(img, [metric], skip_small=True)[metric])


def test_flat_image_niqe_is_one_line_and_the_others_score_it():
    flat = np.full((192, 192, 3), 90, np.uint8)
    with pytest.raises(NoReferenceError, match='NIQE is undefined here') as err:
        NO_REFERENCE['niqe'](flat)
    assert '\n' not in str(err.value)
    scores = score_image(flat, skip_small=True)
    assert math.isnan(scores['niqe']) and scores['piqe'] == 100.0


def test_parse_metrics():
    assert parse_metrics('all') == list(METRICS) and parse_metrics('none') == []
    assert parse_metrics(' PIQE,niqe,piqe') == ['piqe', 'niqe']
    for bad in ('', 'niqe,ssim', 'all,niqe'):
        with pytest.raises(ValueError, match='niqe, brisque, piqe, all or none'):
            parse_metrics(bad)


def test_wrong_image_type_is_refused():
    with pytest.raises(ValueError, match='uint8 HxWx3'):
        NO_REFERENCE['piqe'](np.zeros((32, 32), np.uint8))
