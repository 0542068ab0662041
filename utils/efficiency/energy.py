"""Parameters, MACs, firing rates, synaptic operations and energy, as SNN papers count them.

Convention (``docs/protocol.md``): MACs are counted densely by
``torch.utils.flop_counter`` (MACs = FLOPs / 2, all T steps). A layer whose input is the output
of a spiking neuron does accumulates only where a spike arrived, so it costs
``E_AC × SOPs`` with ``SOPs = input firing rate × MACs``; every other layer (the image conv,
attention gates, refinement head, output conv, ...) costs ``E_MAC × MACs``.

A layer counts as spike-fed when the tensor it receives *is* a neuron's output (tracked by
identity during the forward pass), i.e. a conv directly after a LIF; anything computed from
spikes in between (pooling, interpolation, gating) makes the input real-valued. Multi-level
neurons (a ``levels`` attribute, e.g. VLIF-Net's NI-LIF, output k/levels) count k events for a
spike of value k/levels.

MACs are counted on the meta device (no arithmetic, so the papers' 256×256 size is instant);
firing rates come from real forward passes on real images.

What a MAC, a synaptic operation (SOP) and an emitted spike cost is a named
:class:`EnergyConvention` (``ENERGY_CONVENTIONS``): ``horowitz`` (the 45 nm figures above, no
spike term, 256×256) and ``papers`` (the SNN deraining papers' 12.5 pJ / 77 fJ / 3.7 pJ per
spike at 128×128). Counts are the same under both; only the prices and the profile size change.
"""
from __future__ import annotations

import copy
import weakref
from dataclasses import asdict, dataclass, field
from collections.abc import Iterable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from models.spiking import is_spiking_neuron  # noqa: F401  (one definition, shared)

E_MAC_PJ = 4.6      # 32-bit float multiply-accumulate at 45 nm (Horowitz, ISSCC 2014)
E_AC_PJ = 0.9       # 32-bit float accumulate
PJ_PER_MJ = 1e9


@dataclass(frozen=True)
class EnergyConvention:
    """The prices of one forward pass, and the input side the counts are quoted at.

    energy = ``e_mac_pj`` x MACs of real-input layers + ``e_sop_pj`` x SOPs of spike-input
    layers + ``e_spike_pj`` x spikes emitted by the neurons. Papers differ in these numbers, so
    a figure means nothing without its convention: reports carry it, and tables print it.
    """
    name: str
    e_mac_pj: float
    e_sop_pj: float
    e_spike_pj: float
    size: int
    source: str

    def formula(self) -> str:
        terms = [f'{self.e_mac_pj:g} pJ x MACs of real-input layers',
                 f'{self.e_sop_pj:g} pJ x SOPs of spike-input layers']
        if self.e_spike_pj:
            terms.append(f'{self.e_spike_pj:g} pJ x emitted spikes')
        return 'energy = ' + ' + '.join(terms)


HOROWITZ = EnergyConvention(
    'horowitz', E_MAC_PJ, E_AC_PJ, 0.0, 256,
    'Horowitz, "Computing\'s energy problem", ISSCC 2014: 45 nm, 32-bit float MAC 4.6 pJ, '
    'add 0.9 pJ; the figures most SNN papers use; no charge per spike; profiled at 256x256')
PAPERS = EnergyConvention(
    'papers', 12.5, 0.077, 3.7, 128,
    'the SNN deraining papers: VLIF-Net (Chen et al., AAAI 2026) experimental setup as quoted '
    'by the official SpikeRain complexity script (tanvirnwu/SpikeRain_WACV_2025, '
    'model_complexity.py, "conv_only" mode), which cites Hu, Tang & Pan 2021 and Song et al. '
    '2024 (ESDNet): 45 nm, 12.5 pJ per MAC of real-valued inputs, 77 fJ per SOP, 3.7 pJ per '
    'emitted spike ("Sign" operation), conv/linear layers only, MACs = FLOPs/2, one forward '
    'at 128x128. Second-hand: the papers\' own tables were not available to us')
ENERGY_CONVENTIONS: dict[str, EnergyConvention] = {c.name: c for c in (HOROWITZ, PAPERS)}


def get_convention(convention: str | EnergyConvention) -> EnergyConvention:
    """A convention by name (or as given); ValueError naming the known ones."""
    if isinstance(convention, EnergyConvention):
        return convention
    try:
        return ENERGY_CONVENTIONS[convention]
    except KeyError:
        raise ValueError(f'unknown energy convention {convention!r}; choose one of '
                         f'{", ".join(ENERGY_CONVENTIONS)}') from None


def module_spike_levels(module: nn.Module) -> int:
    """Events per unit of output: 1 for binary spikes, ``levels`` for k/levels spikes."""
    return int(getattr(module, 'levels', 1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _SpikeTracker:
    """Remembers which tensors are neuron outputs, and which layers receive them."""

    def __init__(self, model: nn.Module):
        self.outputs: dict[int, tuple[weakref.ref, int]] = {}
        self.neurons = {m: n for n, m in model.named_modules() if is_spiking_neuron(m)}
        self.handles = [m.register_forward_hook(self._on_neuron) for m in self.neurons]

    def _on_neuron(self, module, inputs, output):
        if isinstance(output, torch.Tensor):
            self.outputs[id(output)] = (weakref.ref(output), module_spike_levels(module))

    def levels_of(self, tensor) -> int | None:
        """``levels`` of the neuron that produced ``tensor``, or None for real values."""
        entry = self.outputs.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose own forward does MAC work (convs, linears)."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))}


def count_macs(model: nn.Module, size: tuple[int, int] = (256, 256), batch: int = 1
               ) -> tuple[dict[str, int], dict[str, bool]]:
    """MACs of every layer for one ``[batch,3,H,W]`` input, and whether the layer is spike-fed.

    Runs a copy of the model on the meta device under ``FlopCounterMode``. Work done outside any
    conv/linear module is reported under ``'<module> (own ops)'`` so the layers always sum to
    the total.
    """
    macs, spike_fed, _ = _meta_counts(model, size, batch)
    return macs, spike_fed


def count_neuron_outputs(model: nn.Module, size: tuple[int, int] = (256, 256), batch: int = 1
                         ) -> dict[str, int]:
    """Output elements of every spiking neuron (all T steps) for one ``[batch,3,H,W]`` input.

    Firing rate x these = spikes emitted at ``size``, the count the papers charge per spike.
    """
    return _meta_counts(model, size, batch)[2]


def _meta_counts(model: nn.Module, size: tuple[int, int], batch: int
                 ) -> tuple[dict[str, int], dict[str, bool], dict[str, int]]:
    meta = copy.deepcopy(model).to('meta').eval()
    tracker = _SpikeTracker(meta)
    spike_fed: dict[str, bool] = {}
    units: dict[str, int] = {}
    layers = _layer_modules(meta)

    def on_layer(mod, inp, n):
        spike_fed.setdefault(n, tracker.levels_of(inp[0]) is not None)

    def on_neuron(mod, inp, out, n):
        units[n] = units.get(n, 0) + out.numel()
    handles = [m.register_forward_pre_hook(lambda mod, inp, n=n: on_layer(mod, inp, n))
               for n, m in layers.items()]
    handles += [m.register_forward_hook(lambda mod, inp, out, n=n: on_neuron(mod, inp, out, n))
                for m, n in tracker.neurons.items()]
    counter = FlopCounterMode(display=False)
    x = torch.empty(batch, getattr(model, 'in_channels', 3), *size, device='meta')
    try:
        with torch.no_grad(), counter:
            meta(x)
    finally:
        tracker.remove()
        for h in handles:
            h.remove()
    root = type(meta).__name__
    totals = {k[len(root) + 1:] if k != root else '': sum(v.values())
              for k, v in counter.get_flop_counts().items()
              if k == root or k.startswith(root + '.')}
    own = dict(totals)
    for name, flops in totals.items():           # subtract each module from its nearest
        parent = name                              # counted ancestor (containers such as
        while parent:                              # ModuleList are never called, so skip them)
            parent = parent.rpartition('.')[0]
            if parent in totals:
                own[parent] -= flops
                break
    macs = {(n if n in layers else f'{n or root} (own ops)'): f // 2
            for n, f in own.items() if f > 0}
    return macs, {n: spike_fed.get(n, False) for n in macs}, units


@dataclass
class RateCounts:
    """Running sums of spikes (events) and units over the images seen."""
    events: dict[str, float] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, events: float, units: int) -> None:
        self.events[name] = self.events.get(name, 0.0) + events
        self.units[name] = self.units.get(name, 0) + units

    def rate(self, name: str) -> float:
        return self.events[name] / self.units[name] if self.units.get(name) else 0.0

    def pooled(self) -> float:
        total = sum(self.units.values())
        return sum(self.events.values()) / total if total else 0.0


@torch.no_grad()
def measure_firing_rates(model: nn.Module, images: Iterable[torch.Tensor]
                         ) -> tuple[RateCounts, RateCounts]:
    """Firing rates of every neuron (its output) and of every spike-fed layer (its input).

    ``images`` are ``[1,3,H,W]`` (or batched) tensors in [0,1]; the model runs as it is (use
    ``model.eval()`` and trained weights for meaningful rates).
    """
    neurons, layer_inputs = RateCounts(), RateCounts()
    tracker = _SpikeTracker(model)
    names = dict(tracker.neurons)
    handles = [m.register_forward_hook(
        lambda mod, inp, out, n=n: neurons.add(n, float(out.sum()) * module_spike_levels(mod),
                                               out.numel()))
        for m, n in names.items()]

    def on_layer(mod, inp, n):
        levels = tracker.levels_of(inp[0])
        if levels is not None:
            layer_inputs.add(n, float(inp[0].sum()) * levels, inp[0].numel())
    handles += [m.register_forward_pre_hook(lambda mod, inp, n=n: on_layer(mod, inp, n))
                for n, m in _layer_modules(model).items()]
    device = next(model.parameters()).device
    try:
        for img in images:
            model(img.to(device))
    finally:
        tracker.remove()
        for h in handles:
            h.remove()
    return neurons, layer_inputs


@dataclass
class LayerEnergy:
    name: str
    input: str              # 'spike' or 'real'
    macs: int
    input_rate: float | None
    sops: float
    energy_pj: float


@dataclass
class EnergyReport:
    params: int
    size: tuple[int, int]
    layers: list[LayerEnergy]
    neuron_rates: dict[str, float]
    mean_firing_rate: float  # neuron-weighted (all spikes / all neuron outputs)
    spikes: float = 0.0      # events emitted by all neurons in one forward at ``size``
    convention: EnergyConvention = HOROWITZ

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def real_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if layer.input == 'real')

    @property
    def sops(self) -> float:
        return sum(layer.sops for layer in self.layers)

    @property
    def spike_energy_pj(self) -> float:
        return self.convention.e_spike_pj * self.spikes

    @property
    def energy_mj(self) -> float:
        return (sum(layer.energy_pj for layer in self.layers) + self.spike_energy_pj) / PJ_PER_MJ

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(macs=self.macs, gmacs=self.macs / 1e9, real_macs=self.real_macs,
                 sops=self.sops, spike_energy_pj=self.spike_energy_pj, energy_mj=self.energy_mj)
        return d


def layer_energy(name: str, macs: int, spike_fed: bool, rate: float,
                 convention: EnergyConvention = HOROWITZ) -> LayerEnergy:
    """One layer's cost: E_SOP × rate × MACs if fed by spikes, else E_MAC × MACs."""
    if spike_fed:
        sops = rate * macs
        return LayerEnergy(name, 'spike', macs, rate, sops, convention.e_sop_pj * sops)
    return LayerEnergy(name, 'real', macs, None, 0.0, convention.e_mac_pj * macs)


def energy_report(model: nn.Module, images: Iterable[torch.Tensor],
                  size: tuple[int, int] | None = None,
                  convention: str | EnergyConvention = HOROWITZ) -> EnergyReport:
    """MACs at ``size`` (batch 1; default: the convention's size), firing rates measured on
    ``images``, energy per layer plus the spike term, priced by ``convention``."""
    convention = get_convention(convention)
    size = tuple(size) if size is not None else (convention.size, convention.size)
    macs, spike_fed, units = _meta_counts(model, size, 1)
    neurons, inputs = measure_firing_rates(model, images)
    layers = [layer_energy(n, m, spike_fed[n], inputs.rate(n), convention)
              for n, m in macs.items()]
    spikes = sum(neurons.rate(n) * u for n, u in units.items())
    return EnergyReport(count_parameters(model), size, layers,
                        {n: neurons.rate(n) for n in neurons.units}, neurons.pooled(),
                        spikes, convention)


def synthetic_rainy_pairs(n: int = 2, size: int = 64, seed: int = 0
                          ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(rainy, clean)`` ``[1,3,size,size]`` pairs: smooth random scenes under light rain.

    Stand-ins when no real images are at hand; firing rates on them only show that the
    pipeline works, so report rates measured on real test images.
    """
    import numpy as np
    from utils.data.rain import add_rain
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    pairs = []
    for i in range(n):
        scene = np.full((size, size, 3), 0.5)
        for c in range(3):
            for _ in range(3):
                fy, fx, phase = rng.uniform(0.5, 4), rng.uniform(0.5, 4), rng.uniform(0, 6.3)
                scene[..., c] += np.sin(2 * np.pi * (fy * yy + fx * xx) + phase) / 6
        clean = np.clip(scene * 255, 0, 255).astype(np.uint8)
        rainy = add_rain(clean, 'light', seed=[seed, i])
        pairs.append(tuple(torch.from_numpy(a).permute(2, 0, 1).float().div(255)[None]
                           for a in (rainy, clean)))
    return pairs


def synthetic_rainy_images(n: int = 2, size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    """The rainy halves of :func:`synthetic_rainy_pairs`."""
    return [rainy for rainy, _ in synthetic_rainy_pairs(n, size, seed)]
