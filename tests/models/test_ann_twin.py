"""ANN twins (build_model(name, neuron='relu')): same network, ReLU instead of spikes."""
import pytest
import torch
import torch.nn as nn

from models import build_from_checkpoint, build_model, is_ann_twin, model_config, save_weights
from models.acceleration import supports_fast_path
from utils.efficiency.energy import energy_report, is_spiking_neuron
from utils.train.trainer import TrainConfig, Trainer

TINY = ('spikerain-tiny', 'esdnet-tiny', 'vlif-net-tiny')


@pytest.mark.parametrize('name', TINY)
def test_twin_has_no_spiking_neuron_and_the_same_parameter_names(name):
    snn, ann = build_model(name), build_model(name, neuron='relu')
    assert any(is_spiking_neuron(m) for m in snn.modules())
    assert not any(is_spiking_neuron(m) for m in ann.modules())
    assert any(isinstance(m, nn.ReLU) for m in ann.modules())
    a, b = snn.state_dict(), ann.state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k].shape != b[k].shape]
    assert differ == (['temporal_fusion.weights'] if name == 'spikerain-tiny' else [])
    assert is_ann_twin(ann) and not is_ann_twin(snn)
    assert not supports_fast_path(ann)       # the fused-LIF path has nothing to fuse


def test_time_axis_collapses_only_where_it_just_repeats_the_image():
    assert model_config('spikerain-tiny', neuron='relu')['T'] == 1
    assert model_config('spikerain-tiny', neuron='relu', T=3)['T'] == 3
    assert model_config('esdnet-tiny', neuron='relu')['T'] == 4      # attention mixes steps
    assert model_config('vlif-net-tiny', neuron='relu')['T'] == 4
    assert 'neuron' not in model_config('spikerain-tiny', neuron='lif')   # configs unchanged
    with pytest.raises(ValueError, match='lif, relu'):
        model_config('spikerain-tiny', neuron='tanh')


def test_spikerain_twin_at_t1_equals_it_at_t4():
    """Without spiking state SpikeRain's T steps are equal copies, so T = 1 loses nothing."""
    torch.manual_seed(0)
    one = build_model('spikerain-tiny', neuron='relu').eval()
    four = build_model('spikerain-tiny', neuron='relu', T=4).eval()
    sd = one.state_dict()
    sd['temporal_fusion.weights'] = torch.zeros(4)         # uniform softmax, like 1 step
    four.load_state_dict(sd)
    img = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(one(img), four(img), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', TINY)
@pytest.mark.parametrize('size', [(1, 1), (13, 21), (8, 40)])
def test_twin_runs_any_size(name, size):
    ann = build_model(name, neuron='relu').eval()
    img = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = ann(img)
    assert out.shape == img.shape and torch.isfinite(out).all()


@pytest.mark.parametrize('name', TINY)
def test_twin_trains(name):
    torch.manual_seed(0)
    ann = build_model(name, neuron='relu').train()
    target = torch.rand(2, 3, 16, 16)
    rainy = (target + 0.3 * (torch.rand_like(target) > 0.8)).clamp(0, 1)
    opt = torch.optim.Adam(ann.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss = (ann(rainy) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_twin_trains_with_the_trainer_and_reloads_from_its_checkpoint(tmp_path, paired_folder):
    paired_folder(tmp_path / 'train', 2, (20, 20), rain=60)
    paired_folder(tmp_path / 'test', 2, (20, 20), rain=60, seed=1)
    # What `train.py --model spikerain-tiny --model_opt neuron=relu ...` builds.
    cfg = TrainConfig(model='spikerain-tiny', model_opt={'neuron': 'relu'},
                      train_dir=str(tmp_path / 'train'), val_dir=str(tmp_path / 'test'),
                      model_save_dir=str(tmp_path / 'run'), batch_size=2, patch_size=16,
                      iters=2, warmup='0', val_every='0', save_every='0', workers=0,
                      tensorboard=False, seed=0)
    Trainer(cfg, log=lambda line: None).fit()
    model = build_from_checkpoint(tmp_path / 'run' / 'model_last.pth')
    assert is_ann_twin(model) and model.config['T'] == 1
    assert not any(is_spiking_neuron(m) for m in model.modules())
    path = tmp_path / 'w.pth'
    save_weights(model, path)
    again = build_from_checkpoint(path, 'spikerain-tiny')
    img = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(model.eval()(img), again.eval()(img))


def test_twin_energy_is_all_real_macs():
    ann = build_model('spikerain-tiny', neuron='relu').eval()
    report = energy_report(ann, [torch.rand(1, 3, 16, 16)], (16, 16), 'papers')
    assert report.sops == 0 and report.spikes == 0 and report.real_macs == report.macs
    assert report.energy_mj * 1e9 == pytest.approx(12.5 * report.macs)
