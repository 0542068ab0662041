"""Spiking derainers. ``build_model(name, **overrides)`` and ``load_weights(model, src)``.

The registry (:mod:`models.registry`) maps each name to its class and default constructor
kwargs; ``build_model(name, neuron='relu')`` builds the model's ANN twin. Weights and
checkpoints (strict loading, ``build_from_checkpoint``) are :mod:`models.weights`.
Every class is a :class:`~models.base.SpikingRestorer`, whose docstring lists what each model
provides; tests/models/test_model_contract.py checks it for every registered name.
"""
from __future__ import annotations

from .base import SpikingRestorer
from .esdnet import ESDNet
from .registry import (MODEL_REGISTRY, NEURONS, available_models, build_model, is_ann_twin,
                       model_class, model_config)
from .spikerain import SpikeRain
from .spiking import reset_spiking_state
from .vlifnet import VLIFNet
from .weights import WeightsError, build_from_checkpoint, load_weights, save_weights

__all__ = ['MODEL_REGISTRY', 'NEURONS', 'ESDNet', 'SpikeRain', 'SpikingRestorer', 'VLIFNet',
           'WeightsError', 'available_models', 'build_from_checkpoint', 'build_model',
           'is_ann_twin', 'load_weights', 'model_class', 'model_config', 'reset_spiking_state',
           'save_weights']
