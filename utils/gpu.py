"""Which LIF kernel spikingjelly will run on CUDA, said once at start-up (issue 16).

spikingjelly 2.0 picks its CUDA LIF implementation silently, in this order: its native CUDA
extension (only when built from source with ``SJ_BUILD_NATIVE_CUDA=1``), Triton (when
importable), else a per-step PyTorch loop that is several times slower. Triton also needs a C
compiler at run time; without one the first CUDA forward fails. The environment variable
``SJ_LIF_CUDA_IMPLEMENTATION`` (spikingjelly's own: ``auto``, ``cuda``, ``triton`` or ``torch``)
is the escape hatch: ``SJ_LIF_CUDA_IMPLEMENTATION=torch`` runs the slow but compiler-free path
when compilation fails. It is read when spikingjelly is imported, so set it before starting.
On the CPU none of this applies and nothing is said.
"""
from __future__ import annotations

import importlib.util
import os
import shutil

import torch

LIF_KERNEL_ENV = 'SJ_LIF_CUDA_IMPLEMENTATION'
_FIX = 'pip install -r requirements-cuda.txt (Triton)'
_HATCH = f'{LIF_KERNEL_ENV}=torch'


def lif_kernel_choice(device: torch.device, *, native: bool, triton: bool, compiler: bool,
                      requested: str = 'auto') -> tuple[str | None, str | None]:
    """``(kernel, line)``: the kernel spikingjelly will pick (``cuda``, ``triton``, ``torch``,
    or None when the requested one cannot run) and the one line to print (None on the CPU)."""
    if device.type != 'cuda':
        return None, None
    requested = (requested or 'auto').lower()
    if requested not in ('auto', 'cuda', 'triton', 'torch'):
        return None, (f'LIF kernel: {LIF_KERNEL_ENV}={requested!r} is not one of auto, cuda, '
                      f'triton, torch: spikingjelly will refuse to run; unset it')
    if requested == 'torch':
        return 'torch', (f'LIF kernel: PyTorch reference loop, as {_HATCH} asks (slow, no '
                         f'compilation); unset {LIF_KERNEL_ENV} to use the fused kernels')
    if native and requested in ('auto', 'cuda'):
        return 'cuda', "LIF kernel: spikingjelly's native CUDA extension (fused)"
    if requested == 'cuda':
        return None, (f'LIF kernel: {LIF_KERNEL_ENV}=cuda but spikingjelly was not built with '
                      f'its native CUDA extension: the first forward will fail; unset it')
    if triton and compiler:
        return 'triton', (f'LIF kernel: Triton (fused; compiled on first use); if compilation '
                          f'fails, run with {_HATCH} (slow but needs no compiler)')
    if triton:
        return 'triton', (f'LIF kernel: Triton, but no C compiler (gcc, clang, cc or $CC) was '
                          f'found, which Triton needs to build its launchers: the first CUDA '
                          f'forward is expected to fail; install gcc, or run with {_HATCH} '
                          f'(slow)')
    if requested == 'triton':
        return None, (f'LIF kernel: {LIF_KERNEL_ENV}=triton but Triton is not installed: the '
                      f'first forward will fail; {_FIX}')
    return 'torch', (f'LIF kernel: PyTorch reference loop (SLOW: several times slower than the '
                     f'fused kernels) because Triton is not installed; {_FIX}')


def _native_built() -> bool:
    try:
        return importlib.util.find_spec('spikingjelly._ops.lif._C') is not None
    except (ImportError, ValueError):
        return False


def _requested() -> str:
    try:                     # what spikingjelly read at import (the variable may change later)
        from spikingjelly._ops.lif import _selection
        return str(_selection._requested)
    except (ImportError, AttributeError):
        return os.environ.get(LIF_KERNEL_ENV, 'auto')


def has_c_compiler() -> bool:
    cc = os.environ.get('CC')
    return bool((cc and shutil.which(cc.split()[0])) or
                any(shutil.which(c) for c in ('gcc', 'clang', 'cc')))


def lif_kernel_report(device: torch.device) -> str | None:
    """The start-up line for ``device`` (None on the CPU)."""
    if device.type != 'cuda':
        return None
    return lif_kernel_choice(device, native=_native_built(),
                             triton=importlib.util.find_spec('triton') is not None,
                             compiler=has_c_compiler(), requested=_requested())[1]
