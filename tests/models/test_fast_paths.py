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

from models import build_model, load_weights
from models.acceleration import (FastOptions, FastRunner, bf16_supported, disable_fast_path,
                                 enable_fast_training, fast_options, fold_batchnorm,
                                 optimize_for_inference, plain_forward, record_spikes)
from models import build_from_checkpoint
from models.base import SpikingRestorer
from models.fast_lif import lif_spikes, lif_spikes_autograd, nilif_spikes
from models.spiking import (NILIF, StepBatchNorm2d, conv2d, make_lif, time_to_unshuffled,
                            unshuffle_to_time)
from support import ROOT
from support.spike_fidelity import plain_vs_fast_training, spike_fidelity, unseen_rainy_photos
from utils.data.image_io import uint8_to_tensor
from utils.efficiency.energy import synthetic_rainy_pairs

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
    # into a bfloat16 buffer (the bf16 path's dense blocks): 0/1 are exact there
    half = torch.zeros_like(buf, dtype=torch.bfloat16)
    lif_spikes(x, T, V_TH, out=half[:, 2:7])
    assert half.dtype == torch.bfloat16 and torch.equal(half[:, 2:7].float(), ref)


def test_fused_lif_surrogate_gradient_matches_spikingjelly():
    x = _lif_inputs()
    grad_out = torch.randn_like(x)
    a = x.clone().requires_grad_(True)
    lif = make_lif()
    lif(a.unflatten(0, (T, 2))).flatten(0, 1).backward(grad_out)
    grads = []
    for keep_input in (True, False):          # recharged from the input, or the kept potential
        b = x.clone().requires_grad_(True)
        spikes = lif_spikes_autograd(b, T, V_TH, ALPHA, keep_input=keep_input)
        spikes.backward(grad_out)
        assert torch.equal(spikes.detach(), lif_spikes(x, T, V_TH))
        assert torch.allclose(b.grad, a.grad, atol=1e-6, rtol=1e-5)
        grads.append(b.grad)
    assert torch.equal(grads[0], grads[1])
    assert a.grad.abs().max() > 0.1


# ---- paths that change no rounding: golden tensors -------------------------------------------
@pytest.mark.parametrize('file,name', [('spikerain_tiny', 'spikerain-s'),
                                       ('esdnet_tiny', 'esdnet')])
def test_exact_inference_path_matches_golden(file, name, golden):
    """Eval-mode fast path without rounding changes: the official outputs and spike counts."""
    ref = golden(file)
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
def test_exact_training_path_matches_golden(file, name, checkpoint, golden):
    ref = golden(file)
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
    assert opts.fused_lif and opts.channels_last and not opts.checkpoint and not opts.recompute
    assert fast_options(enable_fast_training(copy.deepcopy(model))).recompute   # training default
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())      # all folded
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())         # original kept
    enable_fast_training(model, checkpoint=True)
    assert list(model.state_dict()) == keys and fast_options(model).checkpoint
    x = torch.rand(1, 3, 23, 31)                        # any size: padded and cropped back
    assert model(x).shape == x.shape == fast(x).shape
    assert disable_fast_path(model).fast_path is None


def test_plain_forward_runs_the_reference_and_gives_the_fast_path_back():
    model = build_model('esdnet-tiny').eval()
    fast = optimize_for_inference(model, fold_bn=False, channels_last=False,
                                  fast_attention=False, fast_arithmetic=False)
    plan, x = fast.fast_path, torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        want = model(x)
        with plain_forward(fast) as plain:
            assert plain is fast and fast.fast_path is None
            assert torch.equal(fast(x), want)
        assert fast.fast_path is plan
        with pytest.raises(RuntimeError), plain_forward(fast):
            raise RuntimeError('inside')
        assert fast.fast_path is plan
        with plain_forward(model):                  # a plain model stays plain
            assert torch.equal(model(x), want)
        assert model.fast_path is None


# ---- paths that change rounding: fidelity on a trained tiny model ----------------------------
@pytest.fixture(scope='module', params=['spikerain-tiny', 'esdnet-tiny'])
def trained_tiny(request):
    """A tiny model after 30 Adam steps on synthetic rainy crops (fast training path)."""
    torch.manual_seed(0)
    pairs = synthetic_rainy_pairs(6, 48, seed=1)
    rainy = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    model = enable_fast_training(build_model(request.param).train())
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


@pytest.mark.slow
def test_fast_training_path_learns(trained_tiny):
    _, losses = trained_tiny
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


@pytest.mark.slow
def test_fast_inference_fidelity_on_trained_model(trained_tiny):
    model, _ = trained_tiny
    fast = optimize_for_inference(model)
    got = spike_fidelity(model, fast, synthetic_rainy_pairs(2, 48, seed=7))
    worst, gaps = got['worst'], got['gaps']
    print(f'{type(model).__name__} (trained tiny) fast inference: worst spike agreement '
          f'{worst:.6f}, PSNR differences {[round(g, 4) for g in gaps]} dB')
    assert worst >= 0.999, worst
    assert max(abs(g) for g in gaps) <= 0.05, gaps


@pytest.mark.slow
def test_fast_training_forward_fidelity_on_trained_model(trained_tiny):
    """The channels-last training path: same spikes (>= 99.9 %) and nearly the same gradients."""
    model, _ = trained_tiny
    rainy, clean = synthetic_rainy_pairs(1, 32, seed=9)[0]
    got = plain_vs_fast_training(model, rainy, clean)
    for name, agreement in got['agreement'].items():
        assert agreement >= 0.999, name
    assert got['cosine'] > 0.99


# ---- a model without a fast forward ------------------------------------------------------------
class _NoFastForward(SpikingRestorer):
    """A spiking model that defines no ``fast_forward``: it must still run, on its plain path."""

    def __init__(self):
        super().__init__()
        self.T = 2
        self.lif = make_lif()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward_padded(self, img):
        spikes = self.lif(img.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)).mean(dim=0)
        return self.conv(spikes) + img


def test_model_without_fast_forward_runs_plain_with_one_line_notice():
    model = _NoFastForward().eval()
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
    with pytest.warns(UserWarning, match='_NoFastForward has no fast forward') as caught:
        fast = optimize_for_inference(model)
    assert len(caught) == 1 and '\n' not in str(caught[0].message)
    assert fast.fast_path is None
    with torch.no_grad():
        assert torch.equal(fast(x), want)
    with pytest.warns(UserWarning, match='plain forward'):
        assert enable_fast_training(model) is model and model.fast_path is None


def test_fast_path_is_declared_by_the_model_not_listed():
    from models.acceleration import supports_fast_path
    assert not supports_fast_path(_NoFastForward())
    for name in ('spikerain-tiny', 'esdnet-tiny', 'vlif-net-tiny'):
        model = build_model(name)
        assert supports_fast_path(model) and callable(type(model).fast_forward), name


# ---- VLIF-Net: the fused NI-LIF and its fast path ---------------------------------------------
@pytest.mark.parametrize('r', [1, 2])
@pytest.mark.parametrize('channels_last', [False, True])
def test_fused_nilif_equals_the_module_bit_for_bit(r, channels_last):
    """Spikes (5 levels) and straight-through gradients, over VLIF's patch steps when r = 2."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(r)
    x = (torch.randn(T * 2, 5, 6, 8, generator=g) * 3).contiguous(memory_format=fmt)
    x[0, 0, 0, :2] = 0.125                  # exactly half a level: round-half-even
    x[0, 0, 1, :2] = 4.0                    # exactly the top level (inside the STE window)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    steps = a.unflatten(0, (T, 2))
    ref = NILIF()(unshuffle_to_time(steps, r) if r > 1 else steps)
    ref = (time_to_unshuffled(ref, r) if r > 1 else ref).flatten(0, 1)
    got = nilif_spikes(b, T, r, 4, 0.25, grad=True, fmt=fmt)
    assert torch.equal(got.detach(), ref.detach())
    assert set(ref.unique().tolist()) == {0.0, 0.25, 0.5, 0.75, 1.0}
    grad_out = torch.randn(ref.shape, generator=g)
    ref.backward(grad_out)
    got.backward(grad_out)
    assert torch.allclose(b.grad, a.grad, atol=1e-7) and a.grad.abs().max() > 0.1
    assert torch.equal(nilif_spikes(x, T, r, 4, 0.25, grad=False, fmt=fmt), ref.detach())


def _vlif_golden_model(golden, train: bool):
    ref = golden('vlifnet_tiny')
    model = load_weights(build_model('vlif-net', **ref['config']), ref['state_dict'])
    return ref, model.train(train)


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_vlifnet_exact_fast_path_matches_golden(mode, golden):
    """Fused LIF/NI-LIF, strided VLIF steps, NCHW, no BN folding: the official outputs."""
    ref, model = _vlif_golden_model(golden, mode == 'train')
    if mode == 'eval':
        model = optimize_for_inference(model, fold_bn=False, **EXACT)
    else:
        enable_fast_training(model, **EXACT)
    for x, y in zip(ref['inputs'], ref[f'outputs_{mode}']):
        with torch.set_grad_enabled(mode == 'train'):
            out = model(x)
        assert torch.allclose(out, y, atol=1e-5, rtol=1e-4), (out - y).abs().max()


@pytest.mark.parametrize('checkpoint', [False, True])
def test_vlifnet_exact_training_path_gradients_and_bn_statistics_equal_plain(checkpoint,
                                                                             golden):
    ref, plain = _vlif_golden_model(golden, True)
    fast = copy.deepcopy(plain)
    enable_fast_training(fast, checkpoint=checkpoint, **EXACT)
    x = ref['inputs'][0]
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    for m in (plain, fast):
        m(x).backward(grad_out)
    fast_params = dict(fast.named_parameters())
    for key, p in plain.named_parameters():
        got = fast_params[key].grad
        assert got is not None, key
        assert (got - p.grad).abs().max() <= 1e-4 * p.grad.abs().max() + 1e-6, key
    fast_buffers = dict(fast.named_buffers())
    for key, want in plain.named_buffers():           # BN statistics updated exactly once
        assert torch.allclose(fast_buffers[key], want, atol=1e-6, rtol=1e-5), key


@pytest.mark.parametrize('options', [dict(), dict(vlif_restore='pixel_shuffle'),
                                     dict(sdem_neuron='nilif'), dict(sdem_neuron='lif')])
def test_vlifnet_exact_fast_path_equals_plain_bit_for_bit(options):
    """Every neuron's spikes (LIF and multi-level NI-LIF) and the output, for each variant."""
    torch.manual_seed(0)
    model = build_model('vlif-net', dim=16, en_num_blocks=[1, 1, 1, 1],
                        de_num_blocks=[1, 1, 1, 1], **options).eval()
    with torch.no_grad():       # livelier BN statistics than the init's, so NI-LIF fires
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(0.05)
    x = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    fast = optimize_for_inference(model, fold_bn=False, patch_embed_once=False, **EXACT)
    with torch.no_grad():
        (plain, out), (quick, fast_out) = record_spikes(model, x), record_spikes(fast, x)
    assert torch.equal(out, fast_out)
    assert set(plain) == set(quick) and any('lif_node' in k for k in plain)
    for name in plain:
        assert torch.equal(plain[name], quick[name]), name
    assert max(s.max().item() for s in plain.values()) == 1.0
    assert any(((s > 0) & (s < 1)).any() for s in plain.values())   # multi-level spikes seen


VLIF_WEIGHTS = ROOT / 'pretrained_models' / 'vlif-net-tiny_synthetic.pth'


@pytest.fixture(scope='module')
def vlif_trained():
    """The shipped VLIF-Net tiny weights (trained on photos under randomized rain)."""
    return build_from_checkpoint(VLIF_WEIGHTS).eval()


@pytest.fixture(scope='module')
def rainy_photos():
    """Unseen photos (scikit-image coffee and rocket, 64 px) under light and heavy rain."""
    return unseen_rainy_photos(64)


def test_vlifnet_fast_inference_fidelity_on_trained_weights(vlif_trained, rainy_photos):
    fast = optimize_for_inference(vlif_trained)
    assert fast_options(fast).fast_arithmetic and fast_options(fast).channels_last
    got = spike_fidelity(vlif_trained, fast, rainy_photos)
    worst, gaps = got['worst'], got['gaps']
    print(f'vlif-net-tiny fast inference: worst spike agreement {worst:.6f}, '
          f'PSNR differences {[round(g, 4) for g in gaps]} dB')
    assert worst >= 0.999, worst
    assert max(abs(g) for g in gaps) <= 0.05, gaps


def test_vlifnet_fast_training_fidelity_on_trained_weights(vlif_trained, rainy_photos):
    """The default training path: nearly the same spikes, gradients and BN updates.

    In train mode BN normalises with the batch's own statistics, and the trained VLIF-Net
    amplifies a last-bit change layer by layer: the plain path itself with channels-last weights
    agrees with the NCHW plain path on only ~99.2 % of the decoder's spikes (measured on this
    image; eval mode: 100 %). So the bar here is 99 % per layer plus the gradient direction;
    the exact (NCHW) training path is held to the plain one bit for bit above.
    """
    rainy, clean = rainy_photos[1]
    got = plain_vs_fast_training(vlif_trained, rainy, uint8_to_tensor(clean))
    agreement, cosine, buffers = got['agreement'], got['cosine'], got['buffers']
    print(f'vlif-net-tiny fast training: worst spike agreement {min(agreement.values()):.6f}, '
          f'gradient cosine {cosine:.6f}')
    assert min(agreement.values()) >= 0.99, agreement
    assert cosine > 0.99
    assert torch.allclose(buffers[0], buffers[1], atol=1e-3, rtol=1e-2)


@pytest.mark.parametrize('name', ['spikerain-tiny', 'esdnet-tiny', 'vlif-net-tiny'])
def test_fast_paths_on_a_batch_match_the_plain_path(name):
    """Batch of 2 (the gates are per sample): inference and one training step's gradients."""
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model.eval()(x)
        got = optimize_for_inference(model)(x)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    grads = []
    for fast in (False, True):
        m = copy.deepcopy(model).train()
        if fast:
            enable_fast_training(m)
        m(x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.999


def test_neurons_without_a_fused_kernel_run_as_modules_on_the_fast_path():
    """A LIF with other settings (tau 3) keeps spikingjelly's own code inside the fast path."""
    torch.manual_seed(0)
    model = build_model('esdnet-tiny').eval()
    odd = model.encoder_level1[0].residual[0]
    odd.tau = 3.0
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(4))
    fast = optimize_for_inference(model, fold_bn=False, patch_embed_once=False, **EXACT)
    with torch.no_grad():
        (plain, out), (quick, fast_out) = record_spikes(model, x), record_spikes(fast, x)
    assert torch.equal(out, fast_out)
    assert all(torch.equal(plain[k], quick[k]) for k in plain) and set(plain) == set(quick)
    odd.tau = 2.0
    with torch.no_grad():
        assert not torch.equal(model(x), out)       # the odd neuron did change the output


# ---- what the training path keeps for the backward pass -------------------------------------
def _saved_bytes(model: nn.Module, x: torch.Tensor) -> tuple[int, set]:
    """Bytes of the distinct storages (not parameters) the autograd graph of one forward keeps,
    and their dtypes."""
    seen = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in params:
            seen.setdefault(key, (t.untyped_storage().nbytes(), t.dtype))
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(n for n, _ in seen.values()), {d for _, d in seen.values()}


@pytest.mark.parametrize('name', ['spikerain-tiny', 'esdnet-tiny', 'vlif-net-tiny'])
def test_recompute_keeps_less_and_gives_the_same_gradients_bit_for_bit(name):
    """The default training path (spikes kept as integers, the work between convs recomputed)
    against the one that keeps everything: same output, gradients and BN statistics, exactly."""
    torch.manual_seed(0)
    model = build_model(name).train()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    g = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    runs = {}
    for recompute in (True, False):
        m = enable_fast_training(copy.deepcopy(model), recompute=recompute)
        assert fast_options(m).recompute is recompute
        out = m(x)
        out.backward(g)
        runs[recompute] = (out.detach(), dict(m.named_parameters()), dict(m.named_buffers()),
                           _saved_bytes(enable_fast_training(copy.deepcopy(model),
                                                             recompute=recompute), x))
    (out1, p1, b1, (kept1, dtypes1)), (out0, p0, b0, (kept0, _)) = runs[True], runs[False]
    assert torch.equal(out1, out0)
    for key in p0:
        assert torch.equal(p1[key].grad, p0[key].grad), key
    for key in b0:
        assert torch.equal(b1[key], b0[key]), key
    assert torch.uint8 in dtypes1                          # spikes kept as integers
    # SpikeRain's blocks keep everything (only its up-sampling recomputes); the others keep
    # little more than their conv outputs (0.72x of keeping everything here, where the
    # attention keeps only its input either way)
    limit = 1.0 if name == 'spikerain-tiny' else 0.75
    assert kept1 < limit * kept0, (kept1, kept0)


@pytest.mark.parametrize('levels,channels_last', [(1, True), (1, False), (4, True)])
def test_convs_on_spikes_keep_integers_and_give_autograd_gradients(levels, channels_last):
    from models.acceleration import FastOptions, FastRunner, mark_spikes
    g = torch.Generator().manual_seed(7)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    spikes = (torch.randint(0, levels + 1, (8, 6, 9, 10), generator=g).float() / levels)
    conv = nn.Conv2d(6, 5, 3, padding=1, bias=True).to(memory_format=fmt)
    grad = torch.randn(8, 5, 9, 10, generator=g)
    model = nn.Module()
    model.T = 4
    got, want = [], []
    for tagged, into in ((True, got), (False, want)):
        conv.zero_grad()
        x = spikes.clone().contiguous(memory_format=fmt).requires_grad_()
        inp = mark_spikes(x * 1.0, levels) if tagged else x * 1.0
        seen = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t, seen=seen: seen.append(t.dtype) or t, lambda t: t):
            y = FastRunner(model, FastOptions()).conv(inp, conv)
        y.backward(grad)
        into += [y.detach(), x.grad, conv.weight.grad.clone(), conv.bias.grad.clone()]
        if tagged:
            assert torch.uint8 in seen and torch.float32 not in set(seen) - {conv.weight.dtype}
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize('precision,bound', [('fp32', (76, 4)), ('bf16', (173, 12))])
def test_spikerain_s_forward_copies_stay_within_the_stated_bound(precision, bound):
    """Layout copies are memory traffic the convolutions do not need. Measured 2026-12-07 in one
    SpikeRain-S fast forward: 71-74 ``aten::copy_`` calls, 1-4 of them feature-map sized (with
    one thread, as here, the small 1x1 convs on this 32x32 image take torch's own conv, which
    copies its bias into the output); on the bf16 path 170-171, 11-12 of them feature maps
    (more calls than in float32: its attention converts a few small vectors).
    Before the dense blocks' convs read their parts without concatenating them
    (``FastRunner.conv_cat``): 119-122 and 48-51 (44 of them the channel prefixes each dense
    conv read), bf16 186 and 70. A change that adds copies fails here."""
    import math

    from torch.profiler import ProfilerActivity, profile

    from models.acceleration import bf16_supported, optimize_for_inference
    if precision == 'bf16' and not bf16_supported():     # this CPU refuses it, in one line
        with pytest.raises(ValueError, match='no native bfloat16'):
            optimize_for_inference(build_model('spikerain-s'), precision='bf16')
        return
    model = optimize_for_inference(build_model('spikerain-s'), precision=precision)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        model(x)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            model(x)
    copies = [e for e in prof.events() if e.name == 'aten::copy_']
    maps = [e for e in copies if e.input_shapes and len(e.input_shapes[0]) == 4
            and math.prod(e.input_shapes[0]) >= 4 * 32 * 8 * 8]
    assert len(copies) <= bound[0] and len(maps) <= bound[1], (len(copies), len(maps))


def _cat_conv_case(kernel: int, bias: bool, dtype=torch.float32):
    g = torch.Generator().manual_seed(kernel)
    conv = nn.Conv2d(32 + 2 * 24, 24, kernel, padding=kernel // 2, bias=bias)
    parts = [(torch.rand(4, c, 12, 10, generator=g) > 0.7).to(dtype).contiguous(
        memory_format=torch.channels_last) for c in (32, 24, 24)]
    return conv, parts


@pytest.mark.parametrize('kernel,bias', [(3, True), (3, False), (1, True)])
def test_conv_cat_sums_the_parts_as_the_concatenation(kernel, bias, monkeypatch):
    """At inference ``conv_cat`` never builds the concatenation: each part meets its slice of the
    weight and the products are summed in place (oneDNN) or by an add (other devices); both equal
    the conv of the concatenation up to the order of the sum."""
    import models.acceleration as acceleration
    conv, parts = _cat_conv_case(kernel, bias)
    conv = conv.to(memory_format=torch.channels_last)
    run = FastRunner(build_model('spikerain-tiny'), FastOptions())
    with torch.no_grad():
        want = conv(torch.cat(parts, dim=1))
        got = run.conv_cat(parts, conv)
        monkeypatch.setattr(acceleration, '_MKLDNN_CONV_ADD', None)
        added = run.conv_cat(parts, conv)
    for y in (got, added):
        assert y.shape == want.shape and y.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(y, want, atol=1e-5, rtol=1e-5), (y - want).abs().max()
    exact = FastRunner(build_model('spikerain-tiny'), FastOptions(fast_arithmetic=False))
    with torch.no_grad():                  # without fast_arithmetic: the concatenation, exactly
        assert torch.equal(exact.conv_cat(parts, conv), want)


def test_conv_cat_weight_slices_follow_the_weight():
    """The cut weight is kept on the conv, and made again once the weight changes in place
    (BN folding, a loaded checkpoint)."""
    conv, parts = _cat_conv_case(3, True)
    run = FastRunner(build_model('spikerain-tiny'), FastOptions())
    with torch.no_grad():
        first = run.conv_cat(parts, conv)
        assert torch.equal(run.conv_cat(parts, conv), first)     # from the kept slices
        conv.weight.mul_(2)
        conv.bias.mul_(2)
        assert torch.allclose(run.conv_cat(parts, conv), 2 * first, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('bf16_out', [True, False])
def test_conv_cat_in_bf16_matches_the_bf16_conv(bf16_out):
    """On the bf16 path the parts' products are summed in bfloat16; with ``bf16_out`` the
    output is bfloat16 with the bias added by the conv, else float32 plus the float32 bias, as
    :meth:`FastRunner.conv` does (torch runs bfloat16 convs on any CPU, slowly without AMX)."""
    conv, parts = _cat_conv_case(3, True, torch.bfloat16)
    run = FastRunner(build_model('spikerain-tiny'), FastOptions(precision='bf16'))
    with torch.no_grad():
        want = run.conv(torch.cat(parts, dim=1), conv, bf16_out=bf16_out)
        got = run.conv_cat(parts, conv, bf16_out=bf16_out)
    assert got.dtype == want.dtype == (torch.bfloat16 if bf16_out else torch.float32)
    assert torch.allclose(got.float(), want.float(), atol=0.1, rtol=0.02)


def test_conv_sum_writes_one_output_where_the_norms_are_folded():
    """``conv_sum``: two convs that meet in an add (ESDNet's and VLIF-Net's residual and
    shortcut) write one output at inference, equal to the sum up to its order; where a norm is
    not folded, it is each conv, its norm, then the add, exactly."""
    g = torch.Generator().manual_seed(5)
    cl = torch.channels_last
    a, b = (nn.Conv2d(16, 16, 3, padding=1).to(memory_format=cl) for _ in range(2))
    xa, xb = (torch.randn(4, 16, 9, 7, generator=g).contiguous(memory_format=cl)
              for _ in range(2))
    bn = nn.BatchNorm2d(16).eval()
    bn.running_mean.uniform_(-1, 1, generator=g)
    run = FastRunner(build_model('spikerain-tiny'), FastOptions())
    with torch.no_grad():
        want = a(xa) + b(xb)
        got = run.conv_sum([(xa, a, nn.Identity()), (xb, b, nn.Identity())])
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
        assert torch.equal(run.conv_sum([(xa, a, bn), (xb, b, nn.Identity())]), bn(a(xa)) + b(xb))
        bf16 = FastRunner(build_model('spikerain-tiny'), FastOptions(precision='bf16'))
        for out_bf16 in (True, False):
            y = bf16.conv_sum([(xa, a, nn.Identity()), (xb, b, nn.Identity())], bf16_out=out_bf16)
            assert y.dtype == (torch.bfloat16 if out_bf16 else torch.float32)
            assert torch.allclose(y.float(), want, atol=0.1, rtol=0.02)


@pytest.mark.parametrize('T,fmt', [(1, torch.channels_last), (4, torch.channels_last),
                                   (4, torch.contiguous_format), (3, torch.channels_last)])
def test_step_mean_is_the_same_mean(T, fmt):
    model = build_model('spikerain-tiny')
    run = FastRunner(model, FastOptions(channels_last=fmt == torch.channels_last))
    run.T = T
    x = torch.randn(2 * T, 24, 10, 6).contiguous(memory_format=fmt)
    assert torch.equal(run.step_mean(x), run.steps(x).mean(dim=0))


@pytest.mark.parametrize('name', ['esdnet', 'vlif-net', 'spikerain-s'])
def test_the_attentions_take_their_native_passes_at_inference(name, monkeypatch):
    """Each attention (and VLIF-Net's decompose-enhance) of a default forward takes its
    one-pass native kernels (a layout they do not take, e.g. a broadcast gate, silently falls
    back to the slower torch ops)."""
    import models.native_lif as native_lif
    import models.spikerain as spikerain
    import models.spiking as spiking
    import models.vlifnet as vlifnet
    built = native_lif._function() is not None     # without a compiler: the torch ops, always
    taken = []

    def spy(module, attr):
        inner = getattr(module, attr)

        def wrapper(*args, **kwargs):
            out = inner(*args, **kwargs)
            taken.append((attr, out is not None))
            return out
        monkeypatch.setattr(module, attr, wrapper)
    for attr in ('native_spatial_stats', 'native_channel_gate', 'native_relu_gated_residual'):
        spy(spiking, attr)
    spy(spikerain, 'native_gated_residual')
    spy(vlifnet, 'native_decompose_enhance')
    model = optimize_for_inference(build_model(name, dim=16))
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    assert taken and all(ok == built for _, ok in taken), taken
    assert (name == 'vlif-net') == any(a == 'native_decompose_enhance' for a, _ in taken)


def test_a_kept_bf16_copy_is_used_once_and_only_while_its_tensor_is_unchanged():
    run = FastRunner(build_model('spikerain-tiny'), FastOptions(precision='bf16'))
    x = torch.randn(2, 8, 4, 4)
    marked = torch.full(x.shape, 7.0, dtype=torch.bfloat16)      # not x's values: traceable
    run.keep_conv_copy(x, marked)
    assert run.in_conv_dtype(x) is marked
    assert torch.equal(run.in_conv_dtype(x), x.to(torch.bfloat16))     # used once
    run.keep_conv_copy(x, marked)
    x.add_(1)                                                          # stale now
    assert torch.equal(run.in_conv_dtype(x), x.to(torch.bfloat16))


def test_a_bf16_convs_float_output_keeps_its_bf16_output_for_the_next_conv():
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        run = FastRunner(build_model('spikerain-tiny'), FastOptions(precision='bf16'))
        y = run.conv(x, conv)
        assert y.dtype == torch.float32
        kept = run.in_conv_dtype(y)
        assert kept.dtype == torch.bfloat16 and torch.equal(kept.float(), y)  # y's values exactly
        want = F.conv2d(x.bfloat16(), conv.weight.bfloat16(), conv.bias.bfloat16(), padding=1)
        assert torch.equal(kept, want)                       # the conv's own output, bias in it


@pytest.mark.parametrize('all_kept', [True, False])
def test_joined_parts_keep_their_joined_conv_copies_where_every_part_has_one(all_kept):
    """A channel concatenation of tensors that keep conv copies keeps theirs, concatenated
    (the same values the conversion gives); one part without a copy: the conversion."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        run = FastRunner(build_model('spikerain-tiny'), FastOptions(precision='bf16'))
        parts = [torch.randn(4, c, 5, 5, generator=g).bfloat16().float().contiguous(
            memory_format=torch.channels_last) for c in (8, 16)]
        marks = [torch.full(p.shape, 3.0 + i, dtype=torch.bfloat16) for i, p in enumerate(parts)]
        run.keep_conv_copy(parts[0], marks[0])
        if all_kept:
            run.keep_conv_copy(parts[1], marks[1])
        out = run.cat_channels(parts)
        assert torch.equal(out, torch.cat(parts, dim=1))
        got = run.in_conv_dtype(out)
        want = torch.cat(marks, dim=1) if all_kept else out.to(torch.bfloat16)
        assert torch.equal(got, want)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(run.in_conv_dtype(out), out.to(torch.bfloat16))      # used once


def test_a_lif_conv_over_joined_parts_makes_each_parts_spikes_apart_at_inference(monkeypatch):
    """``neuron_conv_cat`` at inference (folded norm): the spikes of the joined parts (logged
    whole for fidelity checks) and the conv of the concatenation up to float32 rounding."""
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(make_lif(), nn.Conv2d(24, 8, 3, padding=1), nn.Identity())
    model.T = 4
    parts = [torch.randn(8, c, 6, 5, generator=g).contiguous(memory_format=torch.channels_last)
             for c in (16, 8)]
    with torch.no_grad():
        want = FastRunner(model, FastOptions(), record={})
        whole = torch.cat(parts, dim=1)
        expected = want.conv_bn(want.neuron(model[0], whole), model[1], model[2])
        record = {}
        monkeypatch.setattr(FastRunner, 'cat_channels', None)       # never joined
        got = FastRunner(model, FastOptions(), record=record).neuron_conv_cat(parts, *model)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(record['0'], want.record['0'])      # the whole map's spikes


@pytest.mark.parametrize('stream', [True, False])
def test_bf16_stream_keeps_the_blocks_residual_maps_in_bf16(stream):
    """With ``bf16_stream`` (the bf16 path's default) a block whose output a neuron, a conv and
    the next residual read hands it on in bfloat16; without, in float32 with a kept bfloat16
    copy. The restored images stay close either way (random weights: measured 2.4e-4)."""
    from models.acceleration import CONV_COPY
    model = build_model('esdnet', dim=16).eval()
    if not bf16_supported():                     # this CPU refuses bf16, in one line
        with pytest.raises(ValueError, match='bfloat16'):
            optimize_for_inference(model, precision='bf16', bf16_stream=stream)
        return
    fast = optimize_for_inference(model, precision='bf16', bf16_stream=stream)
    x = torch.randn(4, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        run = FastRunner(fast, FastOptions(precision='bf16', bf16_stream=stream))
        out = fast.encoder_level1[0].fast_forward(x, run)
        assert out.dtype == (torch.bfloat16 if stream else torch.float32)
        assert (CONV_COPY in out.__dict__) == (not stream)        # float32: with its copy
        img = torch.rand(1, 3, 32, 32)
        ref = optimize_for_inference(model, precision='bf16', bf16_stream=False)(img)
        got = fast(img)
    assert got.dtype == torch.float32 and (got - ref).abs().mean() < 5e-3


def test_esdnets_head_on_the_fast_path_is_its_forward_and_runs_bf16_convs_on_the_bf16_path():
    """ESDNet's refinement head takes the runner's convs: float32, the same bits as its own
    forward; bf16, its spatial branch's convs in bfloat16 (close to float32, not equal)."""
    model = build_model('esdnet', dim=16).eval()
    head = model.refinement
    x = torch.randn(1, 32, 12, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = head(x)
        assert torch.equal(head.fast_forward(x, FastRunner(model, FastOptions())), want)
        if bf16_supported():
            got = head.fast_forward(x, FastRunner(model, FastOptions(precision='bf16')))
            assert not torch.equal(got, want)
            torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)
