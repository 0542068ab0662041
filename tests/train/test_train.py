"""train.py and its loop: exact resume, non-finite loss, settings, the command line."""
import math
from pathlib import Path

import pytest
import torch
import yaml

from support import ROOT
from utils.train.checkpoint import CheckpointError, load_training_state
from utils.train.trainer import ConfigError, TrainConfig, Trainer, TrainingError


@pytest.fixture(scope='module')
def data(tmp_path_factory, paired_folder) -> Path:
    root = tmp_path_factory.mktemp('pairs')
    paired_folder(root / 'train', 5, (20, 24))     # smaller than the patch on one side: padded
    paired_folder(root / 'test', 1, (16, 20), seed=1)
    return root


def _cfg(data: Path, run: Path, **kw) -> TrainConfig:
    base = dict(model='spikerain-tiny', train_dir=str(data / 'train'),
                val_dir=str(data / 'test'), model_save_dir=str(run), batch_size=2,
                patch_size=16, warmup='2', val_every='2', save_every='0', workers=0,
                tensorboard=False, seed=7)
    return TrainConfig(**{**base, **kw})


def _assert_same_state(a: dict, b: dict) -> None:
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key in a['state_dict']:
        assert torch.equal(a['state_dict'][key], b['state_dict'][key]), key
    for pa, pb in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        for key in pa:
            assert torch.equal(pa[key], pb[key]), key
    assert a['scheduler'] == b['scheduler'] and a['progress'] == b['progress']
    assert a['best'] == b['best']


@pytest.mark.parametrize('accum,iters,stop,workers', [(1, 5, 2, 1), (2, 3, 1, 0)])
def test_interrupted_and_resumed_run_ends_bit_identical(data, tmp_path, accum, iters, stop,
                                                        workers):
    # 5 pairs, batch 2 -> 3 batches per epoch; stopping after `stop` steps is mid-epoch. The
    # interrupted run may use DataLoader workers: the samples must not depend on them.
    whole = _cfg(data, tmp_path / 'whole', iters=iters, accum_steps=accum)
    Trainer(whole, log=lambda s: None).fit()
    part = _cfg(data, tmp_path / 'part', iters=iters, accum_steps=accum, stop_after=stop,
                workers=workers)
    summary = Trainer(part, log=lambda s: None).fit()
    assert summary['iteration'] == stop and not summary['finished']
    mid = load_training_state(tmp_path / 'part' / 'model_last.pth')
    assert mid['progress']['iteration'] == stop and mid['progress']['epoch_batch'] > 0
    lines = []
    summary = Trainer(_cfg(data, tmp_path / 'part', iters=iters, accum_steps=accum,
                           workers=workers), log=lines.append).fit()
    assert summary['finished'] and any('resumed from' in ln for ln in lines)
    _assert_same_state(load_training_state(tmp_path / 'whole' / 'model_last.pth'),
                       load_training_state(tmp_path / 'part' / 'model_last.pth'))
    best = torch.load(tmp_path / 'part' / 'model_best.pth', weights_only=True)
    assert math.isfinite(best['psnr']) and 'optimizer' not in best


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path):
    trainer = Trainer(_cfg(data, tmp_path, iters=6, save_every='2', val_every='0'),
                      log=lambda s: None)
    real_loss, calls = trainer.criterion, []

    def loss_that_explodes(pred, target):
        calls.append(1)
        value = real_loss(pred, target)
        return value * float('nan') if len(calls) == 3 else value
    trainer.criterion = loss_that_explodes
    with pytest.raises(TrainingError, match=r'non-finite loss nan at iteration 3 .*'
                                            r'model_last.pth \(iteration 2\) is intact'):
        trainer.fit()
    state = load_training_state(tmp_path / 'model_last.pth')
    assert state['progress']['iteration'] == 2
    assert all(torch.isfinite(v).all() for v in state['state_dict'].values()
               if v.is_floating_point())
    # The folder now holds a run: it is never overwritten, nor resumed with another schedule.
    with pytest.raises(ConfigError, match='model_last.pth exists: --resume auto'):
        Trainer(_cfg(data, tmp_path, iters=6, resume='none'), log=lambda s: None)
    with pytest.raises(CheckpointError, match='different schedule.*total_iters 6 -> 7'):
        Trainer(_cfg(data, tmp_path, iters=7), log=lambda s: None)


@pytest.mark.parametrize('change,match', [
    (dict(batch_size=0), '--batch_size must be >= 1'),
    (dict(lr=-1.0), '--lr must be > 0'),
    (dict(patch_size=0), '--patch_size must be >= 8'),
    (dict(accum_steps=0), '--accum_steps'),
    (dict(min_lr=1.0), '--min_lr'),
    (dict(warmup='soon'), '--warmup'),
    (dict(loss='ssim+lpips'), '--loss'),
    (dict(train_dir=None), '--train_dir'),
])
def test_bad_settings_name_the_option(data, tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(data, tmp_path, **change).validate()


def test_shipped_configs_hold_only_known_valid_settings():
    names = set(TrainConfig.__dataclass_fields__) | {'dim'}
    paths = sorted((ROOT / 'configs').glob('*.yaml'))
    assert len(paths) >= 12
    for path in paths:
        cfg = yaml.safe_load(path.read_text())
        assert set(cfg) <= names, (path.name, set(cfg) - names)
        assert cfg.get('dataset') or cfg.get('train_dir'), path.name
        TrainConfig(**{k: v for k, v in cfg.items() if k != 'dim'}).validate()


@pytest.fixture(scope='module')
def train_py(cli):
    """``python train.py ARGS``: (code, stdout, stderr)."""
    return lambda *args, cwd=ROOT: cli('train.py', *args, cwd=cwd)


@pytest.mark.slow
def test_command_line_run_config_override_auto_resume_and_wrong_model(data, tmp_path, train_py):
    run = tmp_path / 'run'
    common = ['--config', ROOT / 'configs' / 'spikerain-s_rain200h.yaml',
              '--model', 'spikerain-tiny', '--train_dir', data / 'train',
              '--val_dir', data / 'test', '--model_save_dir', run, '--batch_size', 2,
              '--patch_size', 16, '--workers', 0, '--iters', 2]
    proc = train_py(*common)
    assert proc.code == 0, proc.stderr[-2000:]
    assert 'epoch 1/1  iter 2/2' in proc.stdout + proc.stderr
    for name in ('model_last.pth', 'model_best.pth', 'config.yaml'):
        assert (run / name).is_file(), name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / 'tensorboard'))
    events.Reload()
    tags = events.Tags()
    assert {'train/loss', 'train/lr', 'val/psnr', 'val/ssim',
            'firing_rate/all_layers'} <= set(tags['scalars'])
    assert sum(t.startswith('firing_rate/') for t in tags['scalars']) > 10
    assert len(tags['images']) == 1
    saved = yaml.safe_load((run / 'config.yaml').read_text())
    assert saved['iters'] == 2 and saved['model'] == 'spikerain-tiny'   # flags beat the file
    assert saved['lr'] == 1e-3 and saved['loss'] == 'ssim'              # from the file
    again = train_py(*common)                                           # same command: resumes
    assert again.code == 0 and 'finished at iteration 2/2' in again.stdout + again.stderr
    wrong = train_py(*common[:2], '--model', 'esdnet-tiny', *common[4:])
    assert wrong.code != 0
    assert wrong.stderr.strip().count('\n') == 0
    assert "saved from model 'spikerain-tiny', but --model is 'esdnet-tiny'" in wrong.stderr


@pytest.mark.parametrize('args,match', [
    ([], '--train_dir'),
    (['--train_dir', 'nowhere', '--lr', '-1'], '--lr must be > 0'),
    (['--train_dir', 'nowhere'], 'nowhere'),
    (['--train_dir', 'x', '--batch_size', 'many'], "--batch_size: invalid int value: 'many'"),
    (['--config', 'BAD'], "unknown key 'lrate'"),
])
@pytest.mark.slow
def test_command_line_errors_are_one_line(tmp_path, args, match, train_py):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('lrate: 0.1\n')
    args = [bad if a == 'BAD' else a for a in args]
    proc = train_py(*args, cwd=tmp_path)
    assert proc.code != 0
    assert proc.stderr.strip().count('\n') == 0, proc.stderr
    assert match in proc.stderr and 'Traceback' not in proc.stderr


def test_extend_lengthens_a_finished_run_and_still_resumes_exactly(data, tmp_path):
    quiet = dict(log=lambda s: None)
    for run in ('a', 'b'):
        Trainer(_cfg(data, tmp_path / run, iters=4, val_every='0'), **quiet).fit()
    # without --extend a longer schedule is refused, with the hint
    with pytest.raises(CheckpointError, match='total_iters 4 -> 7.*add --extend'):
        Trainer(_cfg(data, tmp_path / 'a', iters=7, val_every='0'), **quiet)
    # a: extended and run to the end in one go; b: extended, stopped after 1 step, resumed
    trainer = Trainer(_cfg(data, tmp_path / 'a', iters=7, val_every='0', extend=True), **quiet)
    lr_at_4 = trainer.optimizer.param_groups[0]['lr']
    trainer.fit()
    Trainer(_cfg(data, tmp_path / 'b', iters=7, val_every='0', extend=True, stop_after=1),
            **quiet).fit()
    resumed = Trainer(_cfg(data, tmp_path / 'b', iters=7, val_every='0'), **quiet)
    assert resumed.progress['iteration'] == 5 and len(resumed.extensions) == 1
    resumed.fit()
    a = load_training_state(tmp_path / 'a' / 'model_last.pth')
    b = load_training_state(tmp_path / 'b' / 'model_last.pth')
    _assert_same_state(a, b)
    assert a['progress']['iteration'] == 7
    ext = a['train_config']['extensions']
    assert [(e['iteration'], e['total_iters_before'], e['total_iters']) for e in ext] == \
        [(4, 4, 7)]
    assert ext[0]['lr'] == pytest.approx(lr_at_4)
    history = yaml.safe_load((tmp_path / 'a' / 'schedule.yaml').read_text())
    assert history['total_iters'] == 7 and history['extensions'][0]['iteration'] == 4
    assert yaml.safe_load((tmp_path / 'a' / 'config.yaml').read_text())['extend'] is False


def test_extension_schedule_decays_from_current_lr_to_min_lr():
    from utils.train.recipe import build_extension_scheduler
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = build_extension_scheduler(opt, start_iteration=10, start_lr=4e-4, total_iters=14,
                                      min_lr=1e-6)
    lrs = [opt.param_groups[0]['lr']]
    for _ in range(5):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]['lr'])
    assert lrs[0] == pytest.approx(4e-4) and lrs[4] == pytest.approx(1e-6)
    assert lrs[5] == pytest.approx(1e-6)               # past the end it stays at min_lr
    assert all(x > y for x, y in zip(lrs[:4], lrs[1:4]))


def test_command_line_is_generated_from_the_config_fields():
    from dataclasses import fields as dc_fields
    from train import build_parser
    parser = build_parser()
    dests = {a.dest for a in parser._actions} - {'help', 'config', 'dim'}
    names = {f.name for f in dc_fields(TrainConfig)}
    assert dests == names                       # one declaration per option, none missing
    for f in dc_fields(TrainConfig):
        assert len(f.metadata['help']) > 10, f.name
    defaults = TrainConfig()
    for action in parser._actions:
        if action.dest in names and action.dest != 'model_opt':
            assert action.default == getattr(defaults, action.dest), action.dest


def test_checkpoint_option_recomputes_blocks_on_the_fast_path(data, tmp_path):
    from models.acceleration import fast_options
    trainer = Trainer(_cfg(data, tmp_path / 'ck', iters=2, val_every='0', checkpoint=True),
                      log=lambda s: None)
    assert trainer.fast and fast_options(trainer.net).checkpoint
    assert trainer.fit()['finished']
    default = Trainer(_cfg(data, tmp_path / 'd', iters=1, val_every='0'), log=lambda s: None)
    assert default.fast and fast_options(default.net).recompute      # train.py's default
    keep = Trainer(_cfg(data, tmp_path / 'k', iters=1, val_every='0', recompute=False),
                   log=lambda s: None)
    assert not fast_options(keep.net).recompute
    with pytest.raises(ConfigError, match='--checkpoint .*--no-fast'):
        _cfg(data, tmp_path / 'x', checkpoint=True, fast=False).validate()


def test_precision_bf16_trains_with_bfloat16_autocast_where_the_cpu_has_it(data, tmp_path):
    from models.acceleration import bf16_supported
    cfg = _cfg(data, tmp_path / 'bf', iters=2, val_every='0', precision='bf16')
    if not bf16_supported():                      # a CPU without native bf16: refused up front
        with pytest.raises(ConfigError, match='--precision bf16'):
            Trainer(cfg, log=lambda s: None)
        return
    trainer = Trainer(cfg, log=lambda s: None)
    seen = []
    trainer.net.register_forward_pre_hook(lambda m, args: seen.append(
        torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu')))
    assert trainer.fit()['finished']
    assert seen[:2] == [torch.bfloat16] * 2       # both steps under bf16 autocast ...
    assert seen[2:] == [False]                     # ... validation in float32
    state = load_training_state(tmp_path / 'bf' / 'model_last.pth')
    assert all(v.dtype == torch.float32 for v in state['state_dict'].values()
               if v.is_floating_point())           # weights stay float32
    with pytest.raises(ConfigError, match='choose one'):
        _cfg(data, tmp_path / 'x', precision='bf16', amp=True).validate()


def test_a_runs_own_config_yaml_loads_back_as_a_config(data, tmp_path):
    """``--config RUN/config.yaml`` restarts a run: its nulls (e.g. no held-out family) load."""
    import argparse
    import dataclasses
    from utils.train.config import add_options, load_config_file
    parser = argparse.ArgumentParser()
    add_options(parser)
    written = dataclasses.asdict(_cfg(data, tmp_path))
    assert written['holdout_family'] is None
    path = tmp_path / 'config.yaml'
    path.write_text(yaml.safe_dump(written))
    loaded = load_config_file(str(path), parser)
    assert loaded['holdout_family'] is None and loaded['model'] == written['model']
    path.write_text(yaml.safe_dump({**written, 'holdout_family': 'drizzle'}))
    with pytest.raises(ConfigError, match="'drizzle' is not one of"):
        load_config_file(str(path), parser)
