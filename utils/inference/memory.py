"""Memory ahead of time: how much a forward will take, how much there is, and the tiles that fit.

The models keep many full-resolution spiking feature maps alive at once, so a forward takes
kilobytes per pixel (SpikeRain-S on the fast path: about 11 KB, i.e. 135 GB for a 12 MP photo
whole). The peak is linear in the pixels; its coefficients (bytes per pixel and a constant) are
*measured* per model, path (``fast``, ``exact``, ``bf16``) and device by
``tools/measure_memory.py`` and stored in ``memory_table.json`` next to this module. A model
config the table does not hold gets a conservative estimate scaled from its family by width and
time steps. :func:`plan_tiling` compares the estimate with :func:`memory_budget` (the free memory,
less a safety margin, capped) and, only when the image would not fit, picks the grid of blended
tiles that fits with the least recomputed overlap; :func:`check_fits` is what paths that run a
forward whole call first, to warn or refuse with the estimate and the fix.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn

from utils.core.errors import InputError

TABLE_PATH = Path(__file__).with_name('memory_table.json')
BUDGET_ENV = 'SPIKEDERAIN_MEMORY_BUDGET'
# Without SPIKEDERAIN_MEMORY_BUDGET, a forward plans for at most this much (CPU) and at most
# this share of the free memory: "free" is a snapshot that other jobs eat into, and tiles of a
# quarter megapixel or more already cost little overlap (docs/inference.md).
DEFAULT_CPU_CAP = 3 * 2**30
FREE_SHARE = 0.75
SAFETY = 1.1              # on the measured coefficients (run-to-run spread of the allocator)
FALLBACK_SAFETY = 1.5     # on estimates scaled from another config
# Full-size buffers besides the forward when the image and the model share a device: blending's
# output and weights (float32, 16 B) and the caller's conversions to and from uint8.
IMAGE_BYTES_PER_PIXEL = 40


class NotEnoughMemory(InputError, MemoryError):
    """A forward whose estimated peak exceeds the memory there is: refused before it runs."""


def format_bytes(n: float) -> str:
    return f'{n / 1e9:.1f} GB' if n >= 1e8 else f'{n / 1e6:.0f} MB'


def parse_bytes(text: str, what: str = BUDGET_ENV) -> int:
    """``'3G'``, ``'512M'``, ``'2.5e9'`` -> bytes; one-line ``ValueError`` naming ``what``."""
    units = {'': 1, 'B': 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}
    raw = text.strip().upper().removesuffix('IB').removesuffix('B') if text else ''
    unit = raw[-1:] if raw[-1:] in units and raw[-1:] else ''
    try:
        value = float(raw[:-1] if unit else raw) * units[unit]
    except ValueError:
        value = float('nan')
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f'{what}={text!r}: expected a positive size in bytes such as 4G or '
                         f'512M')
    return int(value)


# --- what a forward takes ---------------------------------------------------------------------

def model_path(model: nn.Module) -> str:
    """``fast``, ``bf16`` or ``exact``: which forward the model runs (duck-typed on the
    ``fast_path`` that :mod:`models.acceleration` attaches); ``onnxruntime`` or ``openvino``
    for the exported graph (:class:`models.onnx_runtime.OnnxRestorer`'s ``backend``)."""
    backend = getattr(model, 'backend', None)
    if isinstance(backend, str):
        return backend
    plan = getattr(model, 'fast_path', None)
    if plan is None:
        return 'exact'
    return 'bf16' if getattr(plan.options, 'precision', 'fp32') == 'bf16' else 'fast'


@lru_cache(maxsize=1)
def load_table(path: str = str(TABLE_PATH)) -> dict:
    """The measured coefficients: ``{'entries': [{model, config, path, device,
    bytes_per_pixel, constant_bytes, ...}], 'command': ...}``."""
    return json.loads(Path(path).read_text())


def _comparable(config: dict) -> dict:
    return json.loads(json.dumps(config or {}, default=str))


@dataclass(frozen=True)
class Coefficients:
    """Peak bytes of one forward = ``constant + per_pixel * padded pixels * batch``."""
    per_pixel: float
    constant: float
    source: str           # 'measured' or how it was scaled

    def bytes_for(self, pixels: int, batch: int = 1) -> int:
        return int(self.constant + self.per_pixel * pixels * batch)


def coefficients(model: nn.Module, device: torch.device | str | None = None,
                 table: dict | None = None) -> Coefficients:
    """The measured coefficients of ``model`` (its name, config and path) on ``device``;
    a config the table lacks is scaled from its family (width x time steps, x1.5), a CUDA
    device without entries uses the CPU's. The exported graph without entries of its own uses
    the model's exact torch path (the same maths; measured peaks of both runtimes are lower)."""
    table = table or load_table()
    device = torch.device(device or next(model.parameters()).device)
    name, path = getattr(model, 'model_name', None), model_path(model)
    config = _comparable(getattr(model, 'config', {}))
    entries = table['entries']
    exported = path in ('onnxruntime', 'openvino')
    for wanted in (path, 'exact') if exported else (path,):
        for dev in dict.fromkeys((device.type, 'cpu')):
            for e in entries:
                if (e['model'] == name and e['path'] == wanted and e['device'] == dev
                        and _comparable(e['config']) == config):
                    source = 'measured' if dev == device.type else 'measured on the CPU'
                    if wanted != path:
                        source += ' (the exact torch path)'
                    return Coefficients(e['bytes_per_pixel'] * SAFETY,
                                        e['constant_bytes'] * SAFETY, source)
    if exported:
        path = 'exact'
    family = getattr(model, 'family', None) or type(model).__name__
    dim, steps = float(config.get('dim', 48)), float(config.get('T', 4))
    candidates = [e for e in entries if e['device'] == 'cpu' and e['path'] == path] or \
        [e for e in entries if e['device'] == 'cpu']
    same = [e for e in candidates if e.get('family') == family] or candidates
    per_pixel = max(e['bytes_per_pixel'] * dim / e['config'].get('dim', 48)
                    * steps / e['config'].get('T', 4) for e in same)
    constant = max(e['constant_bytes'] for e in same)
    return Coefficients(per_pixel * FALLBACK_SAFETY, constant * FALLBACK_SAFETY,
                        f'not measured: scaled from {family if same is not candidates else "all"}'
                        f' models by width')


def padded_pixels(h: int, w: int, multiple: int) -> int:
    return (-(-h // multiple) * multiple) * (-(-w // multiple) * multiple)


def estimate_forward(model: nn.Module, h: int, w: int, batch: int = 1,
                     device: torch.device | str | None = None) -> int:
    """Estimated peak bytes of one forward of ``batch`` HxW images (the model pads them)."""
    multiple = getattr(model, 'size_multiple', 4)
    return coefficients(model, device).bytes_for(padded_pixels(h, w, multiple), batch)


# --- what there is ----------------------------------------------------------------------------

def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit, if one is set (v2, then v1)."""
    for limit_file, usage_file in (('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'),
                                   ('/sys/fs/cgroup/memory/memory.limit_in_bytes',
                                    '/sys/fs/cgroup/memory/memory.usage_in_bytes')):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - usage)
    return None


def _mem_available() -> int | None:
    try:
        with open('/proc/meminfo') as fh:
            for line in fh:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory(device: torch.device | str = 'cpu') -> int | None:
    """Bytes a new allocation can use now: free GPU memory (plus what this process's caching
    allocator holds unused), or the CPU's MemAvailable, capped by a cgroup limit. ``None`` where
    the system does not say."""
    device = torch.device(device)
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    found = [v for v in (_mem_available(), _cgroup_room()) if v is not None]
    return min(found) if found else None


@dataclass(frozen=True)
class Budget:
    bytes: int
    available: int | None
    why: str

    def __str__(self) -> str:
        return f'{format_bytes(self.bytes)} ({self.why})'


def memory_budget(device: torch.device | str = 'cpu', budget: int | None = None) -> Budget:
    """What one forward may plan for: ``budget`` if given, else ``SPIKEDERAIN_MEMORY_BUDGET``,
    else 75 % of the free memory, at most 3 GiB on the CPU."""
    device = torch.device(device)
    available = available_memory(device)
    if budget is None and os.environ.get(BUDGET_ENV, '').strip():
        budget = parse_bytes(os.environ[BUDGET_ENV])
        return Budget(budget, available, f'{BUDGET_ENV}={os.environ[BUDGET_ENV].strip()}')
    if budget is not None:
        return Budget(int(budget), available, 'as given')
    cap = DEFAULT_CPU_CAP if device.type == 'cpu' else None
    if available is None:
        return Budget(cap or DEFAULT_CPU_CAP, None,
                      f'the default; free memory unknown; {BUDGET_ENV} to change')
    share = int(available * FREE_SHARE)
    if cap is not None and cap < share:
        return Budget(cap, available, f'the default cap, {format_bytes(available)} free; '
                      f'{BUDGET_ENV} to change')
    return Budget(share, available, f'{FREE_SHARE:.0%} of the {format_bytes(available)} free')


# --- what to do -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TilePlan:
    """Whole (``tile is None``) or tiles of ``tile = (th, tw)`` in a ``grid`` of (rows, cols)."""
    tile: tuple[int, int] | None
    overlap: int
    grid: tuple[int, int]
    estimate: int            # bytes of the plan's forward (+ blending buffers)
    whole_estimate: int      # bytes of the image whole
    budget: Budget

    def describe(self, h: int, w: int) -> str:
        """The one line that says what was chosen and why."""
        if self.tile is None:
            return (f'{w}x{h} image: restored whole (~{format_bytes(self.whole_estimate)}, '
                    f'within the memory budget of {self.budget})')
        th, tw = self.tile
        return (f'{w}x{h} image: restoring it in {self.grid[0]}x{self.grid[1]} tiles of {tw}x{th} '
                f'(overlap {self.overlap}, ~{format_bytes(self.estimate)}): whole needs '
                f'~{format_bytes(self.whole_estimate)}, over the memory budget of {self.budget}; '
                f'--tile N chooses the size, --tile 0 restores whole')

    def recipe(self) -> str:
        if self.tile is None:
            return 'whole'
        return f'tiles {self.tile[1]}x{self.tile[0]} overlap {self.overlap}'


def _tile_side(length: int, count: int, overlap: int, multiple: int) -> int:
    side = -(-(length + (count - 1) * overlap) // count)
    return min(length, -(-side // multiple) * multiple)


def _count(length: int, side: int, overlap: int) -> int:
    return 1 if length <= side else -(-(length - side) // (side - overlap)) + 1


def plan_tiling(model: nn.Module, h: int, w: int, overlap: int = 32, batch_size: int = 1,
                budget: Budget | int | None = None, image_on_model_device: bool = True
                ) -> TilePlan:
    """Whole if the HxW image fits the budget, else the tile grid that fits with the fewest
    pixels computed (tiles a multiple of the model's size multiple, each side covered by
    evenly spread tiles overlapping by at least ``overlap``). ``batch_size`` tiles per forward.
    The full-size blending buffers count when the image lives on the model's device."""
    device = next(model.parameters()).device
    if not isinstance(budget, Budget):
        budget = memory_budget(device, budget)
    coef = coefficients(model, device)
    multiple = getattr(model, 'size_multiple', 4)
    image_bytes = IMAGE_BYTES_PER_PIXEL * h * w if image_on_model_device else 0
    whole = coef.bytes_for(padded_pixels(h, w, multiple)) + image_bytes // 2
    if whole <= budget.bytes:
        return TilePlan(None, 0, (1, 1), whole, whole, budget)
    room = budget.bytes - image_bytes - coef.constant
    max_pixels = room / (coef.per_pixel * batch_size)
    smallest = max(8, 2 * overlap + multiple)
    best = None
    for rows in range(1, max(1, h // max(1, smallest - overlap)) + 1):
        th = _tile_side(h, rows, overlap, multiple)
        if th < min(h, smallest):
            break
        th_padded = -(-th // multiple) * multiple
        tw_max = int(max_pixels // th_padded) // multiple * multiple
        if tw_max < min(w, smallest):
            continue
        cols = 1 if w <= tw_max else -(-(w - overlap) // (tw_max - overlap))
        while _tile_side(w, cols, overlap, multiple) > tw_max:
            cols += 1
        tw = _tile_side(w, cols, overlap, multiple)
        grid = (_count(h, th, overlap), _count(w, tw, overlap))
        cost = grid[0] * grid[1] * (padded_pixels(th, tw, multiple) + 64 * 64)  # + per-tile
        if best is None or cost < best[0]:
            best = (cost, (th, tw), grid)
    if best is None:
        raise NotEnoughMemory(
            f'a {w}x{h} image needs ~{format_bytes(whole)} whole and even the smallest tiles '
            f'({smallest}x{smallest}) need more than the memory budget of {budget}'
            f'; free memory or raise {BUDGET_ENV}')
    _, (th, tw), grid = best
    estimate = coef.bytes_for(padded_pixels(th, tw, multiple), batch_size) + image_bytes
    return TilePlan((th, tw), overlap, grid, estimate, whole, budget)


def largest_tile(model: nn.Module, budget: Budget, batch: int = 1) -> int:
    """The side of the largest square tile whose forward fits ``budget`` (at least 64)."""
    coef = coefficients(model, next(model.parameters()).device)
    multiple = getattr(model, 'size_multiple', 4)
    side = math.isqrt(max(0, int((budget.bytes - coef.constant) / (coef.per_pixel * batch))))
    return max(64, side // multiple * multiple)


def check_fits(model: nn.Module, h: int, w: int, batch: int = 1, *, what: str = 'image',
               fix: str | None = None, budget: Budget | int | None = None) -> str | None:
    """Before a whole forward of ``batch`` HxW images: refuse (:class:`NotEnoughMemory`) if
    the estimate exceeds the free memory, return a warning line if it exceeds the budget,
    else ``None``. ``what`` names the image (file, option), ``fix`` says what to do (default:
    ``use --tile N`` with the largest tile that fits)."""
    device = next(model.parameters()).device
    if not isinstance(budget, Budget):
        budget = memory_budget(device, budget)
    need = estimate_forward(model, h, w, batch, device)
    if need <= budget.bytes:
        return None
    fix = fix or f'use --tile {largest_tile(model, budget)}'
    several = f'{batch} x ' if batch > 1 else ''
    text = (f'{what}: {several}{w}x{h} restored whole needs ~{format_bytes(need)} '
            f'({getattr(model, "model_name", type(model).__name__)}, {model_path(model)} path, '
            f'{device.type})')
    if budget.available is not None and need > budget.available:
        raise NotEnoughMemory(f'{text}, more than the {format_bytes(budget.available)} free; '
                              f'{fix}')
    return f'{text}, over the memory budget of {budget}; if it runs out, {fix}'
