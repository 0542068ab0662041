"""optimize_for_inference(model, precision='bf16'): bfloat16 convs, float32 membranes.

bf16 keeps 8 bits of mantissa, so every conv output moves by ~0.2 % and the trained models
amplify that layer by layer (each of weight, input or output rounding alone flips a few % of
spikes). It does not hold the 99.9 % spike-agreement bar of the float32 fast paths, so it is
opt-in, never a default; these tests hold it to the figures measured on the shipped weights
(2026-12-02, AVX-512 BF16 CPU, 4 rainy 64 px photos: VLIF-Net tiny worst layer 93.3 %, all
spikes 98.7 %, PSNR within 0.06 dB; SpikeRain-S worst layer 90.1 %, all spikes 96.4 %, PSNR
within 0.17 dB), with some margin.
"""
import numpy as np
import pytest

import models.acceleration as acceleration
from models import build_from_checkpoint, build_model
from models.acceleration import (BF16_WEIGHT, bf16_supported, fast_options,
                                 optimize_for_inference)
from support import ROOT
from support.spike_fidelity import spike_fidelity, unseen_rainy_photos

WORST_LAYER_AGREEMENT = 0.85
MEAN_AGREEMENT = 0.95
MAX_PSNR_GAP_DB = 0.5     # fine-tuned SpikeRain-S: up to 0.39 dB on 2 threads (2026-12-02)


def test_bf16_is_refused_where_the_cpu_has_no_bf16(monkeypatch):
    monkeypatch.setattr(acceleration, 'bf16_supported', lambda: False)
    with pytest.raises(ValueError, match='no native bfloat16'):
        optimize_for_inference(build_model('spikerain-tiny'), precision='bf16')
    with pytest.raises(ValueError, match="precision must be one of"):
        optimize_for_inference(build_model('spikerain-tiny'), precision='fp8')


@pytest.fixture(scope='module')
def rainy_photos():
    return unseen_rainy_photos(64)


@pytest.mark.parametrize('name', ['vlif-net-tiny', 'spikerain-s'])
def test_bf16_fidelity_on_trained_weights(name, rainy_photos):
    model = build_from_checkpoint(ROOT / 'pretrained_models' / f'{name}_synthetic.pth').eval()
    if not bf16_supported():                   # this CPU: refused (tested above), nothing to run
        with pytest.raises(ValueError, match='bfloat16'):
            optimize_for_inference(model, precision='bf16')
        return
    fast = optimize_for_inference(model, precision='bf16')
    assert fast_options(fast).precision == 'bf16'
    assert any(getattr(m, BF16_WEIGHT, None) is not None for m in fast.modules())
    got = spike_fidelity(model, fast, rainy_photos)
    worst, mean, gaps = got['worst'], got['mean'], got['gaps']
    print(f'{name} bf16: worst layer spike agreement {worst:.4f}, all spikes {mean:.4f}, '
          f'PSNR differences {[round(g, 3) for g in gaps]} dB')
    assert got['moved'] > 0                    # the bf16 convs really ran
    assert worst >= WORST_LAYER_AGREEMENT, worst
    assert mean >= MEAN_AGREEMENT, mean
    assert np.max(np.abs(gaps)) <= MAX_PSNR_GAP_DB, gaps
