"""test.py end to end, as a user runs it (subprocess, tiny model, tiny images)."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from support import ROOT
from utils.data.image_io import read_image_rgb
from utils.eval.folders import evaluate_folders

pytestmark = pytest.mark.slow          # every test runs test.py in a subprocess


@pytest.fixture(scope='module')
def run(cli):
    """``python test.py --no_progress ARGS`` (one thread: the test machine's cores are shared,
    and the images are tiny): (code, stdout, stderr)."""
    def run(*args, cwd=ROOT):
        return cli('test.py', '--no_progress', *args, cwd=cwd)
    return run


def _split(folder, sizes=((37, 53), (16, 16))):
    """A benchmark split: input/ and target/ with matching names."""
    rng = np.random.default_rng(0)
    for sub in ('input', 'target'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        clean = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(clean).save(folder / 'target' / f'img{i}.png')
        Image.fromarray(np.clip(clean.astype(int) + 30, 0, 255).astype(np.uint8)).save(
            folder / 'input' / f'img{i}.jpg', quality=95)
    return folder


def test_help_lists_every_option(run):
    code, out, _ = run('--help')
    assert code == 0
    for flag in ('--model', '--weights', '--data_path', '--save_path', '--device', '--tile',
                 '--tile_overlap', '--batch_size', '--target_path', '--overwrite',
                 '--random_weights'):
        assert flag in out


def test_refuses_without_weights_and_into_the_input_folder(tmp_path, run):
    split = _split(tmp_path / 'split')
    code, _, err = run('--model', 'spikerain-tiny', '--data_path', split)
    assert code == 2 and '--random_weights' in err and len(err.strip().splitlines()) == 1
    code, _, err = run('--model', 'spikerain-tiny', '--random_weights', '--data_path', split,
                       '--save_path', split / 'input')
    assert code == 2 and 'input folder' in err and 'Traceback' not in err
    assert sorted(p.name for p in (split / 'input').iterdir()) == ['img0.jpg', 'img1.jpg']


def test_our_checkpoint_restores_a_split_and_evaluates(tmp_path, tiny_weights, run):
    split = _split(tmp_path / 'Rain0')
    code, out, err = run('--weights', tiny_weights('spikerain-tiny'), '--data_path', split,
                         '--target_path', split, cwd=tmp_path)      # a split: its target/
    assert code == 0, err
    save = tmp_path / 'results' / 'spikerain-tiny' / 'Rain0'
    assert sorted(p.name for p in save.glob('*.png')) == ['img0.png', 'img1.png']
    assert read_image_rgb(save / 'img0.png').shape == (37, 53, 3)
    assert re.search(r'restored 2 images in [\d.]+ s \([\d.]+ images/s\)', out)
    _, means = evaluate_folders(save, split / 'target')
    assert f'PSNR {means["psnr"]:.4f} dB, SSIM {means["ssim"]:.4f}' in out
    assert 'no-reference' not in out                 # with targets: only if asked for
    # Random weights with seed 0 are the same model: same outputs, bit for bit.
    code, _, err = run('--model', 'spikerain-tiny', '--random_weights', '--data_path', split,
                       '--save_path', tmp_path / 'rand', '--tile', 16, '--tile_overlap', 4,
                       '--batch_size', 3)
    assert code == 0, err
    assert read_image_rgb(tmp_path / 'rand' / 'img1.png').shape == (16, 16, 3)
    # 16x16 fits in one 16-pixel tile, so the tiled run equals the untiled one exactly.
    assert np.array_equal(read_image_rgb(tmp_path / 'rand' / 'img1.png'),
                          read_image_rgb(save / 'img1.png'))


def test_official_state_dict_needs_model(tmp_path, tiny_weights, run):
    sd_path = tmp_path / 'official.pth'
    torch.save(torch.load(tiny_weights('spikerain-tiny'), weights_only=True)['state_dict'],
               sd_path)
    img = tmp_path / 'one.png'
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    code, _, err = run('--weights', sd_path, '--data_path', img, '--save_path', tmp_path / 'o')
    # The file is what lacks the model name: a runtime error (exit 1), not a bad option.
    assert code == 1 and '--model' in err and 'Traceback' not in err


def test_bad_files_skip_existing_and_overwrite(tmp_path, run):
    folder = tmp_path / 'in'
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(folder / 'small.png')
    Image.fromarray(rng.integers(0, 65535, (9, 6), dtype=np.uint16)).save(folder / 'deep.png')
    (folder / 'zero.png').write_bytes(b'')
    (folder / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really')
    (folder / 'notes.png').write_text('hello')
    args = ('--model', 'spikerain-tiny', '--random_weights', '--data_path', folder,
            '--save_path', tmp_path / 'out')
    code, out, err = run(*args)
    assert code == 1
    for name in ('zero.png', 'broken.jpg', 'notes.png'):
        assert sum(name in line for line in err.splitlines()) >= 1
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()
                  if not p.name.startswith('.')) == ['deep.png', 'small.png']
    assert 'restored 2 images' in out and '3 failed' in out
    stamp = (tmp_path / 'out' / 'small.png').stat().st_mtime_ns
    (folder / 'zero.png').unlink()
    (folder / 'broken.jpg').unlink()
    (folder / 'notes.png').unlink()
    code, out, _ = run(*args)
    assert code == 0 and 'restored 0 images' in out and 'skipped 2 existing' in out
    assert (tmp_path / 'out' / 'small.png').stat().st_mtime_ns == stamp
    code, out, _ = run(*args, '--overwrite')
    assert code == 0 and 'restored 2 images' in out and 'skipped 0' in out


@pytest.mark.parametrize('model', ['spikerain-tiny', 'esdnet-tiny', 'vlif-net-tiny'])
def test_default_is_the_fast_path_and_exact_gives_the_reference(model, tmp_path, run):
    # asserted, not assumed: what a user gets with no flags is the fast inference path
    split = _split(tmp_path / 'split', sizes=((16, 16),))
    code, out, err = run('--model', model, '--random_weights', '--data_path', split / 'input',
                         '--save_path', tmp_path / 'fast')
    assert code == 0, err
    assert f'{model} (fast path)' in out + err
    code, out, err = run('--model', model, '--random_weights', '--data_path', split / 'input',
                         '--save_path', tmp_path / 'exact', '--exact')
    assert code == 0, err
    assert f'{model} (exact path)' in out + err


def test_precision_bf16_runs_the_fast_path_where_the_cpu_has_bf16(tmp_path, run):
    from models.acceleration import bf16_supported
    split = _split(tmp_path / 'split', sizes=((16, 16),))
    base = ('--model', 'spikerain-tiny', '--random_weights', '--data_path', split / 'input')
    code, _, err = run(*base, '--save_path', tmp_path / 'a', '--precision', 'bf16', '--exact')
    assert code == 2 and 'cannot be combined with --exact' in err
    code, out, err = run(*base, '--save_path', tmp_path / 'b', '--precision', 'bf16')
    if bf16_supported():
        assert code == 0, err
        assert 'spikerain-tiny (fast path, bf16)' in out + err
        assert (tmp_path / 'b' / 'img0.png').is_file()
    else:                                   # a CPU without native bf16: one clear line, exit 2
        assert code == 2 and 'no native bfloat16' in err and len(err.strip().splitlines()) == 1


def test_without_targets_prints_input_and_output_no_reference_scores(tmp_path, run):
    """Real rainy photos have no targets: test.py gives NIQE/BRISQUE/PIQE of the inputs and of
    the outputs (means over the images each metric can score)."""
    import skimage.data
    from utils.eval.noreference import score_image
    folder = tmp_path / 'photos'
    folder.mkdir()
    Image.fromarray(skimage.data.astronaut()[100:196, 100:292]).save(folder / 'a.jpg')
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(folder / 'b.png')   # < NIQE's
    args = ('--model', 'spikerain-tiny', '--random_weights', '--data_path', folder)
    code, out, err = run(*args, '--save_path', tmp_path / 'out')
    assert code == 0, err
    before = score_image(read_image_rgb(folder / 'a.jpg'), ['niqe'])['niqe']
    after = score_image(read_image_rgb(tmp_path / 'out' / 'a.png'), ['niqe'])['niqe']
    assert ('no-reference scores of 2 images, rainy input -> output (lower is better): '
            f'NIQE {before:.4f} -> {after:.4f} (over 1 of 2 images; the others are too small '
            'or flat), BRISQUE ') in out
    code, out, err = run(*args, '--save_path', tmp_path / 'out', '--no_reference', 'none')
    assert code == 0 and 'no-reference' not in out
    code, _, err = run(*args, '--save_path', tmp_path / 'out', '--no_reference', 'lpips')
    assert code == 2 and 'niqe, brisque, piqe' in err
