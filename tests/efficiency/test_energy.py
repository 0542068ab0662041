"""utils/efficiency/energy.py: MACs as the official stats count them, firing rates, SOPs, energy."""
import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from models import build_model
from models.acceleration import record_spikes
from models.spiking import conv2d, make_lif, repeat_time, reset_spiking_state
from utils.efficiency.energy import (E_AC_PJ, E_MAC_PJ, count_macs, count_parameters,
                                     energy_report, measure_firing_rates, synthetic_rainy_images)


@pytest.mark.parametrize('name,key', [('spikerain-s', 'spikerain_s'),
                                      ('spikerain-m', 'spikerain_m'),
                                      ('spikerain-l', 'spikerain_l'), ('esdnet', 'esdnet')])
def test_params_and_macs_equal_official_stats(name, key, golden):
    want = golden.stats()[key]
    model = build_model(name)
    assert count_parameters(model) == want['params']
    macs, _ = count_macs(model, (256, 256))
    assert 2 * sum(macs.values()) == want['flops']          # exact, at the papers' 256x256


def test_meta_count_equals_real_count_and_conv_macs_scale_with_area():
    model = build_model('spikerain-tiny').eval()
    macs32, _ = count_macs(model, (32, 32))
    counter = FlopCounterMode(display=False)                  # the same count on real tensors
    with torch.no_grad(), counter:
        model(torch.rand(1, 3, 32, 32))
    assert 2 * sum(macs32.values()) == counter.get_total_flops()
    macs64, _ = count_macs(model, (64, 64))
    assert macs64.keys() == macs32.keys()
    pooled = {n for n in macs32 if 'channel_fc' in n or 'temporal_fc' in n or 'refinement.ca' in n}
    assert len(pooled) == 6 * 3 + 2                           # gates on pooled vectors
    for name in macs32:
        ratio = 1 if name in pooled else 4                    # everything else is per pixel
        assert macs64[name] == ratio * macs32[name], name


def test_layers_are_classified_by_what_feeds_them():
    _, spike_fed = count_macs(build_model('spikerain-tiny'), (16, 16))
    spiking = {n for n, s in spike_fed.items() if s}
    # a conv right after a LIF: 4 dense + 1 fusion per block (6 blocks), 2 down, 2 up, 1 reduce
    assert len(spiking) == 6 * 5 + 5
    assert all(n.endswith(('.1', 'lff.1')) for n in spiking)
    for real in ('patch_embed.proj', 'output_conv', 'refinement.gate.0',
                 'encoder_level1.0.attn.spatial_conv.0'):
        assert not spike_fed[real], real
    _, spike_fed = count_macs(build_model('esdnet-tiny'), (16, 16))
    assert spike_fed['encoder_level1.0.residual.1'] and spike_fed['encoder_level1.0.residual.4']
    assert not spike_fed['encoder_level1.0.shortcut.0']      # the shortcut sees real values


class _Toy(nn.Module):
    """image -> real conv -> LIF -> conv: one real-input and one spike-input layer."""
    in_channels = 3

    def __init__(self):
        super().__init__()
        self.first, self.lif, self.second = conv2d(3, 3, 3), make_lif(), conv2d(3, 5, 3)
        nn.init.dirac_(self.first.weight)                     # passes the image through

    def forward(self, img):
        out = self.second(self.lif(self.first(repeat_time(img, 2))))
        reset_spiking_state(self)
        return out.mean(0)


def test_all_zero_spikes_give_zero_sops_and_all_ones_give_sops_equal_macs():
    toy = _Toy()
    zero = energy_report(toy, [torch.zeros(1, 3, 8, 8)], (8, 8))
    first, second = zero.layers
    assert (first.name, first.input, second.name, second.input) == ('first', 'real', 'second',
                                                                    'spike')
    assert second.input_rate == 0 and zero.sops == 0 and second.energy_pj == 0
    assert zero.energy_mj * 1e9 == pytest.approx(E_MAC_PJ * first.macs)
    ones = energy_report(toy, [torch.ones(1, 3, 8, 8)], (8, 8))   # 1 >= 0.15 at every step
    assert ones.layers[1].input_rate == 1 and ones.sops == ones.layers[1].macs
    assert ones.mean_firing_rate == 1


def test_totals_equal_the_sum_of_layers():
    model = build_model('spikerain-tiny').eval()
    report = energy_report(model, synthetic_rainy_images(1, 24), (32, 32))
    assert report.macs == sum(layer.macs for layer in report.layers)
    assert report.sops == pytest.approx(sum(layer.sops for layer in report.layers))
    assert report.energy_mj == pytest.approx(sum(x.energy_pj for x in report.layers) / 1e9)
    assert report.energy_mj == pytest.approx((E_MAC_PJ * report.real_macs
                                              + E_AC_PJ * report.sops) / 1e9)
    for layer in report.layers:
        if layer.input == 'spike':
            assert 0 < layer.input_rate < 1
            assert layer.sops == pytest.approx(layer.input_rate * layer.macs)
    d = report.to_dict()
    assert d['energy_mj'] == report.energy_mj and len(d['layers']) == len(report.layers)


def test_firing_rates_are_the_mean_spikes_of_each_layer():
    model = build_model('spikerain-tiny').eval()
    images = synthetic_rainy_images(2, 24, seed=3)
    neurons, inputs = measure_firing_rates(model, images)
    with torch.no_grad():
        records = [record_spikes(model, img)[0] for img in images]
    for name in ('encoder_level1.0.layers.0.0', 'decoder_level1.0.lff.0'):
        spikes = sum(r[name].sum().item() for r in records)
        units = sum(r[name].numel() for r in records)
        assert neurons.rate(name) == pytest.approx(spikes / units)
    assert inputs.rate('encoder_level1.0.layers.0.1') == neurons.rate('encoder_level1.0.layers.0.0')
    assert neurons.pooled() == pytest.approx(sum(neurons.events.values())
                                             / sum(neurons.units.values()))


class _HalfLevelNeuron(nn.Module):
    """A multi-level neuron (like VLIF-Net's NI-LIF): output k/levels; here always 2/4."""
    levels = 4

    def forward(self, x):
        return torch.full_like(x, 0.5)


def test_multi_level_spikes_count_k_events():
    toy = _Toy()
    toy.lif = _HalfLevelNeuron()
    report = energy_report(toy, [torch.rand(1, 3, 8, 8)], (8, 8))
    assert report.layers[1].input == 'spike' and report.layers[1].input_rate == 2.0
