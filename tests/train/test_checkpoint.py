"""Training-state checkpoints: round trip, RNG states, weights-only and foreign files, atomicity."""
import random
import shutil

import numpy as np
import pytest
import torch

from models import build_from_checkpoint, build_model
from utils.train.checkpoint import (CheckpointError, capture_rng_state, check_same_model,
                                    load_training_state, restore_rng_state, restore_training_state,
                                    save_training_state)
from utils.train.recipe import build_optimizer, build_scheduler


def _parts(seed=0):
    torch.manual_seed(seed)
    model = build_model('spikerain-tiny')
    opt = build_optimizer(model, 1e-3)
    sched = build_scheduler(opt, total_iters=10, warmup_iters=2, min_lr=1e-7)
    return model, opt, sched


def _one_step(model, opt, sched):
    model.train()
    loss = model(torch.rand(1, 3, 16, 16)).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    sched.step()


def test_rng_states_round_trip():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_training_state_round_trip_restores_everything(tmp_path):
    model, opt, sched = _parts()
    _one_step(model, opt, sched)
    _one_step(model, opt, sched)
    path = tmp_path / 'model_last.pth'
    save_training_state(path, model=model, optimizer=opt, scheduler=sched, scaler=None,
                        progress=dict(epoch=1, epoch_batch=0, iteration=2),
                        best=dict(psnr=21.5, ssim=0.7, iteration=2), config={'lr': 1e-3})
    expected_draw = torch.rand(4)

    state = load_training_state(path)                           # weights_only loading
    model2, opt2, sched2 = _parts(seed=1)                       # different init
    restore_training_state(state, model=model2, optimizer=opt2, scheduler=sched2, scaler=None)
    assert torch.equal(torch.rand(4), expected_draw)            # RNG continues identically
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert opt2.param_groups[0]['lr'] == opt.param_groups[0]['lr']
    assert sched2.state_dict() == sched.state_dict()
    assert state['progress'] == dict(epoch=1, epoch_batch=0, iteration=2)
    assert state['best']['psnr'] == 21.5 and state['train_config'] == {'lr': 1e-3}
    # The next step is the same for the original and the restored copy.
    torch.manual_seed(5)
    _one_step(model, opt, sched)
    torch.manual_seed(5)
    _one_step(model2, opt2, sched2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    # `last` is also an ordinary weights checkpoint for test.py.
    assert type(build_from_checkpoint(path)).__name__ == 'SpikeRain'


def test_weights_only_and_corrupt_files_are_refused_clearly(tmp_path, tiny_weights):
    best = tmp_path / 'model_best.pth'
    shutil.copyfile(tiny_weights('spikerain-tiny'), best)      # what _parts() builds, saved
    with pytest.raises(CheckpointError, match='model_best.pth: not a training state'):
        load_training_state(best)
    broken = tmp_path / 'model_last.pth'
    broken.write_bytes(best.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='model_last.pth: not a readable'):
        load_training_state(broken)
    with pytest.raises(CheckpointError, match='not found'):
        load_training_state(tmp_path / 'missing.pth')


def test_other_model_or_options_are_refused(tmp_path):
    state = {'model_name': 'spikerain-tiny', 'model_config': {'dim': 16, 'T': 4}}
    check_same_model(state, 'spikerain-tiny', {'dim': 16, 'T': 4}, 'x.pth')
    with pytest.raises(CheckpointError, match="saved from model 'spikerain-tiny', but --model "
                                              "is 'esdnet-tiny'"):
        check_same_model(state, 'esdnet-tiny', {'dim': 16, 'T': 4}, 'x.pth')
    with pytest.raises(CheckpointError, match='dim: 16 vs 32'):
        check_same_model(state, 'spikerain-tiny', {'dim': 32, 'T': 4}, 'x.pth')


def test_failed_save_keeps_previous_file(tmp_path):
    model, opt, sched = _parts()
    path = tmp_path / 'model_last.pth'
    kw = dict(model=model, optimizer=opt, scheduler=sched, scaler=None,
              progress=dict(epoch=0, epoch_batch=1, iteration=1), best={})
    save_training_state(path, config={'ok': 1}, **kw)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - pickle's error type varies by version
        save_training_state(path, config={'bad': lambda: 0}, **kw)    # cannot be pickled
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['model_last.pth']
