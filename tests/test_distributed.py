"""torchrun/DDP plumbing: device choice, data shards, and a real 2-process gloo run."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import build_model
from utils.checkpoint import load_training_state
from utils.distributed import DeviceError, DistInfo, EpochSampler, resolve_device, setup

ROOT = Path(__file__).resolve().parents[1]


def test_device_choice():
    assert resolve_device('cpu') == torch.device('cpu')
    if not torch.cuda.is_available():
        assert resolve_device('auto') == torch.device('cpu')
        with pytest.raises(DeviceError, match='--device cuda: no CUDA GPU'):
            resolve_device('cuda')
    with pytest.raises(DeviceError, match='auto, cpu or cuda'):
        resolve_device('tpu')


def test_single_process_without_torchrun(monkeypatch):
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    info = setup('cpu')
    assert info == DistInfo(device=torch.device('cpu')) and info.is_main and not info.distributed


def test_shards_are_disjoint_cover_the_data_and_depend_on_seed_and_epoch():
    ranks = [EpochSampler(10, DistInfo(rank=r, world_size=2), seed=3) for r in range(2)]
    for s in ranks:
        s.set_epoch(0)
    shard0, shard1 = list(ranks[0]), list(ranks[1])
    assert len(shard0) == len(shard1) == 5 and sorted(shard0 + shard1) == list(range(10))
    again = EpochSampler(10, DistInfo(rank=0, world_size=2), seed=3)
    again.set_epoch(0)
    assert list(again) == shard0
    again.set_epoch(1)
    assert list(again) != shard0
    again.set_epoch(0, skip=2)                          # resuming after 2 samples
    assert list(again) == shard0[2:] and len(again) == 3 and again.epoch_length == 5


def _pairs(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        clean = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        rainy = np.clip(clean.astype(int) + rng.integers(0, 80, clean.shape), 0, 255)
        for sub, img in (('target', clean), ('input', rainy.astype(np.uint8))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / sub / f'{i}.png')


def test_torchrun_two_cpu_processes_end_with_identical_weights(tmp_path):
    data, run, out = tmp_path / 'data', tmp_path / 'run', tmp_path / 'out'
    _pairs(data / 'train', 4, 20)
    _pairs(data / 'test', 2, 16)
    out.mkdir()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
         str(ROOT / 'tests' / 'ddp_worker.py'), str(data), str(run), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = torch.load(out / 'rank0.pt', weights_only=True)
    rank1 = torch.load(out / 'rank1.pt', weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    last = load_training_state(run / 'model_last.pth')
    assert last['progress']['iteration'] == 3 and last['train_config']['world_size'] == 2
    # 4 pairs over 2 ranks, batch 1: 2 steps per epoch.
    assert last['train_config']['schedule']['steps_per_epoch'] == 2
    changed = [k for k in rank0 if k.endswith('weight') and
               not torch.equal(rank0[k], last['state_dict'][k])]
    assert not changed                                   # rank 0 saved what both ranks hold
    torch.manual_seed(1234)                              # the run's seed: its initial weights
    init = build_model('spikerain-tiny').state_dict()
    assert any(not torch.equal(init[k], rank0[k]) for k in rank0)   # it did train
    assert (run / 'model_best.pth').is_file() and (run / 'config.yaml').is_file()
    assert not list(run.glob('*.tmp')) and not list(run.glob('.*.tmp'))
