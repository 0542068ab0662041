"""The device: which one a script runs on, its float32 settings, and the CUDA LIF kernel report.

``resolve_device`` is the project's one ``--device`` parser, ``configure_numerics`` sets TF32 and
cuDNN autotuning in one place, and ``lif_kernel_report`` says which spiking kernel runs on CUDA.

Which LIF kernel spikingjelly will run on CUDA, said once at start-up (issue 16).

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

from utils.core.errors import UsageError

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


class DeviceError(UsageError, RuntimeError):
    """A requested device that this machine does not have (a bad --device for it: exit 2)."""


def resolve_device(choice: str = 'auto', local_rank: int = 0,
                   processes_per_node: int = 1) -> torch.device:
    """The project's one ``--device`` parser: auto, cpu, cuda or cuda:N, for every script.

    'auto' -> CUDA when available, else CPU; 'cuda' or 'cuda:N' without a GPU is an error.
    Other torch device types (mps, meta, ...) are refused here rather than failing later.
    Under torchrun every process takes the GPU of its LOCAL_RANK: more processes per node than
    visible GPUs is refused (they would silently share one). ``cuda:N`` picks GPU N of a
    single process; an N this machine does not have is a one-line error.
    """
    index = None
    if isinstance(choice, str) and choice.startswith('cuda:'):
        number = choice.split(':', 1)[1]
        if not number.isdigit():
            raise DeviceError(f'--device {choice}: expected cuda:N with N a GPU number')
        index = int(number)
        if processes_per_node > 1:
            raise DeviceError(f'--device {choice}: under torchrun use --device cuda (or auto); '
                              f'each process takes the GPU of its LOCAL_RANK')
    elif choice not in ('auto', 'cpu', 'cuda'):
        raise DeviceError(f'--device {choice}: unsupported; use auto, cpu or cuda (or cuda:N)')
    if choice != 'cpu' and choice != 'auto' and not torch.cuda.is_available():
        raise DeviceError(f'--device {choice}: no CUDA GPU is available on this machine '
                          '(use --device cpu or auto)')
    if choice == 'cpu' or not torch.cuda.is_available():
        return torch.device('cpu')
    count = torch.cuda.device_count()
    if index is not None:
        if index >= count:
            raise DeviceError(f'--device {choice}: no such GPU (this machine has {count} visible '
                              f'GPU(s): cuda:0 to cuda:{count - 1})')
        return torch.device('cuda', index)
    if max(processes_per_node, local_rank + 1) > count:
        raise DeviceError(f'{max(processes_per_node, local_rank + 1)} processes per node but '
                          f'only {count} visible GPU(s): start torchrun with '
                          f'--nproc_per_node={count} (one process per GPU)')
    return torch.device('cuda', local_rank)


def configure_numerics(device: torch.device, tf32: bool = False, benchmark: bool = False
                       ) -> None:
    """The process-wide float32 settings of training and evaluation, set in this one place.

    TF32 is off unless ``tf32`` is true: torch enables it for cuDNN convolutions by default,
    which on an Ampere-or-newer GPU rounds every conv's inputs to 10 mantissa bits; the
    "float32" SSIM loss and the convs then drift far from the CPU/golden numbers (issue 16, by
    emulation: loss error 1.6e-7 -> 3.4e-4, gradient off by 2.6 %). ``benchmark`` lets cuDNN
    pick the fastest conv algorithm per input size: worth it where sizes are fixed (training
    patches), never on the CPU.
    """
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cudnn.benchmark = bool(benchmark) and device.type == 'cuda'
