"""torchrun / DistributedDataParallel plumbing, so the training loop reads the same for 1 or N.

``torchrun --nproc_per_node=N train.py ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them
everything here is a no-op for a single process. NCCL is used on CUDA, gloo on the CPU. Only the
process of rank 0 writes files and logs (``DistInfo.is_main``).
"""
from __future__ import annotations

import datetime
import itertools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Sampler

from utils.errors import UsageError


class DeviceError(UsageError, RuntimeError):
    """A requested device that this machine does not have (a bad --device for it: exit 2)."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank, the number of processes, and its device."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


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


def per_process_batch(global_batch: int, world_size: int) -> int:
    """``--global_batch_size`` split over the processes (it must divide evenly)."""
    if global_batch < 1:
        raise ValueError(f'--global_batch_size must be >= 1, got {global_batch}')
    if global_batch % world_size:
        raise ValueError(f'--global_batch_size {global_batch} cannot be split evenly over '
                         f'{world_size} processes; use a multiple of {world_size}')
    return global_batch // world_size


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


def launched_by_torchrun() -> bool:
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def setup(device_choice: str = 'auto', timeout_minutes: float = 60.0) -> DistInfo:
    """Join the process group when started by torchrun; pick this process's device."""
    if not launched_by_torchrun():
        return DistInfo(device=resolve_device(device_choice))
    rank = int(os.environ['RANK'])
    world = int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ.get('LOCAL_RANK', rank))
    per_node = int(os.environ.get('LOCAL_WORLD_SIZE', world))
    device = resolve_device(device_choice, local_rank, per_node)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo',
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP around the model when there are several processes; the model itself otherwise.

    Load any checkpoint into the model first (DDP copies rank 0's parameters and buffers to
    every rank when it is built). BatchNorm statistics stay per process, as in the papers'
    single-GPU training: SyncBatchNorm is not offered (converting spikingjelly's multi-step BN
    layers to it breaks the models) and is refused if a model holds one.
    """
    sync = [n for n, m in model.named_modules() if isinstance(m, nn.SyncBatchNorm)]
    if sync:
        raise ValueError(f'SyncBatchNorm is not supported (found at {sync[0]}): it breaks '
                         f"spikingjelly's multi-step BN layers; BN statistics stay per process")
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == 'cuda' else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BN running statistics) to every rank.

    DDP keeps parameters equal, but each rank's last forward updates its own BN statistics;
    this makes the whole state identical before it is validated or saved.
    """
    if dist.is_available() and dist.is_initialized():
        for buf in unwrap(model).buffers():
            dist.broadcast(buf, src)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (identity for a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_agree(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on every rank (so all ranks stop together on a bad loss)."""
    return all_reduce_sum([0.0 if flag else 1.0], device)[0] == 0.0


class EpochSampler(Sampler):
    """This rank's share of a seeded per-epoch shuffle, optionally skipping the first batches.

    The order is a pure function of (seed, epoch) (torch's ``DistributedSampler``), so a run
    resumed in the middle of an epoch sees exactly the samples the interrupted run would have.
    """

    def __init__(self, size: int, info: DistInfo, seed: int, shuffle: bool = True):
        self.base = DistributedSampler(range(size), num_replicas=info.world_size,
                                       rank=info.rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return len(self.base) - self.skip

    @property
    def epoch_length(self) -> int:
        """Samples this rank sees in a whole epoch (padded so every rank sees the same number)."""
        return len(self.base)
