"""Energy conventions (utils/efficiency/energy.py): the papers' prices on a hand-counted network."""
import json

import pytest
import torch
import torch.nn as nn

from models.spiking import conv2d, make_lif, repeat_time, reset_spiking_state
from utils.efficiency.energy import (ENERGY_CONVENTIONS, HOROWITZ, PAPERS, count_neuron_outputs,
                                     energy_report, get_convention)

FJ = 1e-3          # one femtojoule in pJ


class _Toy(nn.Module):
    """image -> conv3x3 (3->3, identity) -> LIF -> conv3x3 (3->5); T = 2."""
    in_channels = 3

    def __init__(self):
        super().__init__()
        self.first, self.lif, self.second = conv2d(3, 3, 3), make_lif(), conv2d(3, 5, 3)
        nn.init.dirac_(self.first.weight)

    def forward(self, img):
        out = self.second(self.lif(self.first(repeat_time(img, 2))))
        reset_spiking_state(self)
        return out.mean(0)


def _half_lit(size=4):
    """Columns 0..size/2-1 at 1 (a LIF spikes at every step), the rest 0 (never spikes)."""
    img = torch.zeros(1, 3, size, size)
    img[..., : size // 2] = 1.0
    return img


def test_papers_convention_by_hand():
    # By hand, at 4x4 with T = 2 (MACs = T x H x W x C_out x C_in x 3 x 3):
    #   first  (real input):  2*16*3*3*9 = 2592 MACs
    #   second (spike input): 2*16*5*3*9 = 4320 MACs, input rate 0.5 -> 2160 SOPs
    #   spikes: 2 steps x 3 channels x 16 px x 0.5 = 48
    #   energy: 12.5*2592 + 0.077*2160 + 3.7*48 = 32400 + 166.32 + 177.6 = 32743.92 pJ
    report = energy_report(_Toy(), [_half_lit()], (4, 4), 'papers')
    first, second = report.layers
    assert (first.input, first.macs) == ('real', 2592)
    assert (second.input, second.macs, second.input_rate) == ('spike', 4320, 0.5)
    assert report.sops == 2160 and report.spikes == 48
    assert first.energy_pj == pytest.approx(32400.0, abs=FJ)
    assert second.energy_pj == pytest.approx(166.32, abs=FJ)
    assert report.spike_energy_pj == pytest.approx(177.6, abs=FJ)
    assert report.energy_mj * 1e9 == pytest.approx(32743.92, abs=FJ)
    assert report.convention is PAPERS and report.to_dict()['convention']['name'] == 'papers'


def test_horowitz_convention_by_hand_has_no_spike_term():
    report = energy_report(_Toy(), [_half_lit()], (4, 4), HOROWITZ)
    assert report.spikes == 48 and report.spike_energy_pj == 0
    assert report.energy_mj * 1e9 == pytest.approx(4.6 * 2592 + 0.9 * 2160, abs=FJ)   # 13867.2


def test_rates_measured_on_one_size_are_priced_at_another():
    # Rates come from the 4x4 image; counts at 8x8 are 4x larger, the rates the same.
    report = energy_report(_Toy(), [_half_lit()], (8, 8), 'papers')
    assert report.macs == 4 * (2592 + 4320) and report.spikes == 4 * 48
    assert count_neuron_outputs(_Toy(), (8, 8)) == {'lif': 2 * 3 * 64}


def test_default_size_is_the_conventions():
    assert (PAPERS.size, HOROWITZ.size) == (128, 256)
    assert energy_report(_Toy(), [_half_lit()], convention='papers').size == (128, 128)
    assert energy_report(_Toy(), [_half_lit()]).size == (256, 256)


def test_conventions_are_documented_and_named():
    assert set(ENERGY_CONVENTIONS) == {'horowitz', 'papers'}
    for conv in ENERGY_CONVENTIONS.values():
        assert conv.source and 'pJ' in conv.formula()
    assert 'SpikeRain_WACV_2025' in PAPERS.source and 'Horowitz' in HOROWITZ.source
    assert (PAPERS.e_mac_pj, PAPERS.e_sop_pj, PAPERS.e_spike_pj) == (12.5, 0.077, 3.7)
    with pytest.raises(ValueError, match='horowitz, papers'):
        get_convention('nope')


@pytest.mark.slow
def test_complexity_prints_and_records_the_convention(tmp_path, cli):
    proc = cli('tools/complexity.py', '--model', 'spikerain-tiny', '--energy_model', 'papers',
               '--neuron', 'both', '--size', '16', '--synthetic', '1', '--synthetic_size', '16',
               '--json', tmp_path / 'r.json')
    assert proc.code == 0, proc.stderr
    assert "energy convention 'papers'" in proc.stdout and '3.7 pJ x emitted spikes' in proc.stdout
    assert 'spikerain-tiny/relu' in proc.stdout
    data = json.loads((tmp_path / 'r.json').read_text())
    assert data['energy_model'] == 'papers' and data['energy_convention']['e_mac_pj'] == 12.5
    snn, ann = data['models']['spikerain-tiny'], data['models']['spikerain-tiny/relu']
    assert snn['spikes'] > 0 and ann['spikes'] == 0 and ann['sops'] == 0
    assert ann['energy_mj'] * 1e9 == pytest.approx(12.5 * ann['macs'])   # all MACs real-valued
