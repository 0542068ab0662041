"""What every registered model promises, checked for each name in ``available_models()``.

A model added to ``models.MODEL_REGISTRY`` is covered here the day it is registered. Full-size
configs are only built on the ``meta`` device (no memory, no time); forwards, gradients and
checkpoints run on a small version of each config (width 16, one block per U-Net level), once
per distinct small network.
"""
import re

import pytest
import torch
import torch.nn as nn

from models import (MODEL_REGISTRY, SpikingRestorer, WeightsError, available_models,
                    build_from_checkpoint, build_model, is_ann_twin, load_weights, model_class,
                    model_config, save_weights)
from utils.efficiency.energy import is_spiking_neuron

NAMES = available_models()
SMALL_WIDTH = 16          # VLIF-Net's smallest width; the others accept it too
# Odd sides (padding on both axes) and a one-pixel row (replicate padding).
ODD_SIZES = [(13, 21), (1, 7)]


def small_overrides(name: str) -> dict:
    """Shrink a registered config: width 16 and one block per level, everything else kept."""
    defaults = model_config(name)
    small = {k: [1] * len(v) for k, v in defaults.items()
             if k.endswith('num_blocks') and isinstance(v, list)}
    if 'dim' in defaults:
        small['dim'] = min(defaults['dim'], SMALL_WIDTH)
    return small


def distinct_small_models() -> list[str]:
    """One name per distinct (class, small config): spikerain-s/-m/-l shrink to the same net."""
    seen, names = set(), []
    for name in NAMES:
        key = (model_class(name), repr(sorted(model_config(name, **small_overrides(name)).items())))
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


@pytest.fixture(scope='module', params=distinct_small_models())
def small(request):
    """(name, overrides, eval-mode model) of the small version of one registered model."""
    name = request.param
    overrides = small_overrides(name)
    torch.manual_seed(0)
    return name, overrides, build_model(name, **overrides).eval()


def test_registry_names_map_to_restorer_classes_and_configs():
    assert sorted(MODEL_REGISTRY) == NAMES and len(NAMES) >= 9
    every_class = {cls for cls, _ in MODEL_REGISTRY.values()}
    assert {model_class(n) for n in distinct_small_models()} == every_class   # all of them run
    for name, (cls, defaults) in MODEL_REGISTRY.items():
        assert isinstance(cls, type) and issubclass(cls, SpikingRestorer), name
        assert model_class(name) is cls
        assert isinstance(defaults, dict) and isinstance(defaults.get('T'), int), name


@pytest.mark.parametrize('name', NAMES)
def test_full_size_model_declares_the_contract(name):
    with torch.device('meta'):
        model = build_model(name)
    assert type(model) is MODEL_REGISTRY[name][0]
    assert model.model_name == name
    assert model.config == model_config(name) == MODEL_REGISTRY[name][1]
    assert model.config['T'] == model.T and model.T >= 1
    assert model.in_channels == 3
    assert isinstance(model.size_multiple, int) and model.size_multiple >= 1
    assert any(is_spiking_neuron(m) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize('name', NAMES)
def test_config_does_not_share_lists_with_the_registry(name):
    with torch.device('meta'):
        model = build_model(name)
    for value in model.config.values():
        if isinstance(value, list):
            value.append(99)
    assert model_config(name) == MODEL_REGISTRY[name][1]
    assert all(99 not in v for v in MODEL_REGISTRY[name][1].values() if isinstance(v, list))


@pytest.mark.parametrize('name', NAMES)
def test_ann_twin_builds_with_the_same_parameter_names(name):
    with torch.device('meta'):
        snn, ann = build_model(name), build_model(name, neuron='relu')
    assert is_ann_twin(ann) and not is_ann_twin(snn)
    assert ann.model_name == name and ann.config['neuron'] == 'relu'
    assert not any(is_spiking_neuron(m) for m in ann.modules())
    assert any(isinstance(m, nn.ReLU) for m in ann.modules())
    assert snn.state_dict().keys() == ann.state_dict().keys()


def test_unknown_name_is_one_line_naming_the_choices():
    with pytest.raises(ValueError, match='unknown model .*available: ') as err:
        model_class('no-such-net')
    assert '\n' not in str(err.value) and NAMES[0] in str(err.value)


@pytest.mark.parametrize('size', ODD_SIZES)
def test_forward_keeps_any_input_size(small, size):
    _, _, model = small
    img = torch.rand(2, model.in_channels, *size)
    with torch.no_grad():
        out = model(img)
    assert out.shape == img.shape and torch.isfinite(out).all()


def test_forward_is_deterministic_and_resets_state_between_calls(small):
    _, _, model = small
    img, other = torch.rand(1, 3, 13, 21), torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        first = model(img)
        second = model(img)
        model(other)
        after_other = model(img)
    assert torch.equal(first, second)
    assert torch.equal(first, after_other)


def test_wrong_input_layout_is_one_clear_error(small):
    _, _, model = small
    with pytest.raises(ValueError, match=r'expects images shaped \[B,3,H,W\]'):
        model(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r'got \[1, 1, 16, 16\]'):
        model(torch.rand(1, 1, 16, 16))


def test_gradient_reaches_the_first_convolution(small):
    _, _, model = small
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    model.train()
    model.zero_grad()
    try:
        model(torch.rand(1, 3, 16, 16)).square().mean().backward()
    finally:
        model.eval()
    grad = first_conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_weights_round_trip_strictly_and_rebuild_from_checkpoint(small, tmp_path):
    name, overrides, model = small
    path = tmp_path / f'{name}.pth'
    save_weights(model, path)
    fresh = build_model(name, **overrides)
    torch.manual_seed(1)                       # differently initialised before loading
    for p in fresh.parameters():
        nn.init.normal_(p)
    load_weights(fresh, path)
    saved = model.state_dict()
    assert fresh.state_dict().keys() == saved.keys()
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())

    rebuilt = build_from_checkpoint(path).eval()
    assert type(rebuilt) is type(model)
    assert rebuilt.model_name == name and rebuilt.config == model.config
    img = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        assert torch.equal(rebuilt(img), model(img))


def test_strict_load_refuses_a_missing_tensor(small):
    name, overrides, model = small
    partial = dict(model.state_dict())
    dropped = next(iter(partial))
    del partial[dropped]
    with pytest.raises(WeightsError, match=f'missing.*{re.escape(dropped)}'):
        load_weights(build_model(name, **overrides), partial)


def test_ann_twin_of_the_small_config_runs_and_reloads(small, tmp_path):
    name, overrides, _ = small
    torch.manual_seed(0)
    twin = build_model(name, neuron='relu', **overrides).eval()
    path = tmp_path / 'twin.pth'
    save_weights(twin, path)
    rebuilt = build_from_checkpoint(path).eval()
    assert is_ann_twin(rebuilt) and rebuilt.T == twin.T
    img = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        out = twin(img)
        assert out.shape == img.shape and torch.equal(rebuilt(img), out)


def test_every_neuron_gets_a_contiguous_input(small):
    # a strided view into a neuron makes spikingjelly's CUDA (Triton) kernel recompile for every
    # new image size (issue 16); on the CPU it costs a hidden copy per step
    name, _, model = small
    strided = []

    def check(module, args):
        x = args[0]
        if isinstance(x, torch.Tensor) and not x.is_contiguous():
            strided.append(f'{type(module).__name__} {list(x.shape)} strides {x.stride()}')
    hooks = [m.register_forward_pre_hook(check) for m in model.modules() if is_spiking_neuron(m)]
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, 24, 24))
    finally:
        for hook in hooks:
            hook.remove()
    assert hooks and not strided, f'{name}: {strided[:3]}'
