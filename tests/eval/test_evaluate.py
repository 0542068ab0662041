"""Folder evaluation (utils/eval/folders.py): pairing by stem, rows and means, report files."""
import json
import math
import sys
import types

import numpy as np
import pytest
from PIL import Image

from utils.eval.folders import (PairingError, evaluate_folders, mean_metrics, pair_by_stem,
                                pair_with_targets, psnr_text, write_csv_report, write_json_report)
from utils.eval.metrics import LPIPSMetric, calculate_psnr


def _rng_image(seed, h=40, w=52):
    """A photo-like uint8 image: smooth structure plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] * [1, 0.8, 0.6]
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def test_pairing_by_stem_and_clear_errors(tmp_path):
    r, t = tmp_path / 'restored', tmp_path / 'target'
    _save(r / 'a.png', _rng_image(8))
    _save(t / 'a.jpg', _rng_image(8))
    pairs = pair_by_stem(r, t)
    assert [(p.name, q.name) for p, q in pairs] == [('a.png', 'a.jpg')]
    assert pair_by_stem(r, tmp_path) == pairs          # a split folder: its target/ is used
    _save(r / 'b.png', _rng_image(9))
    with pytest.raises(PairingError, match=r'b\.png: no target image named b'):
        pair_by_stem(r, t)
    _save(t / 'b.png', _rng_image(9))
    _save(t / 'c.png', _rng_image(9))
    with pytest.raises(PairingError, match=r'c\.png: no restored image named c'):
        pair_by_stem(r, t)
    _save(r / 'c.png', _rng_image(9))
    _save(r / 'c.bmp', _rng_image(9))
    with pytest.raises(PairingError, match="share the name 'c'"):
        pair_by_stem(r, t)
    with pytest.raises(PairingError, match='folder not found'):
        pair_by_stem(tmp_path / 'nope', t)
    with pytest.raises(PairingError, match='one target image for 2'):
        pair_with_targets([r / 'a.png', r / 'b.png'], t / 'a.jpg')


def test_evaluate_folders_rows_means_and_size_mismatch(tmp_path):
    r, t = tmp_path / 'restored', tmp_path / 'target'
    imgs = {n: (_rng_image(30 + i), _rng_image(40 + i)) for i, n in enumerate(['x', 'y', 'z'])}
    for n, (a, b) in imgs.items():
        _save(r / f'{n}.png', a)
        _save(t / f'{n}.png', b)
    rows, means = evaluate_folders(r, t)
    assert [row['name'] for row in rows] == ['x', 'y', 'z']
    psnrs = [calculate_psnr(*imgs[n]) for n in 'xyz']
    assert [row['psnr'] for row in rows] == pytest.approx(psnrs, abs=1e-12)
    assert means['psnr'] == pytest.approx(np.mean(psnrs), abs=1e-12)
    assert means['ssim'] == pytest.approx(np.mean([row['ssim'] for row in rows]), abs=1e-12)
    assert means['images'] == 3
    _save(t / 'y.png', _rng_image(41, h=30))
    with pytest.raises(ValueError, match=r'y\.png: size 52x40 differs from its target'):
        evaluate_folders(r, t)


def test_reports_round_trip(tmp_path):
    rows = [dict(name='a', restored='r/a.png', target='t/a.png', psnr=math.inf, ssim=1.0),
            dict(name='b', restored='r/b.png', target='t/b.png', psnr=30.0, ssim=0.5)]
    means = dict(psnr=math.inf, ssim=0.75, images=2)
    write_json_report(tmp_path / 'r.json', rows, means, dict(test_y=True))
    doc = json.loads((tmp_path / 'r.json').read_text())
    assert doc['means'] == {'psnr': 'inf', 'ssim': 0.75, 'images': 2}
    assert doc['images'][1]['psnr'] == 30.0 and doc['settings'] == {'test_y': True}
    write_csv_report(tmp_path / 'r.csv', rows, means)
    lines = (tmp_path / 'r.csv').read_text().splitlines()
    assert lines[0] == 'name,psnr,ssim,restored,target'
    assert lines[2].startswith('b,30.0,0.5,') and lines[3] == 'mean,inf,0.75,,'
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


def test_lpips_values_reach_the_rows(monkeypatch, tmp_path):
    import torch

    class FakeLPIPS(torch.nn.Module):           # mean absolute difference stands in for LPIPS
        def __init__(self, **kwargs):
            super().__init__()

        def forward(self, a, b):
            return (a - b).abs().mean()

    monkeypatch.setitem(sys.modules, 'lpips', types.SimpleNamespace(LPIPS=FakeLPIPS))
    a, b = _rng_image(50), _rng_image(51)
    _save(tmp_path / 'r' / 'a.png', a)
    _save(tmp_path / 't' / 'a.png', b)
    rows, means = evaluate_folders(tmp_path / 'r', tmp_path / 't', lpips=LPIPSMetric())
    expected = np.abs(a / 255.0 * 2 - b / 255.0 * 2).mean()
    assert rows[0]['lpips'] == pytest.approx(expected, abs=1e-5)
    assert means['lpips'] == rows[0]['lpips']


def test_identical_images_are_counted_and_named_instead_of_a_bare_inf():
    rows = [dict(name='same', psnr=math.inf, ssim=1.0), dict(name='b', psnr=30.0, ssim=0.5),
            dict(name='c', psnr=32.0, ssim=0.7)]
    means = mean_metrics(rows)
    assert means['psnr'] == math.inf and means['images'] == 3
    assert means['identical'] == 1 and means['identical_names'] == ['same']
    assert means['psnr_finite'] == pytest.approx(31.0)
    text = psnr_text(means)
    assert text.startswith('PSNR inf (1 of 3 images identical') and '31.0000 dB' in text
    assert psnr_text(mean_metrics(rows[1:])) == 'PSNR 31.0000 dB'
