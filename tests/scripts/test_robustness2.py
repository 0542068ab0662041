"""The bad-input catalogue, round two (issue 15): the file system and signals made real.

Classes, each with at least two cases: (1) outputs never land on inputs or targets, (2) one run
per run folder (a real second process), (3) finite or refused, (4) images as people see them
(EXIF, multi-frame, decompression bombs), (5) resources (a full disk made real with
``RLIMIT_FSIZE`` in the child, a checkpoint config that does not fit its tensors, huge images),
(6) signals (a real SIGTERM; a SIGINT to a job that inherited an ignored SIGINT, as a job
started with ``&`` from a script does), (7) scores that mean something (PSNR inf reported,
outputs of other weights never re-scored). The scripts run as forked children of one warm
helper process (tests/support/cli.py: ``fork_script``); inputs and targets are hashed before
and after.
"""
import json
import os
import resource
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import support.cli as tr
from utils.train.checkpoint import LOCK_NAME, load_training_state
from utils.inference.outputs import MANIFEST_NAME, restore_files
from utils.data.image_io import NonFiniteImageError, image_size, read_image_rgb, tensor_to_uint8

HERE = Path(__file__).resolve().parent       # the helper process imports this module from here
TRAIN = ('train.py', '--model', 'spikerain-tiny', '--patch_size', '16', '--batch_size', '2',
         '--workers', '0', '--no-tensorboard', '--warmup', '0')
LONG = (*TRAIN, '--iters', '100000', '--save_every', '1', '--train_dir', '{D}/good')
TEST = ('test.py', '--no_progress', '--weights', '{D}/tiny.pth')
EVAL = ('evaluation.py', '--quiet')

# (id, argv, expected text of the last stderr line). Run in one warm helper, in this order.
BAD = [
    # (1) every written path against every read path
    ('test-save-into-split-target', (*TEST, '--data_path', '{D}/good', '--save_path',
                                     '{D}/good/target'), 'is the benchmark target folder'),
    ('test-save-inside-split-target', (*TEST, '--data_path', '{D}/good', '--save_path',
                                       '{D}/good/target/restored'), 'lies inside'),
    ('test-target-file-overwritten', (*TEST, '--data_path', '{D}/loose/in', '--target_path',
                                      '{D}/loose/gt/a.png', '--save_path', '{D}/loose/gt'),
     'is the --target_path'),
    ('eval-json-and-csv-same-file', (*EVAL, '--restored', '{D}/good/input', '--target_path',
                                     '{D}/good/target', '--json', '{O}/r.txt', '--csv',
                                     '{O}/r.txt'), 'the same file'),
    ('train-run-folder-inside-dataset', (*TRAIN, '--iters', '1', '--train_dir', '{D}/good',
                                         '--model_save_dir', '{D}/good/input/run'),
     'lies inside'),
    ('export-onto-its-checkpoint', ('tools/export_weights.py', '--checkpoint', '{D}/tiny.pth',
                                    '--out', '{D}/tiny.pth'), 'is the --checkpoint'),
    # (3) finite or refused
    ('test-nan-weights', (*TEST[:-1], '{D}/nan.pth', '--data_path', '{D}/good'),
     'non-finite (NaN/inf)'),
    ('export-nan-weights', ('tools/export_weights.py', '--checkpoint', '{D}/nan.pth', '--out',
                            '{O}/x.pth'), 'non-finite'),
    ('train-lr-nan', (*TRAIN, '--iters', '1', '--train_dir', '{D}/good', '--lr', 'nan'),
     '--lr nan: not a finite number'),
    ('train-weight-decay-inf', (*TRAIN, '--iters', '1', '--train_dir', '{D}/good',
                                '--weight_decay', 'inf'), '--weight_decay inf: not a finite'),
    # (4) images as people see them
    ('test-multi-frame-and-bomb', (*TEST, '--data_path', '{D}/odd'),
     '2 of 4 images failed'),
    ('eval-bomb', (*EVAL, '--restored', '{D}/bombsplit/input', '--target_path',
                   '{D}/bombsplit/target'), 'a.png: declares 100000x100000'),
    ('check-bomb', ('dataset_load.py', 'check', '{D}/bombsplit'), 'a.png: declares'),
    ('train-multi-frame', (*TRAIN, '--iters', '1', '--train_dir', '{D}/gifsplit'),
     'a.tif: has 2 frames'),
    # (5) resources
    ('test-config-asks-for-huge-model', (*TEST[:-1], '{D}/huge_config.pth', '--data_path',
                                         '{D}/good'), 'model_config does not match'),
    ('test-unsupported-device', (*TEST, '--data_path', '{D}/good', '--device', 'meta'),
     "--device meta: unsupported"),
]
# The bomb's limit is settable: a 20x24 image over a limit of 100 pixels is refused too.
ENV_CASES = [('eval-pixel-limit-settable', (*EVAL, '--restored', '{D}/good/input',
                                           '--target_path', '{D}/good/target'),
              {'SPIKEDERAIN_MAX_PIXELS': '100'}, 'over the limit of 100')]


# ---------------------------------------------------------------------------------- fixtures
def _png(path: Path, h=20, w=24, seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)).save(path)


def _bomb(path: Path, size=100_000) -> None:
    """A valid small PNG whose header declares ``size`` x ``size`` pixels."""
    import struct
    import zlib
    raw = zlib.compress(b'\0' * 16)
    chunk = lambda kind, data: (struct.pack('>I', len(data)) + kind + data +  # noqa: E731
                                struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', size, size,
                                                                        8, 2, 0, 0, 0))
                     + chunk(b'IDAT', raw) + chunk(b'IEND', b''))


def _two_frames(path: Path) -> None:
    """An animated PNG (.png) or a two-page TIFF (.tif): two frames of 24x20."""
    frames = [Image.fromarray(np.full((20, 24, 3), v, np.uint8)) for v in (0, 255)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:])


def make_inputs(d: Path, paired_folder, tiny_weights) -> None:
    paired_folder(d / 'good', stems=('a', 'b'))
    _png(d / 'loose' / 'in' / 'a.png', seed=5)
    _png(d / 'loose' / 'gt' / 'a.png', seed=6)
    _png(d / 'odd' / 'a_ok.png', seed=7)
    _two_frames(d / 'odd' / 'b_frames.png')
    _bomb(d / 'odd' / 'c_bomb.png')
    _png(d / 'odd' / 'd_ok.png', seed=8)
    _bomb(d / 'bombsplit' / 'input' / 'a.png')
    _png(d / 'bombsplit' / 'target' / 'a.png', seed=9)
    _two_frames(d / 'gifsplit' / 'input' / 'a.tif')
    _png(d / 'gifsplit' / 'target' / 'a.png', seed=10)
    for i in range(12):
        _png(d / 'many' / f'img{i:02d}.png', 24, 24, seed=20 + i)
    shutil.copyfile(tiny_weights('spikerain-tiny'), d / 'tiny.pth')
    shutil.copyfile(tiny_weights('spikerain-tiny', seed=1), d / 'other.pth')
    state = torch.load(d / 'tiny.pth', weights_only=True)
    first = next(k for k, v in state['state_dict'].items() if v.is_floating_point())
    state['state_dict'][first] = state['state_dict'][first].clone().fill_(float('nan'))
    torch.save(state, d / 'nan.pth')
    state = torch.load(d / 'tiny.pth', weights_only=True)
    state['model_config'] = {**state['model_config'], 'dim': 4096}
    torch.save(state, d / 'huge_config.pth')


# ---------------------------------------------------------------------------- the runner
def _wait_for(pid: int, path: Path, timeout: float = 300) -> bool:
    end = time.time() + timeout
    while not path.exists():
        if os.waitpid(pid, os.WNOHANG)[0] or time.time() > end:
            return False
        time.sleep(0.01)
    return True


def _collect(pid: int, log: str, timeout: float = 240) -> dict:
    """Wait for the child (SIGKILL after ``timeout`` s: a signal that did not stop it)."""
    end, status, killed = time.time() + timeout, None, False
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
        elif time.time() > end and not killed:
            os.kill(pid, signal.SIGKILL)
            killed = True
        else:
            time.sleep(0.02)
    return dict(code=os.waitstatus_to_exitcode(status), killed_by_test=killed,
                stdout=Path(f'{log}.out').read_text(errors='replace'),
                stderr=Path(f'{log}.err').read_text(errors='replace'))


def _start(argv, cwd, log, *, fsize=None, env=None, ignore_sigint=False) -> int:
    """Fork a script with a file-size limit / extra environment / ignored SIGINT inherited."""
    saved_env = dict(os.environ)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_int = signal.getsignal(signal.SIGINT)
    try:
        os.environ.update(env or {})
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, hard))
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return tr.fork_script(argv, cwd, f'{log}.out', f'{log}.err')
    finally:
        signal.signal(signal.SIGINT, old_int)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        os.environ.clear()
        os.environ.update(saved_env)


def serve(spec_file: str, result_file: str) -> None:
    tr.warm_up()
    spec = json.loads(Path(spec_file).read_text())
    D, W = spec['data'], Path(spec['work'])
    sub = lambda argv, out: [a.replace('{D}', D).replace('{O}', str(out)) for a in argv]  # noqa
    res = {}

    def run(case_id, argv, **kw):
        out = W / 'out' / case_id
        argv = sub(argv, out)
        if argv[0] == 'train.py' and '--model_save_dir' not in argv:
            argv += ['--model_save_dir', str(out)]
        if argv[0] == 'test.py' and '--save_path' not in argv:
            argv += ['--save_path', str(out)]
        log = str(W / case_id)
        res[case_id] = _collect(_start(argv, str(W), log, **kw), log)
        return out

    for case_id, argv, _ in BAD:
        run(case_id, argv)
    for case_id, argv, env, _ in ENV_CASES:
        run(case_id, argv, env=env)

    # (5) a full disk: test.py stops at the first output it cannot write.
    # the limit lets the outputs record (about 1 kB) through and stops the first 24x24 PNG
    run('test-full-disk', (*TEST, '--data_path', '{D}/many'), fsize=1500)
    # (5) train.py: the checkpoint save hits the limit; the previous checkpoint survives.
    run_dir = W / 'out' / 'train-full-disk'
    run('train-full-disk-first', (*TRAIN, '--iters', '3', '--stop_after', '1', '--train_dir',
                                  '{D}/good', '--model_save_dir', str(run_dir)))
    before = (run_dir / 'model_last.pth').read_bytes()
    # (3) a training state whose weights went NaN is refused on resume.
    state = load_training_state(run_dir / 'model_last.pth')
    key = next(k for k, v in state['state_dict'].items() if v.is_floating_point())
    state['state_dict'][key] = state['state_dict'][key].clone().fill_(float('nan'))
    torch.save(state, W / 'nan_last.pth')
    run('train-resume-nan-checkpoint', (*TRAIN, '--iters', '3', '--train_dir', '{D}/good',
                                        '--resume', str(W / 'nan_last.pth')))
    run('train-full-disk', (*TRAIN, '--iters', '3', '--train_dir', '{D}/good',
                            '--model_save_dir', str(run_dir)),
        fsize=len(before) // 2)
    res['train-full-disk']['last_unchanged'] = (run_dir / 'model_last.pth').read_bytes() == before

    # (2) + (6): a long run holds the folder; a second process is refused; SIGTERM ends the
    # first cleanly; then a third run takes the folder over (the kernel freed the lock).
    run_dir = W / 'out' / 'locked'
    argv = sub([*LONG, '--model_save_dir', str(run_dir)], run_dir)
    log = str(W / 'holder')
    pid = _start(argv, str(W), log)
    started = _wait_for(pid, run_dir / 'model_last.pth')
    run('second-run-same-folder', (*TRAIN, '--iters', '2', '--train_dir', '{D}/good',
                                   '--model_save_dir', str(run_dir)))
    res['second-run-same-folder']['holder_pid'] = pid
    os.kill(pid, signal.SIGTERM)
    res['sigterm-training'] = dict(_collect(pid, log, timeout=60), started=started)
    state = load_training_state(run_dir / 'model_last.pth')
    res['sigterm-training']['iteration'] = state['progress']['iteration']
    res['sigterm-training']['lock_left'] = (run_dir / LOCK_NAME).exists()
    # A process that is not train.py at all but holds the lock (this helper) is named too.
    import fcntl
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    run('lock-held-by-other-process', (*TRAIN, '--iters', '2', '--train_dir', '{D}/good',
                                       '--model_save_dir', str(run_dir)))
    res['lock-held-by-other-process']['holder_pid'] = os.getpid()
    os.close(fd)                                      # released: the next run may resume

    # (6) SIGINT to a job that inherited an ignored SIGINT (started with '&' by a script).
    run_dir = W / 'out' / 'sigint'
    argv = sub([*LONG, '--model_save_dir', str(run_dir)], run_dir)
    log = str(W / 'sigint')
    pid = _start(argv, str(W), log, ignore_sigint=True)
    started = _wait_for(pid, run_dir / 'model_last.pth')
    os.kill(pid, signal.SIGINT)
    t0 = time.time()
    res['sigint-ignored-at-start'] = dict(_collect(pid, log, timeout=60), started=started)
    res['sigint-ignored-at-start']['seconds'] = time.time() - t0

    # (6) SIGTERM to test.py: outputs written so far are complete.
    out = W / 'out' / 'sigterm-test'
    argv = sub([*TEST, '--data_path', '{D}/many', '--save_path', str(out)], out)
    log = str(W / 'sigterm-test')
    pid = _start(argv, str(W), log)
    _wait_for(pid, out / 'img00.png')
    os.kill(pid, signal.SIGTERM)
    res['sigterm-test'] = _collect(pid, log)
    res['sigterm-test']['outputs'] = sorted(p.name for p in out.glob('*.png'))

    # (7) other weights into a folder of outputs: refused; --overwrite redoes them.
    out = W / 'out' / 'manifest'
    run('manifest-first', (*TEST, '--data_path', '{D}/good', '--save_path', str(out)))
    run('manifest-other-weights', ('test.py', '--no_progress', '--weights', '{D}/other.pth',
                                   '--data_path', '{D}/good', '--save_path', str(out)))
    run('manifest-other-tiling', (*TEST, '--data_path', '{D}/good', '--save_path', str(out),
                                  '--tile', '16', '--tile_overlap', '4'))
    run('manifest-overwrite', ('test.py', '--no_progress', '--weights', '{D}/other.pth',
                               '--data_path', '{D}/good', '--save_path', str(out),
                               '--overwrite', '--target_path', '{D}/good'))
    run('manifest-same-again', ('test.py', '--no_progress', '--weights', '{D}/other.pth',
                                '--data_path', '{D}/good', '--save_path', str(out)))
    unknown = W / 'out' / 'no-manifest'
    _png(unknown / 'a.png', seed=99)
    run('outputs-without-manifest', (*TEST, '--data_path', '{D}/good', '--save_path',
                                     str(unknown)))
    # (7) identical images: PSNR inf is said, with the mean over the others.
    run('eval-identical', (*EVAL, '--restored', '{D}/good/target', '--target_path',
                           '{D}/good/target'))
    Path(result_file).write_text(json.dumps(res))


@pytest.fixture(scope='module')
def ran(tmp_path_factory, paired_folder, tiny_weights):
    base = tmp_path_factory.mktemp('robustness2')
    data, work = base / 'data', base / 'work'
    make_inputs(data, paired_folder, tiny_weights)
    work.mkdir()
    before = tr.tree_digest(data)
    (base / 'spec.json').write_text(json.dumps(dict(data=str(data), work=str(work))))
    tr.run_helper(f'import test_robustness2; test_robustness2.serve('
                  f'{str(base / "spec.json")!r}, {str(base / "result.json")!r})',
                  path=[HERE])
    res = json.loads((base / 'result.json').read_text())
    return dict(res=res, before=before, after=tr.tree_digest(data), work=work, data=data)


def _one_line_error(res: dict, expected: str) -> str:
    err = res['stderr']
    assert 'Traceback' not in err, err[-3000:]
    assert res['code'] != 0, (res['stdout'][-2000:], err[-2000:])
    line = tr.last_line(err)
    assert tr.ERROR_LINE.match(line), f'last stderr line is not the error: {line!r}'
    assert expected in line, line
    return line


# ------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize('case_id,argv,expected', BAD, ids=[c[0] for c in BAD])
@pytest.mark.slow
def test_bad_input_is_one_line(ran, case_id, argv, expected):
    _one_line_error(ran['res'][case_id], expected)


@pytest.mark.parametrize('case_id,argv,env,expected', ENV_CASES, ids=[c[0] for c in ENV_CASES])
@pytest.mark.slow
def test_limit_from_the_environment(ran, case_id, argv, env, expected):
    _one_line_error(ran['res'][case_id], expected)


@pytest.mark.slow
def test_inputs_and_targets_are_byte_identical_afterwards(ran):
    assert len(ran['before']) > 20
    assert ran['after'] == ran['before']


@pytest.mark.slow
def test_refused_paths_wrote_nothing(ran):
    assert not (ran['data'] / 'good' / 'target' / 'restored').exists()
    assert not (ran['work'] / 'out' / 'test-save-into-split-target').exists()


@pytest.mark.slow
def test_resume_from_nan_checkpoint_is_refused(ran):
    _one_line_error(ran['res']['train-resume-nan-checkpoint'], 'non-finite (NaN/inf)')


@pytest.mark.slow
def test_multi_frame_and_bomb_are_bad_files_and_the_rest_is_restored(ran):
    res = ran['res']['test-multi-frame-and-bomb']
    assert res['code'] == 1
    assert 'b_frames.png: has 2 frames' in res['stderr']
    assert 'c_bomb.png: declares 100000x100000' in res['stderr']
    assert 'restored 2 images' in res['stdout']
    out = ran['work'] / 'out' / 'test-multi-frame-and-bomb'
    assert sorted(p.name for p in out.glob('*.png')) == ['a_ok.png', 'd_ok.png']


@pytest.mark.slow
def test_full_disk_stops_test_py_naming_the_file(ran):
    res = ran['res']['test-full-disk']
    line = _one_line_error(res, 'File too large')
    assert 'img00.png' in line and 'stopped: ' in line
    assert 'restored' not in res['stdout']               # it did not go on computing
    out = ran['work'] / 'out' / 'test-full-disk'
    assert list(out.glob('*.png')) == [] and list(out.glob('.img*.tmp')) == []


@pytest.mark.slow
def test_full_disk_during_checkpoint_save_keeps_the_previous_one(ran):
    res = ran['res']['train-full-disk']
    line = _one_line_error(res, 'cannot save the checkpoint: File too large')
    assert '(iteration 1) is intact' in line
    assert res['last_unchanged']
    run_dir = ran['work'] / 'out' / 'train-full-disk'
    assert list(run_dir.glob('.*.tmp')) == []


@pytest.mark.slow
def test_second_run_on_a_folder_is_refused_naming_the_holder(ran):
    res = ran['res']['second-run-same-folder']
    _one_line_error(res, f'PID {res["holder_pid"]}')
    res = ran['res']['lock-held-by-other-process']
    _one_line_error(res, f'PID {res["holder_pid"]}')


@pytest.mark.slow
def test_sigterm_ends_training_like_ctrl_c(ran):
    res = ran['res']['sigterm-training']
    assert res['started'], res['stderr'][-2000:]
    assert res['code'] == 143, res['stderr'][-2000:]
    assert 'Traceback' not in res['stderr']
    line = tr.last_line(res['stderr'])
    assert line.startswith('train.py: terminated (SIGTERM); ') and 'last complete' in line
    assert f'(iteration {res["iteration"]})' in line and res['iteration'] >= 1
    assert not res['lock_left']                         # a clean end removes the lock file


@pytest.mark.slow
def test_sigint_stops_a_job_started_with_sigint_ignored(ran):
    res = ran['res']['sigint-ignored-at-start']
    assert res['started'], res['stderr'][-2000:]
    assert res['code'] == 130, res['stderr'][-2000:]
    assert tr.last_line(res['stderr']).startswith('train.py: interrupted; ')
    assert res['seconds'] < 60


@pytest.mark.slow
def test_sigterm_ends_test_py_with_complete_outputs(ran):
    res = ran['res']['sigterm-test']
    assert res['code'] in (0, 143), res['stderr'][-2000:]
    assert 'Traceback' not in res['stderr']
    if res['code'] == 143:
        assert 'terminated (SIGTERM)' in tr.last_line(res['stderr'])
    out = ran['work'] / 'out' / 'sigterm-test'
    for name in res['outputs']:
        assert read_image_rgb(out / name).shape == (24, 24, 3)


@pytest.mark.slow
def test_outputs_of_other_weights_are_never_rescored(ran):
    r = ran['res']
    assert r['manifest-first']['code'] == 0
    _one_line_error(r['manifest-other-weights'], 'differs in weights_sha256')
    _one_line_error(r['manifest-other-tiling'],
                    'differs in tile: auto -> 16; tile_overlap: 32 -> 4')
    assert r['manifest-overwrite']['code'] == 0 and 'restored 2 images' in \
        r['manifest-overwrite']['stdout']
    assert r['manifest-same-again']['code'] == 0 and 'skipped 2 existing' in \
        r['manifest-same-again']['stdout']
    manifest = json.loads((ran['work'] / 'out' / 'manifest' / MANIFEST_NAME).read_text())
    assert manifest['recipe']['weights'].endswith('other.pth') and not manifest['overwriting']
    _one_line_error(r['outputs-without-manifest'], 'no record of the weights')


@pytest.mark.slow
def test_identical_images_say_psnr_inf(ran):
    res = ran['res']['eval-identical']
    assert res['code'] == 0
    assert 'PSNR inf (2 of 2 images identical to their targets: a, b)' in res['stdout']


# ------------------------------------------------------------------- in-process unit cases
def test_exif_orientation_is_applied(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (16, 24, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6                                    # "rotate 90 CW to display"
    for name in ('a.jpg', 'a.png'):
        Image.fromarray(arr).save(tmp_path / name, exif=exif, **(
            {'quality': 100} if name.endswith('jpg') else {}))
        img = read_image_rgb(tmp_path / name)
        assert img.shape == (24, 16, 3) and image_size(tmp_path / name) == (16, 24)
    assert np.array_equal(read_image_rgb(tmp_path / 'a.png'), np.rot90(arr, k=-1))


def test_nan_image_is_never_written(tmp_path):
    with pytest.raises(NonFiniteImageError):
        tensor_to_uint8(torch.full((1, 3, 4, 4), float('nan')))

    class NaNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * float('nan')
    _png(tmp_path / 'in' / 'a.png')
    lines = []
    summary = restore_files(NaNModel(), [tmp_path / 'in' / 'a.png'], tmp_path / 'out',
                            progress=False, report=lines.append)
    assert not summary.restored and len(summary.failed) == 1 and 'non-finite' in lines[0]
    assert not (tmp_path / 'out' / 'a.png').exists()


def test_huge_image_suggests_tile(tmp_path):
    import utils.inference.outputs as inf
    from utils.inference.memory import Budget
    _png(tmp_path / 'in' / 'a.png')

    class Same(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x
    lines = []
    restore_files(Same(), [tmp_path / 'in' / 'a.png'], tmp_path / 'out', progress=False,
                  report=lines.append, memory=Budget(1000, 10**12, 'test'))   # over the budget
    assert any(ln.startswith('warning: ') and '--tile' in ln for ln in lines)
    assert inf.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))


def test_weights_gone_nan_are_never_saved_as_the_last_good_checkpoint(tmp_path, paired_folder):
    from utils.train.trainer import TrainConfig, Trainer, TrainingError
    paired_folder(tmp_path / 'data', 2, name='{i}')
    cfg = TrainConfig(model='spikerain-tiny', train_dir=str(tmp_path / 'data'), iters=4,
                      patch_size=16, batch_size=2, workers=0, tensorboard=False, warmup='0',
                      save_every='1', val_every='0', model_save_dir=str(tmp_path / 'run'))
    trainer = Trainer(cfg, log=lambda line: None)
    step, calls = trainer._optimizer_step, []

    def step_then_poison():                 # what an inf weight decay does to AdamW
        step()
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                next(trainer.net.parameters()).fill_(float('nan'))
    trainer._optimizer_step = step_then_poison
    with pytest.raises(TrainingError, match=r'non-finite weights before saving .*'
                                            r'\(iteration 1\) is intact'):
        trainer.fit()
    state = load_training_state(tmp_path / 'run' / 'model_last.pth')
    assert state['progress']['iteration'] == 1
    # The lock was released with the failed run: the folder is usable again at once.
    Trainer(cfg, log=lambda line: None).lock.release()
