"""VLIF-Net (models/vlifnet.py): equal to the official code, official keys, sizes, flags."""
import pytest
import torch

from models import WeightsError, build_model, load_weights
from models.vlifnet import SDEM, SMU, VLIFNet

OFFICIAL_PARAMS = 14_023_911        # official VLIFNet(dim=48, ...), tests/fixtures/README.md
TINY_PARAMS = 412_159               # the golden tiny config, tests/fixtures/README.md


@pytest.fixture(scope='module')
def golden(golden):
    """This module's golden file: VLIF-Net tiny (tests/fixtures/vlifnet_tiny.pt.xz)."""
    return golden('vlifnet_tiny')


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_outputs_match_official(golden, mode):
    model = load_weights(build_model('vlif-net', **golden['config']), golden['state_dict'])
    model.train(mode == 'train')
    for i, (x, y) in enumerate(zip(golden['inputs'], golden[f'outputs_{mode}'])):
        with torch.no_grad():
            out = model(x)
        err = (out - y).abs().max().item()
        assert torch.allclose(out, y, atol=1e-5, rtol=1e-4), f'{mode} input {i}: max err {err}'


def test_official_keys_map_one_to_one_and_ours_pass_unchanged(golden):
    official = golden['state_dict']
    model = build_model('vlif-net-tiny')
    ours = VLIFNet.convert_official_state_dict(official)
    assert set(ours) == set(model.state_dict())
    assert 'down1_2.maxpool_conv.1.weight' in ours and 'up2_1.up.2.running_var' in ours
    own = model.state_dict()
    assert list(VLIFNet.convert_official_state_dict(own)) == list(own)


def test_parameter_counts():
    def count(name):
        return sum(p.numel() for p in build_model(name).parameters())
    full = count('vlif-net')
    assert full == OFFICIAL_PARAMS
    assert count('vlif-net-tiny') == TINY_PARAMS
    assert count('vlif-net-l') == full + 4 * sum(p.numel() for p in SDEM(48).parameters())


def test_full_model_restores_odd_sized_image_on_cpu():
    torch.manual_seed(0)
    model = build_model('vlif-net').eval()
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return build_model('vlif-net-tiny')


def test_gradients_reach_first_conv(tiny):
    tiny.train()
    tiny.zero_grad()
    tiny(torch.rand(1, 3, 24, 24)).square().mean().backward()
    grads = {n: p.grad for n, p in tiny.named_parameters()}
    for name in ('patch_embed.proj.weight', 'encoder_level1.initial_residual.high_freq_scale_1',
                 'encoder_level2.0.conv1.weight', 'output.0.bias'):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name


def test_smu_gradients_reach_every_part_of_its_half_resolution_branch():
    # At default init this branch is often silent (its first LIF never fires, see README);
    # drive it so that every part carries gradient.
    torch.manual_seed(0)
    block = SMU(16).train()
    with torch.no_grad():
        block.temporal_compress[0].weight.mul_(20)
        block.bn_1.weight.fill_(1.0)
    x = 2 * torch.randn(4, 2, 16, 8, 8, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name in ('time_attention.sharedMLP.0.weight', 'temporal_compress.0.weight',
                 'conv_1.weight', 'conv_2.weight', 'bn_2.bias', 'initial_residual.conv1.weight'):
        assert block.get_parameter(name).grad.abs().sum() > 0, name


def test_sdem_gradients_reach_vlif_conv_and_scales_when_it_fires():
    # At init the SDEM's VLIF rarely fires (tdBN outputs are small), so drive it harder here.
    torch.manual_seed(0)
    block = SDEM(16).train()
    with torch.no_grad():
        block.bn1.weight.fill_(2.0)
    x = torch.randn(4, 2, 16, 8, 8, requires_grad=True)
    block(x).square().mean().backward()
    for name in ('lif_2.channel_adjust.weight', 'high_freq_scale_2', 'low_freq_scale_2',
                 'conv1.weight'):
        assert block.get_parameter(name).grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_refinement_variant_rejects_weights_without_refinement(tiny):
    model = build_model('vlif-net-l', dim=16, en_num_blocks=[1, 1, 1, 1],
                        de_num_blocks=[1, 1, 1, 1])
    assert len(model.refinement_blocks) == 4
    with pytest.raises(WeightsError, match=r'missing \d+ keys: refinement_blocks\.0\.'):
        load_weights(model, tiny.state_dict())


def test_paper_vlif_and_neuron_flags():
    small = dict(dim=16, en_num_blocks=[1, 1, 1, 1], de_num_blocks=[1, 1, 1, 1])
    paper = build_model('vlif-net', vlif_restore='pixel_shuffle', **small)
    keys = paper.state_dict()
    assert not any('channel_adjust' in k for k in keys)
    official = build_model('vlif-net-tiny')
    n_adjust = sum(p.numel() for n, p in official.named_parameters() if 'channel_adjust' in n)
    assert sum(p.numel() for p in paper.parameters()) == TINY_PARAMS - n_adjust
    lif = build_model('vlif-net', sdem_neuron='lif', **small)
    assert type(lif.encoder_level2[0].lif_2).__name__ == 'LIFNode'
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert paper.eval()(x).shape == x.shape and lif.eval()(x).shape == x.shape


def test_bad_options_are_clear():
    with pytest.raises(ValueError, match='T >= 4'):
        build_model('vlif-net-tiny', T=3)
    with pytest.raises(ValueError, match='dim >= 16'):
        build_model('vlif-net-tiny', dim=8)
    with pytest.raises(ValueError, match='restore must be one of'):
        build_model('vlif-net-tiny', vlif_restore='nearest')
