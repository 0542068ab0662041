"""Timing and peak memory of a model's inference and training step, and its convolution floor.

The *conv floor* is the time of the model's convolutions alone: every conv call of one forward
(recorded on the meta device, so recording is free) replayed with ``F.conv2d``/``F.conv3d`` on
channels-last tensors of the same shapes. ``model time / conv floor`` says how much of the time
is overhead around the arithmetic that cannot be avoided.

Peak memory is measured for each variant in a fresh process (``multiprocessing`` spawn), on
its first call: the process's own high-water mark, not memory an earlier variant left in the
allocator. On a CPU it is measured twice: as the process sees it (glibc's default malloc keeps
freed blocks of up to 32 MiB in its heap, so the high-water mark includes holes), and *live*,
with every block of 128 KiB or more mapped on its own (``LIVE_MEMORY_ENV``), so the mark follows
the tensors alive at each moment, as ``torch.cuda.max_memory_allocated`` does on a GPU.
Times are measured for all variants together in another fresh process, in rounds
(one call of each variant per round), so that load from other users of a shared machine hits
every variant alike; the ratios between them are what to compare.
"""
from __future__ import annotations

import copy
import math
import multiprocessing as mp
import os
import queue as queue_module
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

INFERENCE_VARIANTS = {
    'plain': 'reference eager path (NCHW, spikingjelly LIF)',
    'default': "what test.py does with no flags: optimize_for_inference() where the model has "
               "a fast forward, else the plain path",
    'channels_last': 'channels-last weights/activations only',
    'fused_exact': 'fused LIF/NI-LIF + spike reuse + patch embed once (NCHW, no BN folding: '
                   'the golden-exact fast path)',
    'fast': 'optimize_for_inference defaults: fused neurons, channels-last, fast attention/'
            'arithmetic, BN folded, patch embed once',
    'bf16': "optimize_for_inference(precision='bf16'): the above with bfloat16 convs "
            '(float32 membranes); CPUs with native bf16 only',
}
TRAINING_VARIANTS = {
    'plain': 'reference eager path',
    'default': "what train.py does with no flags: enable_fast_training() where the model has "
               "a fast forward (TrainConfig.fast), else the plain path",
    'fast': 'enable_fast_training() defaults: fused neuron autograd, channels-last, fast '
            'attention/arithmetic, patch embed once, spikes kept as integers, the work between '
            'convs recomputed in the backward pass',
    'fast_keep': 'enable_fast_training(recompute=False): the above, but every intermediate '
                 'tensor kept for the backward pass (faster, more memory)',
    'fast_checkpoint': 'enable_fast_training(checkpoint=True): the above + per-block '
                       'recomputation (saves memory, costs time)',
    'bf16': 'train.py --precision bf16: the fast path under bfloat16 autocast (float32 '
            'neuron state); CPUs with native bf16 or GPUs',
}
# Variants that need the model's fast forward (the others run any model).
NEEDS_FAST_FORWARD = {'channels_last', 'fused_exact', 'fast', 'bf16', 'fast_checkpoint',
                      'fast_keep'}
# glibc: map every block of 128 KiB or more on its own, so that freeing it returns it at once
LIVE_MEMORY_ENV = {'MALLOC_MMAP_THRESHOLD_': '131072',
                   'GLIBC_TUNABLES': 'glibc.malloc.mmap_threshold=131072'}


def train_py_default(name: str):
    """train.py's default for one of its settings (a field of TrainConfig)."""
    from dataclasses import fields

    from utils.train.config import TrainConfig
    return next(f.default for f in fields(TrainConfig) if f.name == name)


def train_py_uses_fast_path() -> bool:
    """train.py's default for its fast training path (the ``fast`` field of TrainConfig)."""
    return bool(train_py_default('fast'))


@dataclass(frozen=True)
class Job:
    """One thing to measure: a model variant's inference or training step, or a conv floor."""
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


def reset_peak(device: torch.device) -> int:
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


def read_peak(device: torch.device) -> int:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
    hwm = _proc_status('VmHWM')
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- building the variants ------------------------------------------------------------------
def build_variant(job: Job) -> nn.Module:
    from models import build_model
    from models.acceleration import (enable_fast_training, optimize_for_inference,
                                     supports_fast_path)
    torch.manual_seed(job.seed)
    model = build_model(job.model)
    if job.task == 'inference':
        model.eval()
        if job.variant == 'channels_last':
            model = optimize_for_inference(model, fold_bn=False, fused_lif=False,
                                           fast_attention=False, fast_arithmetic=False,
                                           patch_embed_once=False)
        elif job.variant == 'fused_exact':
            model = optimize_for_inference(model, fold_bn=False, channels_last=False,
                                           fast_attention=False, fast_arithmetic=False)
        elif job.variant == 'fast' or (job.variant == 'default' and supports_fast_path(model)):
            model = optimize_for_inference(model)
        elif job.variant == 'bf16':
            model = optimize_for_inference(model, precision='bf16')
        elif job.variant not in ('plain', 'default'):
            raise ValueError(f'unknown inference variant {job.variant!r}')
    else:
        model.train()
        default_fast = (job.variant == 'default' and train_py_uses_fast_path()
                        and supports_fast_path(model))
        if job.variant in ('fast', 'fast_checkpoint', 'fast_keep', 'bf16') or default_fast:
            recompute = (bool(train_py_default('recompute')) if job.variant == 'default'
                         else job.variant != 'fast_keep')
            enable_fast_training(model, checkpoint=job.variant == 'fast_checkpoint',
                                 recompute=recompute)
        elif job.variant not in ('plain', 'default'):
            raise ValueError(f'unknown training variant {job.variant!r}')
    return model


# ---- conv floor -----------------------------------------------------------------------------
# The same convs in bfloat16: what the bf16 path could gain at most (its convs' own gain).
BF16_FLOOR = 'conv_floor_bf16'
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


# Above this many bytes of conv inputs (e.g. 1 MP images), every call's input is a view into
# one shared buffer, so the floor fits in memory (each input is far larger than any cache then).
SHARED_INPUTS_BYTES = 2 * 2**30


def _input_view(buffer: torch.Tensor, shape: tuple) -> torch.Tensor:
    """A channels-last tensor of ``shape`` over the start of ``buffer``."""
    n, c, *spatial = shape
    flat = buffer[:math.prod(shape)].view(n, *spatial, c)
    return flat.permute(0, flat.dim() - 1, *range(1, flat.dim() - 1))


def _conv_operands(calls: list[ConvCall], device: torch.device, requires_grad: bool,
                   dtype: torch.dtype = torch.float32):
    sizes = [math.prod(c.input_shape) for c in calls]
    shared = None
    if sum(sizes) * torch.finfo(dtype).bits // 8 > SHARED_INPUTS_BYTES and not requires_grad:
        shared = torch.rand(max(sizes), device=device).to(dtype)
    ops = []
    for c in calls:
        fmt = torch.channels_last if len(c.input_shape) == 4 else torch.channels_last_3d
        if shared is not None:
            x = _input_view(shared, c.input_shape)
        else:
            x = torch.rand(c.input_shape, device=device).to(dtype).contiguous(memory_format=fmt)
        w = torch.randn(c.weight_shape, device=device).to(dtype).contiguous(memory_format=fmt)
        b = torch.randn(c.weight_shape[0], device=device).to(dtype) if c.bias else None
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


# ---- one measurable call per job ------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def prepare(job: Job):
    """Build what ``job`` measures; returns a zero-argument callable doing one unit of work
    (an inference, a training step, or one pass over the model's convs) and extra info."""
    device = torch.device(job.device)
    gen = torch.Generator().manual_seed(job.seed)
    if job.task in ('inference', 'floor_inference'):
        shape = (1, 3, job.size, job.size)
    else:
        shape = (job.batch, 3, job.patch, job.patch)
    x = torch.rand(shape, generator=gen).to(device)
    if job.task.startswith('floor'):
        from models import build_model
        backward = job.task == 'floor_training'
        calls = record_conv_calls(build_model(job.model), shape, backward)
        dtype = torch.bfloat16 if job.variant == BF16_FLOOR else torch.float32
        ops = _conv_operands(calls, device, backward, dtype)

        def floor():
            with torch.set_grad_enabled(backward):
                _conv_floor_once(ops, backward)
        return floor, {'conv_calls': len(calls)}
    model = build_variant(job).to(device)
    if job.task == 'inference':
        def infer():
            with torch.no_grad():
                model(x)
        return infer, {}
    if job.task != 'training':
        raise ValueError(f'unknown task {job.task!r}')
    target = torch.rand(shape, generator=gen).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    bf16 = job.variant == 'bf16'

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        F.l1_loss(out.float(), target).backward()
        opt.step()
    return step, {}


def _set_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)


def peak_memory(job: Job) -> dict:
    """Peak memory of the first call of ``job`` (run it in a fresh process: a process
    high-water mark cannot see memory the allocator kept from earlier calls)."""
    _set_threads(job.threads)
    fn, extra = prepare(job)
    device = torch.device(job.device)
    base = reset_peak(device)
    fn()
    _sync(device)
    return {'peak_bytes': max(0, read_peak(device) - base), **extra}


def interleaved_times(jobs: list[Job]) -> list[dict]:
    """Run times of every job, measured in rounds (one call of each job per round) so that a
    change of load on a shared machine hits all of them alike. Median over rounds."""
    _set_threads(jobs[0].threads)
    device = torch.device(jobs[0].device)
    fns = []
    for job in jobs:
        fn, extra = prepare(job)
        for _ in range(job.warmup):
            fn()
        fns.append((fn, extra))
    times = [[] for _ in jobs]
    for _ in range(max(job.runs for job in jobs)):
        for (fn, _), bucket in zip(fns, times):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            bucket.append(time.perf_counter() - t0)
    return [{'times': t, 'median_s': statistics.median(t), 'threads': torch.get_num_threads(),
             **extra} for t, (_, extra) in zip(times, fns)]


# ---- fresh processes -------------------------------------------------------------------------
def _child(func, args, queue) -> None:
    try:
        queue.put(('ok', func(*args)))
    except Exception as err:                       # reported by the parent, one line
        queue.put(('error', f'{type(err).__name__}: {err}'))


def run_isolated(func, *args, what: str = 'measurement', env: dict | None = None):
    """``func(*args)`` in a fresh spawned process (clean peak memory, no shared warm state),
    with ``env`` added to its environment."""
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(func, args, queue))
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    while True:
        try:
            status, result = queue.get(timeout=2.0)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f'{what}: the measuring process died (exit code '
                                   f'{proc.exitcode}; out of memory?)') from None
    proc.join()
    if status != 'ok':
        raise RuntimeError(f'{what}: {result}')
    return result


# Matrix and vector extensions that decide which path is fastest (as /proc/cpuinfo names them).
CPU_EXTENSIONS = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_bf16',
                  'amx_int8')


def cpu_description() -> dict:
    """The CPU a figure was measured on: its model name and the extensions that matter here
    (timings from different CPU kinds are never compared; docs/efficiency.md keeps one table
    per kind)."""
    import platform
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            key, _, value = line.partition(':')
            if key.strip() == 'model name' and value.strip():
                model = value.strip()
            elif key.strip() == 'flags':
                flags = set(value.split())
                break
    except OSError:
        pass
    return {'model': model, 'extensions': [e for e in CPU_EXTENSIONS if e in flags],
            'cpus': os.cpu_count()}


def cpu_line(cpu: dict) -> str:
    exts = ', '.join(cpu['extensions']) or 'none of ' + '/'.join(CPU_EXTENSIONS)
    return f'{cpu["model"]} ({cpu["cpus"]} CPUs; {exts})'
