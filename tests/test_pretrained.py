"""The shipped demo weights load and really derain the demo test split."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from models import build_from_checkpoint
from models.acceleration import optimize_for_inference, supports_fast_path
from utils.image_io import list_images, read_image_rgb, read_image_tensor, tensor_to_uint8
from utils.inference import restore
from utils.metrics import calculate_psnr, calculate_ssim

SHIPPED = sorted((ROOT / 'pretrained_models').glob('*_demo.pth'))
MIN_PSNR_GAIN_DB = 1.0


def test_weights_are_shipped():
    assert SHIPPED, 'no pretrained_models/*_demo.pth'
    for path in SHIPPED:
        assert path.stat().st_size < 8e6, f'{path.name} is not small'


@pytest.fixture(scope='module')
def demo_test_split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('demo')
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_demo_data.py'), '--out', str(out)],
                   check=True, capture_output=True)
    return out / 'test'


@pytest.mark.parametrize('path', SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_weights_load_as_their_registry_name(path):
    model = build_from_checkpoint(path, path.name[:-len('_demo.pth')])
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize('path', SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_weights_raise_psnr_on_demo_test_split(path, demo_test_split):
    model = build_from_checkpoint(path).eval()
    rainy_psnr, restored_psnr, rainy_ssim, restored_ssim = [], [], [], []
    for src in list_images(demo_test_split / 'input'):
        target = read_image_rgb(demo_test_split / 'target' / src.name)
        out = tensor_to_uint8(restore(model, read_image_tensor(src)))
        rainy = read_image_rgb(src)
        rainy_psnr.append(calculate_psnr(rainy, target))
        restored_psnr.append(calculate_psnr(out, target))
        rainy_ssim.append(calculate_ssim(rainy, target))
        restored_ssim.append(calculate_ssim(out, target))
    n = len(rainy_psnr)
    assert n >= 3
    gain = sum(restored_psnr) / n - sum(rainy_psnr) / n
    assert gain >= MIN_PSNR_GAIN_DB, f'{path.name}: PSNR gain only {gain:.2f} dB'
    assert sum(restored_ssim) > sum(rainy_ssim)


@pytest.mark.parametrize('path', SHIPPED, ids=[p.name for p in SHIPPED])
def test_fast_inference_path_keeps_psnr_with_trained_weights(path, demo_test_split):
    """test.py --fast (BN folding, fused LIF, channels-last) vs the reference path, real images."""
    model = build_from_checkpoint(path).eval()
    if not supports_fast_path(model):
        pytest.fail(f'{path.name}: shipped model has no fast path')
    fast = optimize_for_inference(model)
    for src in list_images(demo_test_split / 'input'):
        target = read_image_rgb(demo_test_split / 'target' / src.name)
        x = read_image_tensor(src)
        ref = calculate_psnr(tensor_to_uint8(restore(model, x)), target)
        got = calculate_psnr(tensor_to_uint8(restore(fast, x)), target)
        assert abs(got - ref) <= 0.05, f'{src.name}: {got:.3f} vs {ref:.3f} dB'
