"""utils/eval/report.py: the HTML report's content, scores and offline guarantees (in-process).

The command (tools/report.py) with real models, its bad inputs and the page in a headless browser
are in tests/scripts/test_report.py.
"""
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from utils.core.errors import InputError
from utils.data.image_io import read_image_rgb, write_png_atomic
from utils.eval.metrics import calculate_psnr, calculate_ssim
from utils.eval.report import (CSP, ReportInputError, attach_complexity, gather,
                               no_reference_scorer, read_complexity_json, render_html, score,
                               write_report)

MODELS = ('good', 'noisy')


def _restored(root: Path, split: Path) -> list[Path]:
    """Two fake models' folders: 'good' = target + slight noise, 'noisy' = input + more noise."""
    rng = np.random.default_rng(1)
    folders = []
    for name, source, sigma in (('good', 'target', 2), ('noisy', 'input', 12)):
        folder = root / name
        for f in sorted((split / source).glob('*.png')):
            img = read_image_rgb(f).astype(np.float64)
            img = img + rng.normal(0, sigma, img.shape)
            write_png_atomic(folder / f.name, np.clip(np.round(img), 0, 255).astype(np.uint8))
        folders.append(folder)
    return folders


@pytest.fixture
def split(tmp_path, paired_folder):
    return paired_folder(tmp_path / 'split', count=3, size=(24, 32))


def _page(report, out: Path) -> str:
    return render_html(report, out, 'python tools/report.py --input X', preview=64)


def _scores(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="scores">(.*?)</script>',
                                page, re.S).group(1))


def test_one_slider_per_image_and_model_and_scores_match_the_metrics(tmp_path, split):
    folders = _restored(tmp_path, split)
    report = gather(split, folders)
    score(report)
    out = tmp_path / 'page' / 'report.html'
    page = _page(report, out)
    stems = ['im0', 'im1', 'im2']
    assert report.stems == stems and [c.label for c in report.columns] == list(MODELS)
    assert page.count('<input class="slider" type="range"') == len(stems) * len(MODELS)
    for stem in stems:
        for model in MODELS:
            assert f'aria-label="before/after: {model}, {stem}"' in page
    doc = _scores(page)
    assert doc['metrics'] == ['psnr', 'ssim']
    for who, folder in [('rainy input', split / 'input'), *zip(MODELS, folders)]:
        psnrs = []
        for stem in stems:
            img = read_image_rgb(folder / f'{stem}.png')
            ref = read_image_rgb(split / 'target' / f'{stem}.png')
            psnr, ssim = calculate_psnr(img, ref, 0, True), calculate_ssim(img, ref, 0, True)
            assert doc[who]['per_image'][stem] == pytest.approx({'psnr': psnr, 'ssim': ssim},
                                                                abs=1e-12)
            psnrs.append(psnr)
            if who != 'rainy input':          # the caption under each slider shows them
                assert f'<b>{who}</b> PSNR {psnr:.2f} &middot; SSIM {ssim:.4f}' in page
        assert doc[who]['mean']['psnr'] == pytest.approx(np.mean(psnrs), abs=1e-12)
    # The good model wins the means table, in bold.
    assert doc['good']['mean']['psnr'] > doc['noisy']['mean']['psnr']
    assert f'<td><b>{doc["good"]["mean"]["psnr"]:.2f}</b></td>' in page


def test_page_loads_nothing_from_the_network_and_works_from_a_copy(tmp_path, split):
    folders = _restored(tmp_path, split)
    report = gather(split, folders)
    score(report)
    out = write_report(tmp_path / 'page' / 'report.html', _page(report, tmp_path / 'page' /
                                                                'report.html'))
    page = out.read_text()
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in page
    assert "default-src 'none'" in CSP and 'http' not in CSP
    assert not re.search(r'(?i)(https?:)?//[a-z0-9.-]+\.[a-z]', page), 'an absolute URL'
    assert not re.search(r'(?i)<(link|iframe|object|embed)\b', page)
    assert not re.search(r'(?i)<script[^>]*\bsrc=', page)
    assert not re.search(r'(?i)@import|url\(\s*["\']?(https?:)?//', page)
    # Every image the page shows is embedded: each data-p key has its data URI.
    previews = json.loads(re.search(r'id="previews">(.*?)</script>', page, re.S).group(1))
    keys = set(re.findall(r'data-p="(\d+)"', page))
    assert keys and keys <= set(previews)
    assert all(v.startswith('data:image/jpeg;base64,') for v in previews.values())
    # Full-size links are relative and resolve from the page's folder.
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert hrefs and all(not h.startswith(('/', 'file:')) for h in hrefs)
    assert all((out.parent / h).resolve().is_file() for h in hrefs)
    # Copied alone elsewhere, the page still holds every preview (the links just go stale).
    copy = shutil.copy(out, tmp_path / 'elsewhere.html')
    assert Path(copy).read_text() == page


def test_no_targets_uses_the_no_reference_scores(tmp_path, paired_folder):
    split = paired_folder(tmp_path / 'split', count=2, size=(24, 32), targets=False)
    folder = tmp_path / 'out'
    for f in (split / 'input').glob('*.png'):
        write_png_atomic(folder / f.name, read_image_rgb(f) // 2)

    def fake(img):                             # a small image is too small for 'big'
        if img.mean() < 40:
            raise InputError('too small')
        return {'dark': 255 - float(img.mean())}
    calls = []

    def scorer(img):
        calls.append(img.shape)
        row = {'mean': float(img.mean())}
        try:
            row.update(fake(img))
        except InputError:
            row['dark'] = math.nan
        return row
    report = gather(split / 'input', [folder], labels=['half'])
    assert report.targets is None
    score(report, scorer)
    page = _page(report, tmp_path / 'r.html')
    doc = _scores(page)
    assert doc['metrics'] == ['mean', 'dark'] and set(doc['lower_is_better']) == {'mean', 'dark'}
    for stem in ('im0', 'im1'):
        img = read_image_rgb(folder / f'{stem}.png')
        assert doc['half']['per_image'][stem]['mean'] == pytest.approx(img.mean())
    assert len(calls) == 4                      # 2 inputs, 2 outputs
    assert 'no-reference scores' in page and '&darr;' in page and 'PSNR' not in page


def test_real_no_reference_metrics(tmp_path, paired_folder):
    scorer = no_reference_scorer()
    split = paired_folder(tmp_path / 'split', count=1, size=(200, 200), targets=False)
    report = gather(split / 'input', [split / 'input'], labels=['identity'])
    score(report, scorer)
    doc = _scores(_page(report, tmp_path / 'r.html'))
    assert set(doc['metrics']) == {'niqe', 'brisque', 'piqe'}
    assert doc['identity']['per_image'] == doc['rainy input']['per_image']
    assert all(isinstance(v, float) for v in doc['identity']['per_image']['im0'].values())
    tiny = paired_folder(tmp_path / 'tiny', count=1, size=(20, 20), targets=False)
    small = gather(tiny / 'input', [tiny / 'input'], labels=['identity'])
    score(small, scorer)                        # too small for NIQE: a dash and a note
    assert small.input_scores['im0']['niqe'] != small.input_scores['im0']['niqe']   # NaN
    assert any('Too small' in n and 'NIQE (im0)' in n for n in small.notes)


def test_complexity_json_gives_energy_and_firing_rates(tmp_path, split):
    folders = _restored(tmp_path, split)
    report = gather(split, folders)
    manifest_recipe = {'model': 'spikerain-tiny', 'weights': 'w/good.pth'}
    report.columns[0].manifest = {'recipe': manifest_recipe}
    doc = {'size': 256, 'images': '2 images from X', 'weights': 'elsewhere/good.pth',
           'energy_model': 'horowitz', 'energy_convention': {'name': 'horowitz', 'source': 'S'},
           'models': {'spikerain-tiny': {'params': 1234, 'gmacs': 0.5, 'energy_mj': 1.25,
                                         'mean_firing_rate': 0.125, 'size': [256, 256],
                                         'neuron_rates': {'enc.lif': 0.1, 'dec.lif': 0.15}}}}
    (tmp_path / 'c.json').write_text(json.dumps(doc))
    attach_complexity(report, read_complexity_json(tmp_path / 'c.json'))
    assert report.columns[0].efficiency['energy_mj'] == 1.25
    assert report.columns[1].efficiency is None        # no manifest: not matched
    report.columns[1].efficiency_note = 'no manifest'
    page = _page(report, tmp_path / 'r.html')
    assert '<td>1.250</td><td>0.125</td><td>1,234</td><td>0.50</td>' in page
    assert page.count('<rect ') == 2 and 'enc.lif: 0.100' in page
    assert '<td colspan="4" class="note">no manifest</td>' in page
    (tmp_path / 'bad.json').write_text('{"size": 1}')
    with pytest.raises(ReportInputError, match='bad.json: not a tools/complexity.py --json'):
        read_complexity_json(tmp_path / 'bad.json')


@pytest.mark.parametrize('case, message', [
    ('missing', r'--input .*nowhere: no such folder'),
    ('empty', r'--restored .*empty: no images in this folder'),
    ('unmatched', r'--restored .*good: no image named im2\.\* \(an input has it; 1 of 3'),
    ('extra', r'--restored .*good: extra\.png matches no input'),
    ('labels', r'--labels: 1 label\(s\) for 2 --restored folder\(s\)'),
])
def test_bad_folders_are_one_line_errors(tmp_path, split, case, message):
    folders = _restored(tmp_path, split)
    inp, labels = split, None
    if case == 'missing':
        inp = tmp_path / 'nowhere'
    elif case == 'empty':
        (tmp_path / 'empty').mkdir()
        folders[1] = tmp_path / 'empty'
    elif case == 'unmatched':
        (folders[0] / 'im2.png').unlink()
    elif case == 'extra':
        shutil.copy(folders[0] / 'im0.png', folders[0] / 'extra.png')
    else:
        labels = ['one']
    with pytest.raises(ReportInputError, match=message) as err:
        gather(inp, folders, labels)
    assert '\n' not in str(err.value)


def test_size_mismatch_between_input_and_output_is_named(tmp_path, split):
    folders = _restored(tmp_path, split)
    write_png_atomic(folders[1] / 'im1.png', np.zeros((10, 10, 3), np.uint8))
    report = gather(split, folders)
    with pytest.raises(ReportInputError, match=r'noisy/im1\.png: 10x10, but its input'):
        _page(report, tmp_path / 'r.html')
