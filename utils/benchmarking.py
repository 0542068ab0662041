"""Timing and peak memory of a model's inference and training step, and its convolution floor.

The *conv floor* is the time of the model's convolutions alone: every conv call of one forward
(recorded on the meta device, so recording is free) replayed with ``F.conv2d``/``F.conv3d`` on
channels-last tensors of the same shapes. ``model time / conv floor`` says how much of the time
is overhead around the arithmetic that cannot be avoided.

Each measurement runs in a fresh process (``multiprocessing`` spawn): peak memory is then the
process's own high-water mark, not memory a previous variant left in the allocator, and one
variant's warm caches do not help the next.
"""
from __future__ import annotations

import copy
import multiprocessing as mp
import os
import queue as queue_module
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

INFERENCE_VARIANTS = {
    'plain': 'reference eager path (NCHW, spikingjelly LIF)',
    'channels_last': 'channels-last weights/activations only',
    'fused_exact': 'fused LIF + dense-block spike reuse + patch embed once (NCHW, no BN '
                   'folding: the golden-exact fast path)',
    'fast': 'optimize_for_inference defaults: fused LIF, channels-last, fast attention, '
            'BN folded, patch embed once',
    'fast_compiled': 'fast + compile_lif=True (torch.compile kernel, compiled in the warm-up)',
}
TRAINING_VARIANTS = {
    'plain': 'reference eager path',
    'fast': 'enable_fast_training() defaults: fused LIF autograd, channels-last, fast '
            'attention, patch embed once',
    'fast_checkpoint': 'enable_fast_training(checkpoint=True): the above + per-block '
                       'recomputation (saves memory, costs time)',
}


@dataclass(frozen=True)
class Job:
    """One measurement, run in its own process."""
    task: str            # 'inference', 'training' or 'floor_inference' / 'floor_training'
    model: str
    variant: str
    size: int = 256      # inference image side
    batch: int = 4       # training batch
    patch: int = 64      # training patch side
    runs: int = 3
    warmup: int = 1
    threads: int = 0
    device: str = 'cpu'
    seed: int = 0


# ---- peak memory ----------------------------------------------------------------------------
def _proc_status(key: str) -> int | None:
    try:
        with open('/proc/self/status') as fh:
            for line in fh:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak(device: torch.device) -> int:
    """Start a new high-water mark; returns the baseline in bytes."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        with open('/proc/self/clear_refs', 'w') as fh:   # Linux: resets VmHWM to VmRSS
            fh.write('5')
    except OSError:
        pass
    rss = _proc_status('VmRSS')
    return rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak(device: torch.device) -> int:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
    hwm = _proc_status('VmHWM')
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- building the variants ------------------------------------------------------------------
def build_variant(job: Job) -> nn.Module:
    from models import build_model
    from models.acceleration import enable_fast_training, optimize_for_inference
    torch.manual_seed(job.seed)
    model = build_model(job.model)
    if job.task == 'inference':
        model.eval()
        if job.variant == 'channels_last':
            model = optimize_for_inference(model, fold_bn=False, fused_lif=False,
                                           fast_attention=False, patch_embed_once=False)
        elif job.variant == 'fused_exact':
            model = optimize_for_inference(model, fold_bn=False, channels_last=False,
                                           fast_attention=False)
        elif job.variant == 'fast':
            model = optimize_for_inference(model)
        elif job.variant == 'fast_compiled':
            model = optimize_for_inference(model, compile_lif=True)
        elif job.variant != 'plain':
            raise ValueError(f'unknown inference variant {job.variant!r}')
    else:
        model.train()
        if job.variant in ('fast', 'fast_checkpoint'):
            enable_fast_training(model, checkpoint=job.variant == 'fast_checkpoint')
        elif job.variant != 'plain':
            raise ValueError(f'unknown training variant {job.variant!r}')
    return model


# ---- conv floor -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvCall:
    weight_shape: tuple
    input_shape: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    bias: bool


def record_conv_calls(model: nn.Module, input_shape: tuple, train: bool) -> list[ConvCall]:
    """Every conv call of one forward, with the shapes it sees (a meta-device copy runs)."""
    meta = copy.deepcopy(model).to('meta').train(train)
    calls: list[ConvCall] = []

    def hook(mod, inputs):
        x = inputs[0]
        shape = tuple(x.shape)
        if isinstance(mod, nn.Conv2d) and x.dim() == 5:    # spikingjelly multi-step conv
            shape = (shape[0] * shape[1],) + shape[2:]
        calls.append(ConvCall(tuple(mod.weight.shape), shape, mod.stride, mod.padding,
                              mod.dilation, mod.groups, mod.bias is not None))
    handles = [m.register_forward_pre_hook(hook) for m in meta.modules()
               if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad():
            meta(torch.empty(input_shape, device='meta'))
    finally:
        for h in handles:
            h.remove()
    return calls


def _conv_operands(calls: list[ConvCall], device: torch.device, requires_grad: bool):
    ops = []
    for c in calls:
        fmt = torch.channels_last if len(c.input_shape) == 4 else torch.channels_last_3d
        x = torch.rand(c.input_shape, device=device).contiguous(memory_format=fmt)
        w = torch.randn(c.weight_shape, device=device).contiguous(memory_format=fmt)
        b = torch.randn(c.weight_shape[0], device=device) if c.bias else None
        if requires_grad:
            x.requires_grad_(True)
            w.requires_grad_(True)
        conv = F.conv2d if len(c.input_shape) == 4 else F.conv3d
        ops.append((conv, x, w, b, c))
    return ops


def _conv_floor_once(ops, backward: bool) -> None:
    for conv, x, w, b, c in ops:
        y = conv(x, w, b, c.stride, c.padding, c.dilation, c.groups)
        if backward:
            y.backward(torch.ones_like(y))


# ---- timing ---------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, runs: int, warmup: int) -> tuple[list[float], int]:
    """Run times of ``fn`` after ``warmup`` calls, and the peak memory of its first call.

    The peak is taken on the first call: later calls reuse memory the allocator kept, which a
    process high-water mark cannot see.
    """
    base = _reset_peak(device)
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i == 0:
            peak = max(0, _peak(device) - base)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, peak


def run_job(job: Job) -> dict:
    """Measure one job in this process: ``{'times': [...], 'median_s', 'peak_bytes'}``."""
    if job.threads:
        torch.set_num_threads(job.threads)
    device = torch.device(job.device)
    gen = torch.Generator().manual_seed(job.seed)
    if job.task in ('inference', 'floor_inference'):
        shape = (1, 3, job.size, job.size)
    else:
        shape = (job.batch, 3, job.patch, job.patch)
    x = torch.rand(shape, generator=gen).to(device)
    if job.task.startswith('floor'):
        from models import build_model
        calls = record_conv_calls(build_model(job.model), shape, job.task == 'floor_training')
        ops = _conv_operands(calls, device, job.task == 'floor_training')
        backward = job.task == 'floor_training'
        with torch.set_grad_enabled(backward):
            times, peak = _timed(lambda: _conv_floor_once(ops, backward), device, job.runs,
                                 job.warmup)
        extra = {'conv_calls': len(calls)}
    elif job.task == 'inference':
        model = build_variant(job).to(device)
        with torch.no_grad():
            times, peak = _timed(lambda: model(x), device, job.runs, job.warmup)
        extra = {}
    elif job.task == 'training':
        model = build_variant(job).to(device)
        target = torch.rand(shape, generator=gen).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            F.l1_loss(model(x), target).backward()
            opt.step()
        times, peak = _timed(step, device, job.runs, job.warmup)
        extra = {}
    else:
        raise ValueError(f'unknown task {job.task!r}')
    return {'times': times, 'median_s': statistics.median(times), 'peak_bytes': peak,
            'threads': torch.get_num_threads(), **extra}


def _child(job: Job, queue) -> None:
    try:
        queue.put(('ok', run_job(job)))
    except Exception as err:                       # reported by the parent, one line
        queue.put(('error', f'{type(err).__name__}: {err}'))


def run_isolated(job: Job) -> dict:
    """:func:`run_job` in a fresh spawned process (clean peak memory, no shared warm state)."""
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    proc = ctx.Process(target=_child, args=(job, queue))
    proc.start()
    while True:
        try:
            status, result = queue.get(timeout=2.0)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f'{job.task} {job.variant}: the measuring process died '
                                   f'(exit code {proc.exitcode}; out of memory?)') from None
    proc.join()
    if status != 'ok':
        raise RuntimeError(f'{job.task} {job.variant}: {result}')
    return result
