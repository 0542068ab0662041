"""Every way to deploy one model, timed with its peak memory, each in a fresh process.

A *path* is how an image gets restored: torch's exact forward, its default fast path, its bf16
path, or the exported graph in ONNX Runtime (fp32, int8) or OpenVINO (fp32, bf16, int8,
int8+bf16). :func:`measure_path` builds one path in a fresh process (so its high-water mark
is its own), takes the peak memory of its first call over what the loaded model holds, then
times further calls; :func:`measure_floor` times the model's convolutions alone in fp32 (the
*conv floor* of :mod:`utils.efficiency.benchmark`) the same way. tools/deploy_benchmark.py
puts them side by side with each path's quality.
"""
from __future__ import annotations

import statistics
import time

import torch

from .benchmark import Job, prepare, read_peak, reset_peak, run_isolated

TORCH_PATHS = ('torch exact', 'torch default', 'torch bf16')
EXPORTED_PATHS = ('onnxruntime fp32', 'onnxruntime int8', 'openvino fp32', 'openvino bf16',
                  'openvino int8', 'openvino int8+bf16')


def available_paths(bf16: bool, exported: bool = True) -> list[str]:
    """The paths this machine runs (``bf16``: the CPU computes bfloat16 natively;
    ``exported``: onnx, onnxruntime and openvino are installed)."""
    paths = [p for p in TORCH_PATHS if bf16 or not p.endswith('bf16')]
    if exported:
        paths += [p for p in EXPORTED_PATHS if bf16 or not p.endswith('bf16')]
    return paths


def build_path(path: str, weights: str, graphs: dict[str, str], threads: int):
    """``path`` as a callable ``image [1,3,H,W] -> restored``. ``graphs`` holds the exported
    files: ``{'fp32': ..., 'int8': ...}`` (models/export.py, models/quantize.py)."""
    from models import build_from_checkpoint
    from models.acceleration import optimize_for_inference, plain_forward
    from models.onnx_runtime import OnnxRestorer
    model = build_from_checkpoint(weights).eval()
    if path == 'torch exact':
        def exact(x):
            with plain_forward(model):
                return model(x)
        return exact
    if path == 'torch default':
        return optimize_for_inference(model)
    if path == 'torch bf16':
        return optimize_for_inference(model, precision='bf16')
    runtime, precision = path.split(' ')
    graph = graphs['int8' if precision.startswith('int8') else 'fp32']
    return OnnxRestorer(graph, model, threads, runtime=runtime, precision=precision)


def _timed_calls(fn, x, repeats: int, budget_s: float) -> list[float]:
    times = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return times


@torch.no_grad()
def _measure_path(path: str, weights: str, graphs: dict, size: int, threads: int,
                  repeats: int, budget_s: float) -> dict:
    torch.set_num_threads(threads)
    fn = build_path(path, weights, graphs, threads)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    base = reset_peak(torch.device('cpu'))
    start = time.perf_counter()
    fn(x)                                             # the first call: peak memory, warm-up
    first = time.perf_counter() - start
    peak = max(0, read_peak(torch.device('cpu')) - base)
    times = _timed_calls(fn, x, repeats, budget_s)
    return {'first_s': first, 'times': times, 'median_s': statistics.median(times),
            'peak_bytes': peak}


def measure_path(path: str, weights: str, graphs: dict, size: int, threads: int = 1,
                 repeats: int = 3, budget_s: float = 60.0) -> dict:
    """Peak memory of the first call of ``path`` on a ``size`` x ``size`` image (over the
    loaded model), then at least one and at most ``repeats`` timed calls (fewer once
    ``budget_s`` seconds are spent); in a fresh process."""
    return run_isolated(_measure_path, path, weights, graphs, size, threads, repeats, budget_s,
                        what=f'{path} at {size}x{size}')


def _measure_floor(model_name: str, size: int, threads: int, repeats: int,
                   budget_s: float) -> dict:
    torch.set_num_threads(threads)
    fn, extra = prepare(Job('floor_inference', model_name, 'conv_floor', size=size))
    fn()
    times = _timed_calls(lambda _: fn(), None, repeats, budget_s)
    return {'times': times, 'median_s': statistics.median(times), **extra}


def measure_floor(model_name: str, size: int, threads: int = 1, repeats: int = 3,
                  budget_s: float = 60.0) -> dict:
    """The fp32 conv floor of ``model_name`` at ``size`` x ``size`` (its convs alone, one
    warm-up call, then timed as :func:`measure_path`), in a fresh process."""
    return run_isolated(_measure_floor, model_name, size, threads, repeats, budget_s,
                        what=f'{model_name} conv floor at {size}x{size}')
