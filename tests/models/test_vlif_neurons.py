"""NI-LIF and the VLIF neuron (models/spiking.py): levels, dynamics, gradients, reorganisation."""
import pytest
import torch
import torch.nn.functional as F

from models.spiking import (NEURON_KINDS, NILIF, VLIFNeuron, make_neuron, time_to_space,
                            time_to_unshuffled, unshuffle_to_time)

LEVELS = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])


def test_nilif_outputs_take_five_levels():
    torch.manual_seed(0)
    x = torch.empty(6, 2, 3, 8, 8).uniform_(-3, 8)
    s = NILIF()(x)
    assert s.shape == x.shape
    assert torch.isin(s, LEVELS).all()
    assert set(torch.unique(s).tolist()) == set(LEVELS.tolist())   # every level is reachable


def test_nilif_hand_computed_three_steps():
    # u0 = x0; u_t = (u_{t-1} - s_{t-1}) / 4 + x_t; s = round(clamp(u, 0, 4)) / 4
    # A: u = 1.3, 0.8625, 0.353125   B: u = 5, -1, 2.75   C: u = 2.6, 1.4625, 0.803125
    x = torch.tensor([[1.3, 5.0, 2.6], [0.6, -2.0, 1.0], [0.2, 3.0, 0.5]])
    want = torch.tensor([[0.25, 1.0, 0.75], [0.25, 0.0, 0.25], [0.0, 0.75, 0.25]])
    assert torch.equal(NILIF()(x), want)


def test_nilif_gradient_is_straight_through_over_4_inside_0_4():
    u = torch.tensor([-0.5, -1e-4, 0.0, 0.3, 2.0, 3.7, 4.0, 4.0001, 6.0], requires_grad=True)
    NILIF()(u[None]).sum().backward()
    want = torch.tensor([0, 0, 0.25, 0.25, 0.25, 0.25, 0.25, 0, 0])
    assert torch.equal(u.grad, want)


def test_nilif_gradient_flows_through_membrane_not_through_reset():
    x = torch.tensor([[1.3], [0.6]], requires_grad=True)
    NILIF()(x)[1].sum().backward()
    # s1 = q((x0 - s0) / 4 + x1): d/dx1 = 1/4, d/dx0 = 1/4 * 1/4 (the detached s0 adds nothing)
    assert torch.allclose(x.grad, torch.tensor([[0.0625], [0.25]]), atol=0, rtol=0)


def test_nilif_keeps_no_state_between_calls():
    x = torch.rand(4, 1, 2, 3, 3) * 3
    n = NILIF()
    assert torch.equal(n(x), n(x))


def _reference_reorganisation(x, r):
    """Written independently: step t*r*r + i*r + j holds pixel (i, j) of every r x r patch."""
    steps = [x[t, :, :, i::r, j::r] for t in range(x.shape[0]) for i in range(r) for j in range(r)]
    return torch.stack(steps)


@pytest.mark.parametrize('r', [2, 3])
def test_time_reorganisation_matches_independent_reshape_and_inverts(r):
    torch.manual_seed(1)
    x = torch.randn(4, 2, 3, 2 * r, 3 * r)
    y = unshuffle_to_time(x, r)
    assert torch.equal(y, _reference_reorganisation(x, r))
    assert torch.equal(time_to_space(y, r), x)
    z = time_to_unshuffled(y, r)
    assert torch.equal(z.flatten(0, 1), F.pixel_unshuffle(x.flatten(0, 1), r))


def test_time_reorganisation_rejects_sizes_not_divisible_by_r():
    with pytest.raises(ValueError, match='divisible by 2'):
        unshuffle_to_time(torch.rand(4, 1, 3, 5, 6), 2)


def test_vlif_integrates_over_patch_positions_and_steps():
    """Paper mode returns NI-LIF of the 16-step sequence of each patch, at its own pixel."""
    torch.manual_seed(2)
    x = torch.rand(4, 1, 1, 2, 2) * 2
    out = VLIFNeuron(1, restore='pixel_shuffle')(x)
    seq = torch.stack([x[t, 0, 0, i, j] for t in range(4) for i in range(2) for j in range(2)])
    want = NILIF()(seq).view(4, 2, 2)
    assert torch.equal(out[:, 0, 0], want)
    assert torch.isin(out, LEVELS).all()


def test_vlif_official_restore_has_a_1x1_conv_and_keeps_shape():
    torch.manual_seed(3)
    vlif = VLIFNeuron(8)
    assert vlif.channel_adjust.weight.shape == (8, 32, 1, 1)
    assert sum(p.numel() for p in vlif.parameters()) == 4 * 8 * 8
    assert sum(p.numel() for p in VLIFNeuron(8, restore='pixel_shuffle').parameters()) == 0
    x = torch.randn(4, 2, 8, 6, 10, requires_grad=True)
    y = vlif(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert vlif.channel_adjust.weight.grad.abs().sum() > 0


def test_make_neuron_builds_every_kind_and_rejects_unknown():
    x = torch.rand(4, 1, 4, 4, 4)
    for kind in NEURON_KINDS:
        assert make_neuron(kind, 4)(x).shape == x.shape
    assert make_neuron('lif', v_threshold=0.5).v_threshold == 0.5
    with pytest.raises(ValueError, match='needs the number of channels'):
        make_neuron('vlif')
    with pytest.raises(ValueError, match="unknown neuron 'relu'"):
        make_neuron('relu', 4)
    with pytest.raises(ValueError, match='restore must be one of'):
        VLIFNeuron(4, restore='nearest')
