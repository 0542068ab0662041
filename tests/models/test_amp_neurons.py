"""Neurons keep a float32 membrane under autocast (issue 16, item 1), checked on the CPU with
bf16 autocast: the same dtype handling runs under fp16 autocast on CUDA."""
import pytest
import torch
from spikingjelly.activation_based import neuron

from models import build_model
from models.fast_lif import lif_spikes, lif_spikes_autograd
from models.spiking import LIFNode, make_lif, reset_spiking_state

T, V_TH = 4, 0.15


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    # values near the threshold, where an fp16/bf16 membrane would flip spikes
    return (0.15 + 0.1 * torch.randn(T, 2, 3, 8, 8, generator=g)).requires_grad_()


def test_lif_membrane_is_float32_under_bf16_autocast():
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = _inputs()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = conv(x.flatten(0, 1)).unflatten(0, (T, 2))      # a bf16 conv output, as in a model
        assert y.dtype == torch.bfloat16
        lif = make_lif()
        spikes = lif(y)
        assert lif.v.dtype == torch.float32
    assert spikes.dtype == torch.bfloat16                   # dtype-transparent
    ref_lif = make_lif()
    ref = ref_lif(y.detach().float())                       # fp32 run of the same rounded input
    assert torch.equal(spikes.float(), ref)
    spikes.float().sum().backward()                         # surrogate gradient flows through
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_plain_spikingjelly_lif_would_keep_a_bf16_membrane():
    """The reason for the wrapper: spikingjelly integrates in its input's dtype."""
    plain = neuron.LIFNode(tau=2.0, v_threshold=V_TH, decay_input=False, step_mode='m')
    plain(_inputs().detach().bfloat16())
    assert plain.v.dtype == torch.bfloat16


def test_float32_input_takes_the_old_path_unchanged():
    x = _inputs().detach()
    ours, theirs = make_lif(), neuron.LIFNode(tau=2.0, v_threshold=V_TH, decay_input=False,
                                              step_mode='m')
    theirs.surrogate_function = ours.surrogate_function
    assert torch.equal(ours(x), theirs(x))
    # non-contiguous views are made dense first; same spikes
    view = x.permute(0, 1, 2, 4, 3)
    assert torch.equal(make_lif()(view), make_lif()(view.contiguous()))


def test_fused_lif_integrates_half_inputs_in_float32():
    x = _inputs().detach().bfloat16()
    s = lif_spikes(x.flatten(0, 1), T, V_TH)
    assert s.dtype == torch.bfloat16
    assert torch.equal(s.float(), lif_spikes(x.float().flatten(0, 1), T, V_TH))
    out = torch.empty_like(x.flatten(0, 1))
    assert lif_spikes(x.flatten(0, 1), T, V_TH, out) is out and torch.equal(out, s)
    xa = x.flatten(0, 1).clone().requires_grad_()
    xf = x.float().flatten(0, 1).clone().requires_grad_()
    sa, sf = lif_spikes_autograd(xa, T, V_TH, 4.0), lif_spikes_autograd(xf, T, V_TH, 4.0)
    assert sa.dtype == torch.bfloat16 and torch.equal(sa.float(), sf)
    sa.float().sum().backward()
    sf.sum().backward()
    assert xa.grad.dtype == torch.bfloat16
    torch.testing.assert_close(xa.grad.float(), xf.grad.bfloat16().float())


@pytest.mark.parametrize('name', ['spikerain-tiny', 'esdnet-tiny', 'vlif-net-tiny'])
def test_every_lif_of_a_model_runs_float32_under_autocast(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(
        (mod.v.dtype, out.dtype))) for m in model.modules() if isinstance(m, LIFNode)]
    assert hooks
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(torch.rand(1, 3, 32, 32))
    reset_spiking_state(model)
    assert seen and all(v == torch.float32 for v, _ in seen)
    assert torch.isfinite(out.float()).all()
