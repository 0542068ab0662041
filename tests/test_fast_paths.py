"""models/fast_lif.py and models/acceleration.py: the fast paths compute what the plain path does.

Paths that change no rounding are held to the official golden tensors (or to the plain path bit
for bit); the ones that do (channels-last, fast attention, BN folding) are held to the fidelity
bar on a quickly trained tiny model: per-layer spike agreement >= 99.9 % and restored-image
PSNR within 0.05 dB of the plain path.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from conftest import load_reference
from models import build_model, load_weights
from models.acceleration import (disable_fast_path, enable_fast_training, fast_options,
                                 fold_batchnorm, optimize_for_inference, record_spikes)
from models.fast_lif import lif_spikes, lif_spikes_autograd
from models.spiking import StepBatchNorm2d, conv2d, make_lif
from utils.energy import synthetic_rainy_pairs
from utils.image_io import tensor_to_uint8
from utils.metrics import calculate_psnr

EXACT = dict(channels_last=False, fast_attention=False, fast_arithmetic=False)  # no rounding change
V_TH, ALPHA, T = 0.15, 4.0, 4


# ---- the fused LIF --------------------------------------------------------------------------
def _lif_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T * 2, 5, 6, 7, generator=g) * 0.3
    x[0, 0, 0, :3] = V_TH                       # exactly at the threshold: fires (>=)
    x[1, 0, 0, :3] = V_TH - x[0, 0, 0, :3] / 2  # after a reset, V = 0
    return x


def test_fused_lif_spikes_equal_spikingjelly_bit_for_bit():
    x = _lif_inputs()
    lif = make_lif()
    ref = lif(x.unflatten(0, (T, 2))).flatten(0, 1)
    functional.reset_net(lif)
    assert torch.equal(lif_spikes(x, T, V_TH), ref)
    assert ref.sum() > 0 and ref.mean() < 1
    # into a strided view (a channel slice of a channels-last buffer), as the dense blocks do
    buf = torch.zeros(T * 2, 9, 6, 7).contiguous(memory_format=torch.channels_last)
    lif_spikes(x, T, V_TH, out=buf[:, 2:7])
    assert torch.equal(buf[:, 2:7], ref) and buf[:, :2].abs().sum() == 0


def test_fused_lif_surrogate_gradient_matches_spikingjelly():
    x = _lif_inputs()
    grad_out = torch.randn_like(x)
    a = x.clone().requires_grad_(True)
    lif = make_lif()
    lif(a.unflatten(0, (T, 2))).flatten(0, 1).backward(grad_out)
    b = x.clone().requires_grad_(True)
    spikes = lif_spikes_autograd(b, T, V_TH, ALPHA)
    spikes.backward(grad_out)
    assert torch.equal(spikes.detach(), lif_spikes(x, T, V_TH))
    assert torch.allclose(b.grad, a.grad, atol=1e-6, rtol=1e-5)
    assert a.grad.abs().max() > 0.1


# ---- paths that change no rounding: golden tensors -------------------------------------------
@pytest.mark.parametrize('file,name', [('spikerain_tiny', 'spikerain-s'),
                                       ('esdnet_tiny', 'esdnet')])
def test_exact_inference_path_matches_golden(file, name):
    """Eval-mode fast path without rounding changes: the official outputs and spike counts."""
    ref = load_reference(file)
    plain = load_weights(build_model(name, **ref['config']), ref['state_dict']).eval()
    fast = optimize_for_inference(plain, fold_bn=False, **EXACT)
    with torch.no_grad():
        for i, (x, y) in enumerate(zip(ref['inputs'], ref['outputs_eval'])):
            spikes, out = record_spikes(fast, x)
            assert torch.allclose(out, y, atol=1e-5, rtol=1e-4), (out - y).abs().max()
            if i == 0:
                want = ref['spike_counts_eval']
                assert {k: int(s.sum()) for k, s in spikes.items()} == want


@pytest.mark.parametrize('file,name', [('spikerain_tiny', 'spikerain-s'),
                                       ('esdnet_tiny', 'esdnet')])
@pytest.mark.parametrize('checkpoint', [False, True])
def test_exact_training_path_matches_golden(file, name, checkpoint):
    ref = load_reference(file)
    model = load_weights(build_model(name, **ref['config']), ref['state_dict']).train()
    enable_fast_training(model, checkpoint=checkpoint, **EXACT)
    out = model(ref['inputs'][0])
    assert torch.allclose(out, ref['outputs_train'][0], atol=1e-5, rtol=1e-4)
    out.backward(ref['grad_output'])
    params = dict(model.named_parameters())
    for key, want in ref['grads_train'].items():
        got = params[key].grad
        assert (got - want).abs().max() <= 1e-4 * want.abs().max() + 1e-6, key
    buffers = dict(model.named_buffers())             # BN statistics updated exactly once
    for key, want in ref['bn_buffers_after_one_train_forward'].items():
        assert torch.allclose(buffers[key].to(want.dtype), want, atol=1e-6, rtol=1e-5), key


def test_exact_fast_path_equals_plain_bit_for_bit():
    model = build_model('spikerain-tiny').eval()
    x = torch.rand(1, 3, 36, 44, generator=torch.Generator().manual_seed(1))
    fast = optimize_for_inference(model, fold_bn=False, patch_embed_once=False, **EXACT)
    with torch.no_grad():
        (plain, out), (quick, fast_out) = record_spikes(model, x), record_spikes(fast, x)
    assert torch.equal(out, fast_out)
    assert set(plain) == set(quick) and len(plain) == 35
    for name in plain:
        assert torch.equal(plain[name], quick[name]), name


# ---- switches, API --------------------------------------------------------------------------
def test_fold_batchnorm_is_the_same_affine_map():
    torch.manual_seed(0)
    seq = nn.Sequential(conv2d(8, 6, 3), StepBatchNorm2d(6)).eval()
    bn = seq[1].bn
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 10, 10)
    want = seq(x)
    folded = copy.deepcopy(seq)
    assert fold_batchnorm(folded) == 1 and isinstance(folded[1], nn.Identity)
    assert torch.allclose(folded(x), want, atol=1e-5, rtol=1e-5)


def test_switches_and_api():
    model = build_model('spikerain-tiny')
    keys = list(model.state_dict())
    fast = optimize_for_inference(model)
    assert model.fast_path is None and fast.fast_path is not None and not fast.training
    opts = fast_options(fast)
    assert opts.fused_lif and opts.channels_last and not opts.checkpoint
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())      # all folded
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())         # original kept
    enable_fast_training(model, checkpoint=True)
    assert list(model.state_dict()) == keys and fast_options(model).checkpoint
    x = torch.rand(1, 3, 23, 31)                        # any size: padded and cropped back
    assert model(x).shape == x.shape == fast(x).shape
    assert disable_fast_path(model).fast_path is None


# ---- paths that change rounding: fidelity on a trained tiny model ----------------------------
@pytest.fixture(scope='module')
def trained_tiny():
    """spikerain-tiny after 30 Adam steps on synthetic rainy crops (fast training path)."""
    torch.manual_seed(0)
    pairs = synthetic_rainy_pairs(6, 48, seed=1)
    rainy = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    model = enable_fast_training(build_model('spikerain-tiny').train())
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(30):
        idx = rng.integers(0, len(pairs), 4)
        y0, x0 = rng.integers(0, 48 - 24, 2)
        crop = [t[idx, :, y0:y0 + 24, x0:x0 + 24] for t in rainy]
        loss = F.l1_loss(model(crop[0]), crop[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    disable_fast_path(model)
    return model.eval(), losses


def test_fast_training_path_learns(trained_tiny):
    _, losses = trained_tiny
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_fast_inference_fidelity_on_trained_model(trained_tiny):
    model, _ = trained_tiny
    fast = optimize_for_inference(model)
    worst, gaps = 1.0, []
    for rainy, clean in synthetic_rainy_pairs(2, 48, seed=7):
        with torch.no_grad():
            ref_spikes, ref_out = record_spikes(model, rainy)
            fast_spikes, fast_out = record_spikes(fast, rainy)
        assert set(ref_spikes) == set(fast_spikes)
        for name, s in ref_spikes.items():
            worst = min(worst, (s == fast_spikes[name]).float().mean().item())
        target = tensor_to_uint8(clean)
        gaps.append(calculate_psnr(tensor_to_uint8(fast_out.clamp(0, 1)), target)
                    - calculate_psnr(tensor_to_uint8(ref_out.clamp(0, 1)), target))
    assert worst >= 0.999, worst
    assert max(abs(g) for g in gaps) <= 0.05, gaps


def test_fast_training_forward_fidelity_on_trained_model(trained_tiny):
    """The channels-last training path: same spikes (>= 99.9 %) and nearly the same gradients."""
    model, _ = trained_tiny
    rainy, clean = synthetic_rainy_pairs(1, 32, seed=9)[0]
    grads, spikes = [], []
    for fast in (False, True):
        m = copy.deepcopy(model).train()
        if fast:
            enable_fast_training(m)
        s, out = record_spikes(m, rainy)
        F.l1_loss(out, clean).backward()
        spikes.append(s)
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    for name, s in spikes[0].items():
        assert (s == spikes[1][name]).float().mean() >= 0.999, name
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
