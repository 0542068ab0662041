"""One error path: every expected error is a SpikeDerainError, and utils.core.cli.run_main alone
prints ``PROG: error: MESSAGE`` and exits 2 for a bad option, 1 for a runtime error, 130 for
Ctrl-C and 143 for SIGTERM.

The script cases run as ``python SCRIPT ARGS`` would (real exit code and stderr), forked from one
warm process (tests/support/cli.py), as in tests/scripts/test_robustness.py.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import support.cli as tr
from models.weights import WeightsError
from utils.train.checkpoint import CheckpointError, RunFolderBusy
from utils.core.cli import ArgumentParser, Terminated, run_main
from utils.data.datasets import DatasetError, DatasetOptionError
from utils.core.device import DeviceError
from utils.core.errors import InputError, SpikeDerainError, UsageError
from utils.data.image_io import ImageReadError, NonFiniteImageError
from utils.train.losses import LossSpecError
from utils.core.paths import PathConflictError
from utils.train.trainer import ConfigError, TrainingError

BAD = '--no_such_option'

# Every script we own, with the arguments its parser requires, then an unknown option.
SCRIPTS = {
    'train.py': [],
    'test.py': ['--data_path', 'x'],
    'evaluation.py': ['--restored', 'x', '--target_path', 'y'],
    'dataset_load.py': ['list'],
    'tools/collect_photos.py': ['a=b.png', '--out', 'o'],
    'tools/compare_grid.py': ['--rainy', 'x', '--restored', 'y', '--target', 'z'],
    'tools/complexity.py': [],
    'tools/demo.py': [],
    'tools/export_weights.py': ['--checkpoint', 'x.pth', '--out', 'y.pth'],
    'tools/gpu_check.py': [],
    'tools/heldout_check.py': [],
    'tools/make_demo_data.py': [],
    'tools/paper_table.py': ['--data_root', 'x', '--weights', 'w.pth'],
    'tools/plot_curves.py': ['--run', 'x', '--out', 'y.png'],
    'tools/rain_samples.py': [],
}

# (id, argv ({T}: a scratch folder with one image), exit code, what the one line must contain)
RUNTIME = [
    ('test-missing-weights', ['test.py', '--weights', '{T}/missing.pth', '--data_path',
                              '{T}/img.png', '--save_path', '{T}/out'], 1,
     'missing.pth: checkpoint file not found'),
    ('eval-missing-folder', ['evaluation.py', '--restored', '{T}/nowhere', '--target_path',
                             '{T}'], 1, 'nowhere: restored folder not found'),
    ('check-missing-folder', ['dataset_load.py', 'check', '{T}/nowhere'], 1, 'nowhere'),
    ('export-missing-checkpoint', ['tools/export_weights.py', '--checkpoint', '{T}/gone.pth',
                                   '--out', '{T}/w.pth'], 1, 'gone.pth'),
    ('plot-no-tensorboard', ['tools/plot_curves.py', '--run', '{T}', '--out', '{T}/c.png'], 1,
     'no TensorBoard folder'),
    # usage errors found after argparse: exit 2 as well
    ('train-config-unknown-key', ['train.py', '--config', '{T}/bad.yaml'], 2,
     "unknown key 'lrate'"),
    ('test-tile-too-small', ['test.py', '--random_weights', '--model', 'spikerain-tiny',
                             '--data_path', '{T}/img.png', '--tile', '4'], 2, '--tile 4'),
    ('check-unknown-preset', ['dataset_load.py', 'check', '--dataset', 'Rain9000'], 2,
     "unknown dataset 'Rain9000'"),
]


def _prog(script: str) -> str:
    return Path(script).name


@pytest.fixture(scope='module')
def ran(tmp_path_factory):
    base = tmp_path_factory.mktemp('errors')
    scratch = base / 'scratch'
    scratch.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(scratch / 'img.png')
    (scratch / 'bad.yaml').write_text('lrate: 0.1\n')
    jobs = []
    cases = [(f'bad-option-{s}', [s, *args, BAD]) for s, args in SCRIPTS.items()]
    cases += [(cid, argv) for cid, argv, _, _ in RUNTIME]
    for cid, argv in cases:
        cwd = base / 'cwd' / cid.replace('/', '_')
        cwd.mkdir(parents=True)
        name = cid.replace('/', '_')
        jobs.append(dict(id=cid, argv=[a.replace('{T}', str(scratch)) for a in argv],
                         cwd=str(cwd), stdout=str(base / f'{name}.out'),
                         stderr=str(base / f'{name}.err')))
    (base / 'jobs.json').write_text(json.dumps(jobs))
    tr.run_helper(f'from support import cli; cli.serve('
                  f'{str(base / "jobs.json")!r}, {str(base / "results.json")!r})')
    return json.loads((base / 'results.json').read_text())


@pytest.mark.parametrize('script', list(SCRIPTS))
@pytest.mark.slow
def test_bad_option_exits_2_with_one_line(ran, script):
    res = ran[f'bad-option-{script}']
    lines = res['stderr'].strip().splitlines()
    assert res['code'] == 2, res['stderr'][-2000:]
    assert len(lines) == 1, res['stderr'][-2000:]
    assert lines[0].startswith(f'{_prog(script)}: error: ') and BAD in lines[0], lines[0]


@pytest.mark.parametrize('case_id,argv,code,expected', RUNTIME, ids=[c[0] for c in RUNTIME])
@pytest.mark.slow
def test_errors_after_parsing_exit_by_kind(ran, case_id, argv, code, expected):
    res = ran[case_id]
    assert res['code'] == code, res['stderr'][-2000:]
    line = tr.last_line(res['stderr'])
    assert 'Traceback' not in res['stderr']
    assert line.startswith(f'{_prog(argv[0])}: error: ') and expected in line, line


def test_every_expected_error_shares_one_base_and_keeps_its_old_base():
    usage = (UsageError, ConfigError, LossSpecError, PathConflictError, DeviceError,
             DatasetOptionError)
    runtime = (InputError, ImageReadError, DatasetError, WeightsError, CheckpointError,
               RunFolderBusy, TrainingError, NonFiniteImageError)
    for cls in usage + runtime:
        assert issubclass(cls, SpikeDerainError), cls
    assert {cls.exit_code for cls in usage} == {2}
    assert {cls.exit_code for cls in runtime} == {1}
    for cls in (ConfigError, ImageReadError, DatasetError, PathConflictError, LossSpecError):
        assert issubclass(cls, ValueError), cls                 # callers catch them so
    for cls in (WeightsError, CheckpointError, TrainingError, DeviceError):
        assert issubclass(cls, RuntimeError), cls


def test_run_main_picks_the_exit_code(capsys, monkeypatch):
    monkeypatch.delenv('SPIKEDERAIN_DEBUG', raising=False)

    def raising(err):
        def main():
            raise err
        return main
    stop = KeyboardInterrupt()
    stop.detail = 'model_last.pth is the last complete checkpoint'
    cases = [(UsageError('--tile 3: too small'), 2, 'p.py: error: --tile 3: too small'),
             (ConfigError('--config c.yaml: unknown key'), 2, 'p.py: error: --config c.yaml'),
             (ImageReadError('a.png: empty file'), 1, 'p.py: error: a.png: empty file'),
             (SpikeDerainError('3 of 5 images failed'), 1, 'p.py: error: 3 of 5'),
             (ValueError('plain library error'), 1, 'p.py: error: plain library error'),
             (FileNotFoundError(2, 'No such file or directory', 'w.pth'), 1,
              'p.py: error: w.pth: No such file or directory'),
             (RuntimeError('Caught ImageReadError in DataLoader worker process 0.\n'
                           'Original Traceback (most recent call last):\n  File "x"\n'
                           'utils.data.image_io.ImageReadError: b.png: truncated'), None, None),
             (stop, 130, 'p.py: interrupted; model_last.pth is the last complete'),
             (Terminated(), 143, 'p.py: terminated (SIGTERM); files written so far')]
    for err, code, line in cases:
        if code is None:                       # a RuntimeError is a bug: its traceback stays
            with pytest.raises(RuntimeError):
                run_main(raising(err), 'p.py')
            continue
        with pytest.raises(SystemExit) as exited:
            run_main(raising(err), 'p.py')
        stderr = capsys.readouterr().err
        assert exited.value.code == code, (err, stderr)
        assert stderr.count('\n') == 1 and stderr.startswith(line), stderr


def test_worker_error_keeps_the_workers_message(capsys, monkeypatch):
    monkeypatch.delenv('SPIKEDERAIN_DEBUG', raising=False)
    err = ImageReadError('Caught ImageReadError in DataLoader worker process 0.\n'
                         'Original Traceback (most recent call last):\n  File "x", line 1\n'
                         'utils.data.image_io.ImageReadError: data/b.png: truncated')

    def main():
        raise err
    with pytest.raises(SystemExit) as exited:
        run_main(main, 'train.py')
    assert exited.value.code == 1
    assert capsys.readouterr().err == 'train.py: error: data/b.png: truncated\n'


def test_argparse_errors_become_usage_errors():
    p = ArgumentParser(prog='x.py')
    p.add_argument('--n', type=int)
    with pytest.raises(UsageError, match=re.escape("--n: invalid int value: 'many'")):
        p.parse_args(['--n', 'many'])
    sub = p.add_subparsers(dest='cmd')
    sub.add_parser('go').add_argument('--k', choices=['a'])
    with pytest.raises(UsageError, match='invalid choice'):
        p.parse_args(['go', '--k', 'b'])


@pytest.mark.slow
def test_help_still_exits_0(cli):
    proc = cli('tools/rain_samples.py', '--help')
    assert proc.code == 0 and 'usage:' in proc.stdout and proc.stderr == ''
