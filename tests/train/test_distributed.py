"""torchrun/DDP plumbing: device choice, data shards, and a real 2-process gloo run."""
import os
import subprocess
import sys

import pytest
import torch

from models import build_model
from support import ROOT, TESTS
from utils.train.checkpoint import load_training_state
from utils.core.device import DeviceError, resolve_device
from utils.train.distributed import DistInfo, EpochSampler, setup


def test_device_choice(monkeypatch):
    """The one --device parser every script uses; each refusal is one line naming the value."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert resolve_device('cpu') == torch.device('cpu')
    assert resolve_device('auto') == torch.device('cpu')
    for choice in ('cuda', 'cuda:0', 'cuda:3'):
        with pytest.raises(DeviceError, match=f'--device {choice}: no CUDA GPU') as err:
            resolve_device(choice)
        assert '\n' not in str(err.value)
    for choice in ('tpu', 'banana', 'mps', 'meta', 'CPU'):
        with pytest.raises(DeviceError, match=f'--device {choice}: unsupported; use auto, '
                                              'cpu or cuda'):
            resolve_device(choice)


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


@pytest.mark.slow
def test_torchrun_two_cpu_processes_end_with_identical_weights(tmp_path, paired_folder):
    data, run, out = tmp_path / 'data', tmp_path / 'run', tmp_path / 'out'
    paired_folder(data / 'train', 4, (20, 20), name='{i}')
    paired_folder(data / 'test', 2, (16, 16), name='{i}')
    out.mkdir()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
         str(TESTS / 'support' / 'ddp_worker.py'), str(data), str(run), str(out)],
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


# --- issue 16: DDP settings checked without GPUs -------------------------------------------

def test_global_batch_size_is_split_over_the_processes():
    from utils.train.distributed import per_process_batch
    assert per_process_batch(16, 1) == 16 and per_process_batch(16, 4) == 4
    with pytest.raises(ValueError, match='cannot be split evenly over 3 processes'):
        per_process_batch(16, 3)


def test_one_process_per_visible_gpu_and_cuda_n(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert resolve_device('cuda', local_rank=1, processes_per_node=2) == torch.device('cuda', 1)
    assert resolve_device('auto') == torch.device('cuda', 0)
    with pytest.raises(DeviceError, match=r'3 processes per node but only 2 visible GPU.*'
                                          r'--nproc_per_node=2'):
        resolve_device('cuda', local_rank=0, processes_per_node=3)
    assert resolve_device('cuda:1') == torch.device('cuda', 1)
    with pytest.raises(DeviceError, match=r'--device cuda:5: no such GPU .*2 visible'):
        resolve_device('cuda:5')
    with pytest.raises(DeviceError, match='under torchrun use --device cuda'):
        resolve_device('cuda:1', local_rank=1, processes_per_node=2)
    with pytest.raises(DeviceError, match='expected cuda:N'):
        resolve_device('cuda:x')


def test_sync_batchnorm_is_refused():
    from utils.train.distributed import wrap_model
    with pytest.raises(ValueError, match='SyncBatchNorm is not supported'):
        wrap_model(torch.nn.Sequential(torch.nn.SyncBatchNorm(3)), DistInfo())


def test_checkpoint_is_loaded_before_the_ddp_wrap_and_batches_are_reported(tmp_path,
                                                                         monkeypatch,
                                                                         paired_folder):
    from utils.train import distributed as dist_utils
    from utils.train.trainer import ConfigError, TrainConfig, Trainer
    paired_folder(tmp_path / 'train', 4, (20, 20), name='{i}')
    cfg = dict(model='spikerain-tiny', train_dir=str(tmp_path / 'train'),
               model_save_dir=str(tmp_path / 'run'), batch_size=2, patch_size=16, iters=1,
               warmup='0', save_every='1', workers=0, tensorboard=False)
    Trainer(TrainConfig(**cfg), log=lambda s: None).fit()
    saved = load_training_state(tmp_path / 'run' / 'model_last.pth')['state_dict']
    wrapped = []
    real = dist_utils.wrap_model
    monkeypatch.setattr(dist_utils, 'wrap_model', lambda model, info: (
        wrapped.append({k: v.clone() for k, v in model.state_dict().items()}),
        real(model, info))[1])
    trainer = Trainer(TrainConfig(**cfg, global_batch_size=2),
                      log=lambda s: None)
    assert trainer.resumed_from is not None and len(wrapped) == 1
    assert all(torch.equal(wrapped[0][k], saved[k]) for k in saved)
    assert trainer.plan.batch_size == 2
    assert trainer.batch_text() == 'batch 2 per process x 1 process(es) = 2 global'
    trainer.lock.release()
    # four processes share a global batch of 8: 2 each (the DDP wrap itself is not run here)
    monkeypatch.setattr(dist_utils, 'wrap_model', lambda model, info: model)
    four = DistInfo(rank=0, world_size=4)
    trainer = Trainer(TrainConfig(**{**cfg, 'model_save_dir': str(tmp_path / 'four'),
                                     'batch_size': 5}, global_batch_size=8, accum_steps=2),
                      four, log=lambda s: None)
    # the plan holds the resolved batch (recorded in config.yaml); the config is left as given
    assert trainer.plan.batch_size == 2 and trainer.settings()['batch_size'] == 2
    assert trainer.cfg.batch_size == 5
    assert trainer.batch_text() == ('batch 2 per process x 4 process(es) = 8 global x 2 '
                                    'accumulated = 16 per optimizer step')
    trainer.lock.release()
    with pytest.raises(ConfigError, match='cannot be split evenly over 4 processes'):
        Trainer(TrainConfig(**{**cfg, 'model_save_dir': str(tmp_path / 'five')},
                            global_batch_size=6), four, log=lambda s: None)
