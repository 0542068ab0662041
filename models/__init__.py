"""Spiking derainers. ``build_model(name, **overrides)`` and ``load_weights(model, src)``.

``MODEL_REGISTRY`` maps each name to its class and default constructor kwargs, in plain sight:
follow a name to its class from here. Overrides use the official constructors' keyword names,
e.g. ``build_model('spikerain-s', dim=16, en_num_blocks=[1,1,1,1], T=4)``.
``build_model(name, neuron='relu')`` builds the model's ANN twin (see :func:`model_config`).
Every class is a :class:`~models.base.SpikingRestorer`, whose docstring lists what each model
provides; tests/test_model_contract.py checks it for every registered name.
"""
from __future__ import annotations

import copy
import inspect

import torch.nn as nn

from .base import SpikingRestorer
from .esdnet import ESDNet
from .spikerain import SpikeRain
from .spiking import replace_spiking_neurons, reset_spiking_state
from .vlifnet import VLIFNet
from .weights import (WeightsError, describe_state_dict, extract_state_dict, load_weights,
                      read_checkpoint, save_weights)
from .weights import check_config_fits

# name -> (class, default constructor kwargs). en/de_num_blocks: blocks per U-Net level.
MODEL_REGISTRY: dict[str, tuple[type[SpikingRestorer], dict]] = {
    'spikerain-s': (SpikeRain, dict(dim=32, en_num_blocks=[2, 2, 4, 4],
                                    de_num_blocks=[1, 1, 1, 1], T=4)),
    'spikerain-m': (SpikeRain, dict(dim=48, en_num_blocks=[4, 4, 8, 8],
                                    de_num_blocks=[2, 2, 2, 2], T=4)),
    'spikerain-l': (SpikeRain, dict(dim=64, en_num_blocks=[6, 6, 8, 10],
                                    de_num_blocks=[4, 4, 4, 4], T=4)),
    # A CPU-sized SpikeRain (the golden 'tiny' config) for tests, demos and quick experiments.
    'spikerain-tiny': (SpikeRain, dict(dim=16, en_num_blocks=[1, 1, 1, 1],
                                       de_num_blocks=[1, 1, 1, 1], T=4)),
    'esdnet': (ESDNet, dict(dim=48, en_num_blocks=[4, 4, 8, 8],
                            de_num_blocks=[2, 2, 2, 2], T=4)),
    'esdnet-tiny': (ESDNet, dict(dim=16, en_num_blocks=[1, 1, 1, 1],
                                 de_num_blocks=[1, 1, 1, 1], T=4)),
    # VLIF-Net: the official dim 48 layout; '-l' adds the 4 refinement SDEMs of the Rain200L
    # weights; '-tiny' is the golden CPU config.
    'vlif-net': (VLIFNet, dict(dim=48, en_num_blocks=[4, 4, 8, 8],
                               de_num_blocks=[2, 2, 2, 2], T=4, use_refinement=False)),
    'vlif-net-l': (VLIFNet, dict(dim=48, en_num_blocks=[4, 4, 8, 8],
                                 de_num_blocks=[2, 2, 2, 2], T=4, use_refinement=True)),
    'vlif-net-tiny': (VLIFNet, dict(dim=16, en_num_blocks=[1, 1, 1, 1],
                                    de_num_blocks=[1, 1, 1, 1], T=4, use_refinement=False)),
}


def available_models() -> list[str]:
    return sorted(MODEL_REGISTRY)


# What replaces the spiking neurons: 'lif' keeps the model's own spiking units (LIF, and
# VLIF-Net's NI-LIF/VLIF), 'relu' builds the ANN twin.
NEURONS = ('lif', 'relu')


def model_class(name: str) -> type[SpikingRestorer]:
    """The class a registered name builds."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f'unknown model {name!r}; available: {", ".join(available_models())}')
    return MODEL_REGISTRY[name][0]


def model_config(name: str, **overrides) -> dict:
    """The constructor kwargs a registered name builds with (defaults + overrides).

    ``neuron='relu'`` asks for the ANN twin: recorded as ``neuron: relu`` (so checkpoints
    rebuild the twin), with ``T = 1`` where the time axis only repeats the image (SpikeRain)
    unless ``T`` is given. ESDNet and VLIF-Net keep their T: their attention has a learned MLP
    over the T steps, so the steps differ even without spikes. ``neuron='lif'`` (the default)
    adds nothing, so spiking configs and checkpoints stay as they were.
    """
    cls = model_class(name)
    # A deep copy: a model's config must not share lists with the registry's defaults.
    cfg = {**copy.deepcopy(MODEL_REGISTRY[name][1]), **overrides}
    neuron = cfg.pop('neuron', 'lif')
    if neuron not in NEURONS:
        raise ValueError(f'{name}: neuron {neuron!r} unknown; choose one of {", ".join(NEURONS)}')
    if neuron == 'relu':
        cfg['neuron'] = 'relu'
        if 'T' not in overrides and cls.ann_single_step:
            cfg['T'] = 1
    return cfg


def build_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` replace the default constructor kwargs.

    ``neuron='relu'`` builds the ANN twin: the same modules and parameter names with every
    spiking neuron replaced by a ReLU (see :func:`model_config` for T).
    """
    cfg = model_config(name, **overrides)
    cls = model_class(name)
    kwargs = {k: v for k, v in cfg.items() if k != 'neuron'}
    accepted = set(inspect.signature(cls.__init__).parameters) - {'self'}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f'{name}: unknown option(s) {unknown}; accepted: '
                         f'{sorted(accepted | {"neuron"})}')
    model = cls(**kwargs)
    if cfg.get('neuron') == 'relu':
        replace_spiking_neurons(model)
    model.model_name = name
    model.config = cfg
    return model


def is_ann_twin(model: nn.Module) -> bool:
    """True for a model built with ``neuron='relu'``."""
    return getattr(model, 'config', {}).get('neuron') == 'relu'


def build_from_checkpoint(src, name: str | None = None, **overrides) -> nn.Module:
    """Build the model a checkpoint was saved from and load it (strictly).

    Our checkpoints record ``model_name`` and ``model_config``; official ones do not, so
    ``name`` is required for them. If both are given and disagree, the checkpoint's config wins
    only for the architecture kwargs; a different name is an error that names both.
    """
    obj = read_checkpoint(src) if not isinstance(src, dict) else src
    saved_name = obj.get('model_name') if isinstance(obj, dict) else None
    saved_cfg = obj.get('model_config') if isinstance(obj, dict) else None
    label = str(src) if not isinstance(src, dict) else 'checkpoint'
    if name is None and saved_name is None:
        sd = extract_state_dict(obj, label)
        raise WeightsError(f'{label}: the checkpoint does not say which model it is; pass --model '
                           f'(one of {", ".join(available_models())}); it has '
                           f'{describe_state_dict(sd)}')
    if name is not None and saved_name is not None and name != saved_name:
        raise WeightsError(f'{label}: checkpoint was saved from model {saved_name!r}, '
                           f'but {name!r} was requested')
    cfg = {**(saved_cfg or {}), **overrides} if saved_name is not None else overrides
    if saved_cfg:                    # a stored config must fit the stored tensors (issue 15)
        check_config_fits(build_model, name or saved_name, cfg, obj, label,
                          defaults=model_config(name or saved_name))
    model = build_model(name or saved_name, **cfg)
    load_weights(model, obj if isinstance(obj, dict) else src, source=label)
    return model


__all__ = ['MODEL_REGISTRY', 'NEURONS', 'ESDNet', 'SpikeRain', 'SpikingRestorer', 'VLIFNet',
           'WeightsError', 'available_models', 'build_from_checkpoint', 'build_model',
           'is_ann_twin', 'load_weights', 'model_class', 'model_config', 'reset_spiking_state',
           'save_weights']
