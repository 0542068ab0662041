"""Fault injection: jobs killed at random moments lose nothing and resume exactly.

* train.py is killed (SIGKILL x3, Ctrl-C x1) at pseudo-random moments while it trains and saves
  every step; after every kill ``model_last.pth`` loads, and re-running the same command ends
  with the same weights, optimizer, schedule and best score as a run never interrupted (bit
  for bit on the CPU). Temp files of a save cut short are removed by the next run.
* test.py is killed half-way; the re-run redoes only the missing outputs, leaves the complete
  ones untouched, removes the temp file a write cut short left, and ends with the same images
  as an uninterrupted run.
* The same seed and settings give the same weights; another seed does not.

The non-finite-loss stop is tested in tests/train/test_train.py. The scripts run as forked
children of one warm helper process (tests/support/cli.py: ``fork_script``), so killing them is
a real SIGKILL of a real ``python train.py`` without paying for a fresh interpreter each time.
"""
import json
import math
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import support.cli as tr
from utils.train.checkpoint import load_training_state
from utils.inference.outputs import MANIFEST_NAME
from utils.train.trainer import TrainConfig, Trainer

HERE = Path(__file__).resolve().parent       # the helper process imports this module from here
ITERS = 18
TRAIN = ['train.py', '--model', 'spikerain-tiny', '--iters', str(ITERS), '--patch_size', '16',
         '--batch_size', '2', '--workers', '0', '--no-tensorboard', '--save_every', '1',
         '--val_every', '4', '--warmup', '2', '--seed', '3']
INTERRUPTIONS = (signal.SIGKILL, signal.SIGKILL, signal.SIGINT, signal.SIGKILL)
TEST_IMAGES = 24


# --------------------------------------------------------------- run inside the helper process
def _version(path: Path):
    """Changes whenever ``path`` is replaced (atomic saves make a new inode)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _finish(argv, cwd, log) -> dict:
    pid = tr.fork_script(argv, cwd, f'{log}.out', f'{log}.err')
    _, status = os.waitpid(pid, 0)
    return dict(code=os.waitstatus_to_exitcode(status), stdout=Path(f'{log}.out').read_text(),
                stderr=Path(f'{log}.err').read_text())


def _wait_for_saves(pid: int, path: Path, count: int) -> list[float]:
    """Times at which ``path`` was replaced ``count`` times by process ``pid`` (polling)."""
    seen, times = _version(path), []
    while len(times) < count:
        if os.waitpid(pid, os.WNOHANG)[0]:
            raise AssertionError(f'training ended before it was interrupted ({path})')
        now = _version(path)
        if now != seen:
            seen = now
            times.append(time.perf_counter())
        time.sleep(0.002)
    return times


def kill_training(data: str, work: str, seed: int) -> dict:
    """The reference run, then the same command interrupted at random moments and finished."""
    rng = random.Random(seed)
    work = Path(work)
    argv = TRAIN + ['--train_dir', f'{data}/train', '--val_dir', f'{data}/val']
    ref = _finish(argv + ['--model_save_dir', str(work / 'ref')], str(work), str(work / 'ref'))
    run = work / 'run'
    last = run / 'model_last.pth'
    argv += ['--model_save_dir', str(run)]
    rounds, step = [], None
    for k, sig in enumerate(INTERRUPTIONS):
        log = work / f'round{k}'
        pid = tr.fork_script(argv, str(work), f'{log}.out', f'{log}.err')
        # Let it make progress (and time one step on the first round), then strike anywhere
        # within the next two steps: in the forward, the backward, the optimizer or the save.
        times = _wait_for_saves(pid, last, 2 if step is None else 1)
        step = step or times[1] - times[0]
        time.sleep(rng.uniform(0, 2 * step))
        os.kill(pid, sig)
        _, status = os.waitpid(pid, 0)
        entry = dict(signal=sig.name, code=os.waitstatus_to_exitcode(status),
                     stderr=Path(f'{log}.err').read_text(),
                     temps=sorted(p.name for p in run.glob('.*.tmp')))
        try:
            state = load_training_state(last)
            entry.update(loads=True, iteration=state['progress']['iteration'],
                         finite=all(torch.isfinite(v).all().item()
                                    for v in state['state_dict'].values()
                                    if v.is_floating_point()))
        except Exception as err:                      # noqa: BLE001 - recorded, then asserted
            entry.update(loads=False, error=str(err))
        rounds.append(entry)
    (run / '.model_last.pth.zzzzzzzz.tmp').write_bytes(b'PK\x03\x04 a save cut short')
    final = _finish(argv, str(work), str(work / 'final'))
    return dict(ref=ref, rounds=rounds, final=final, step=step,
                temps_after=sorted(p.name for p in run.glob('.*.tmp')))


def kill_testing(data: str, work: str, seed: int) -> dict:
    """test.py: an uninterrupted run, then one killed after a few outputs and re-run."""
    rng = random.Random(seed)
    work = Path(work)
    args = ['test.py', '--no_progress', '--weights', f'{data}/tiny.pth', '--data_path',
            f'{data}/many']
    ref = _finish(args + ['--save_path', str(work / 'ref')], str(work), str(work / 'ref'))
    out = work / 'out'
    args += ['--save_path', str(out)]
    pid = tr.fork_script(args, str(work), f'{work}/killed.out', f'{work}/killed.err')
    while len(list(out.glob('*.png'))) < 3:
        if os.waitpid(pid, os.WNOHANG)[0]:
            raise AssertionError('test.py ended before it was killed')
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.05))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    done = {p.name: p.stat().st_mtime_ns for p in out.glob('*.png')}
    missing = sorted({f'img{i:02d}.png' for i in range(TEST_IMAGES)} - set(done))
    # What a kill in the middle of a write leaves: a partial temp file next to the outputs.
    cut_short = out / f'.{missing[0]}.abcd1234.tmp'          # utils.core.atomic's temp name
    cut_short.write_bytes(b'\x89PNG\r\n\x1a\n partial')
    foreign = out / '.not_ours.png.abcd1234.tmp'     # not one of this run's outputs: left alone
    foreign.write_bytes(b'x')
    rerun = _finish(args, str(work), str(work / 'rerun'))
    return dict(ref=ref, killed_code=os.waitstatus_to_exitcode(status), done=done,
                missing=missing, rerun=rerun,
                after={p.name: p.stat().st_mtime_ns for p in out.glob('*.png')},
                temps_after=sorted(p.name for p in out.glob('.*') if p.name != MANIFEST_NAME))


def run_all(spec_file: str, result_file: str) -> None:
    tr.warm_up()
    spec = json.loads(Path(spec_file).read_text())
    result = dict(train=kill_training(**spec['train']), test=kill_testing(**spec['test']))
    Path(result_file).write_text(json.dumps(result))


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def data(tmp_path_factory, paired_folder, tiny_weights) -> Path:
    root = tmp_path_factory.mktemp('fault_data')
    paired_folder(root / 'train', 4, (20, 24), seed=0)
    paired_folder(root / 'val', 1, (16, 16), seed=1)
    rng = np.random.default_rng(2)
    (root / 'many').mkdir()
    for i in range(TEST_IMAGES):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
            root / 'many' / f'img{i:02d}.png')
    shutil.copyfile(tiny_weights('spikerain-tiny'), root / 'tiny.pth')
    return root


@pytest.fixture(scope='module')
def faults(data, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp('faults')
    spec = dict(train=dict(data=str(data), work=str(work / 'train'), seed=11),
                test=dict(data=str(data), work=str(work / 'test'), seed=12))
    for part in spec.values():
        Path(part['work']).mkdir()
    (work / 'spec.json').write_text(json.dumps(spec))
    tr.run_helper(f'import test_faults; test_faults.run_all({str(work / "spec.json")!r}, '
                  f'{str(work / "result.json")!r})', path=[HERE])
    result = json.loads((work / 'result.json').read_text())
    result['train']['dir'] = work / 'train'
    result['test']['dir'] = work / 'test'
    return result


def _same_run_state(a: dict, b: dict) -> None:
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key in a['state_dict']:
        assert torch.equal(a['state_dict'][key], b['state_dict'][key]), key
    assert len(a['optimizer']['state']) == len(b['optimizer']['state'])
    for pa, pb in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        for key in pa:
            assert torch.equal(pa[key], pb[key]), key
    assert a['scheduler'] == b['scheduler'] and a['progress'] == b['progress']
    assert a['best'] == b['best']


# ---------------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_killed_training_always_leaves_a_loadable_checkpoint(faults):
    train = faults['train']
    assert train['ref']['code'] == 0, train['ref']['stderr'][-2000:]
    previous = 0
    for entry in train['rounds']:
        assert entry['loads'], entry.get('error')
        assert entry['finite']
        assert entry['iteration'] > previous, (entry['iteration'], previous)   # progress made
        assert entry['iteration'] < ITERS                                     # was cut short
        previous = entry['iteration']
        if entry['signal'] == 'SIGKILL':
            assert entry['code'] == -signal.SIGKILL
        else:                                          # Ctrl-C: one line, exit 130
            assert entry['code'] == 130 and 'Traceback' not in entry['stderr']
            assert tr.last_line(entry['stderr']).startswith('train.py: interrupted')
            assert entry['temps'] == []                # a clean stop removes its own temp


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_final_state(faults):
    train = faults['train']
    final = train['final']
    assert final['code'] == 0, final['stderr'][-2000:]
    out = final['stdout'] + final['stderr']
    assert 'resumed from' in out and f'finished at iteration {ITERS}/{ITERS}' in out
    assert re.search(r'removed [1-9]\d* temp file\(s\) of a save interrupted earlier', out)
    assert train['temps_after'] == []
    ref = load_training_state(train['dir'] / 'ref' / 'model_last.pth')
    run = load_training_state(train['dir'] / 'run' / 'model_last.pth')
    assert run['progress']['iteration'] == ITERS
    _same_run_state(ref, run)
    assert math.isfinite(run['best']['psnr'])
    best_ref = torch.load(train['dir'] / 'ref' / 'model_best.pth', weights_only=True)
    best_run = torch.load(train['dir'] / 'run' / 'model_best.pth', weights_only=True)
    assert best_ref['iteration'] == best_run['iteration']
    for key, value in best_ref['state_dict'].items():
        assert torch.equal(value, best_run['state_dict'][key]), key


@pytest.mark.slow
def test_interrupted_test_run_redoes_only_missing_outputs(faults):
    test = faults['test']
    assert test['ref']['code'] == 0, test['ref']['stderr'][-2000:]
    assert test['killed_code'] == -signal.SIGKILL
    done, missing = test['done'], test['missing']
    assert 3 <= len(done) < TEST_IMAGES and len(done) + len(missing) == TEST_IMAGES
    rerun = test['rerun']
    assert rerun['code'] == 0, rerun['stderr'][-2000:]
    assert (f'restored {len(missing)} images' in rerun['stdout']
            and f'skipped {len(done)} existing' in rerun['stdout']), rerun['stdout']
    for name, stamp in done.items():                  # complete outputs were not redone
        assert test['after'][name] == stamp, name
    assert sorted(test['after']) == [f'img{i:02d}.png' for i in range(TEST_IMAGES)]
    assert test['temps_after'] == ['.not_ours.png.abcd1234.tmp']
    out, ref = test['dir'] / 'out', test['dir'] / 'ref'
    for name in test['after']:                        # every output whole, as if never killed
        a, b = np.asarray(Image.open(out / name)), np.asarray(Image.open(ref / name))
        assert np.array_equal(a, b), name


def test_same_seed_same_weights_other_seed_other_weights(data, tmp_path):
    def train(seed, name):
        cfg = TrainConfig(model='spikerain-tiny', train_dir=str(data / 'train'),
                          model_save_dir=str(tmp_path / name), batch_size=2, patch_size=16,
                          iters=3, warmup='1', save_every='0', val_every='0', workers=0,
                          tensorboard=False, seed=seed)
        Trainer(cfg, log=lambda s: None).fit()
        return load_training_state(tmp_path / name / 'model_last.pth')
    first, again, other = train(5, 'a'), train(5, 'b'), train(6, 'c')
    _same_run_state(first, again)
    assert any(not torch.equal(v, other['state_dict'][k])
               for k, v in first['state_dict'].items() if v.is_floating_point())
