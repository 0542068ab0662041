"""torchrun / DistributedDataParallel plumbing, so the training loop reads the same for 1 or N.

``torchrun --nproc_per_node=N train.py ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them
everything here is a no-op for a single process. NCCL is used on CUDA, gloo on the CPU. Only the
process of rank 0 writes files and logs (``DistInfo.is_main``).
"""
from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Sampler

from utils.core.device import resolve_device
from utils.core.settings import env_int


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


def per_process_batch(global_batch: int, world_size: int) -> int:
    """``--global_batch_size`` split over the processes (it must divide evenly)."""
    if global_batch < 1:
        raise ValueError(f'--global_batch_size must be >= 1, got {global_batch}')
    if global_batch % world_size:
        raise ValueError(f'--global_batch_size {global_batch} cannot be split evenly over '
                         f'{world_size} processes; use a multiple of {world_size}')
    return global_batch // world_size


def launched_by_torchrun() -> bool:
    return env_int('WORLD_SIZE', 1) > 1


def setup(device_choice: str = 'auto', timeout_minutes: float = 60.0) -> DistInfo:
    """Join the process group when started by torchrun; pick this process's device."""
    if not launched_by_torchrun():
        return DistInfo(device=resolve_device(device_choice))
    rank = env_int('RANK', 0)
    world = env_int('WORLD_SIZE', 1)
    local_rank = env_int('LOCAL_RANK', rank)
    per_node = env_int('LOCAL_WORLD_SIZE', world)
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
