"""The model registry: each name -> its class and default constructor kwargs, in plain sight.

Follow a name to its class from here. ``build_model(name, **overrides)`` builds one; overrides
use the official constructors' keyword names, e.g.
``build_model('spikerain-s', dim=16, en_num_blocks=[1,1,1,1], T=4)``;
``build_model(name, neuron='relu')`` builds the model's ANN twin (see :func:`model_config`).
Building from a checkpoint (which records a name and a config) is
:func:`models.weights.build_from_checkpoint`, beside the checks it runs on the file.
"""
from __future__ import annotations

import copy
import inspect

import torch.nn as nn

from .base import SpikingRestorer
from .esdnet import ESDNet
from .spikerain import SpikeRain
from .spiking import replace_spiking_neurons
from .vlifnet import VLIFNet

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
