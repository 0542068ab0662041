"""GPU-related set-up that can be checked on the CPU (issue 16): the suite is pinned to the CPU,
TF32 is off unless asked for, and the start-up report of spikingjelly's LIF kernel."""
import os
import subprocess
import sys

import pytest
import torch

from utils.core.device import resolve_device


def test_suite_is_pinned_to_the_cpu():
    assert os.environ.get('CUDA_VISIBLE_DEVICES') == ''
    assert not torch.cuda.is_available()
    assert resolve_device('auto').type == 'cpu'
    # subprocess tests (CLIs, torchrun) inherit the pin
    out = subprocess.run([sys.executable, '-c',
                          'import os, torch; print(repr(os.environ.get("CUDA_VISIBLE_DEVICES")),'
                          ' torch.cuda.is_available())'],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["''", 'False']


def test_tf32_off_by_default_and_on_only_when_asked():
    from utils.core.device import configure_numerics
    try:
        configure_numerics(torch.device('cpu'), tf32=True, benchmark=True)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.benchmark          # never on the CPU
        configure_numerics(torch.device('cpu'))
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        configure_numerics(torch.device('cpu'))


def test_train_test_and_evaluation_turn_tf32_off(tmp_path, monkeypatch):
    """The three entry points reach configure_numerics with TF32 off (and --tf32 turns it on)."""
    import evaluation
    import test as test_script
    from train import parse_config
    from utils.train import trainer
    calls = []
    monkeypatch.setattr(trainer, 'configure_numerics',
                        lambda device, tf32=False, benchmark=False: calls.append(tf32))
    monkeypatch.setattr(test_script, 'configure_numerics',
                        lambda device, tf32=False, benchmark=False: calls.append(tf32))
    monkeypatch.setattr(evaluation, 'configure_numerics',
                        lambda device, tf32=False, benchmark=False: calls.append(tf32))
    assert parse_config(['--train_dir', 'x']).tf32 is False
    assert parse_config(['--train_dir', 'x', '--tf32']).tf32 is True
    assert test_script.parse_args(['--data_path', 'x']).tf32 is False
    assert evaluation.parse_args(['--restored', 'a', '--target_path', 'b', '--tf32']).tf32
    # test.py: configure_numerics runs before anything reads the (missing) input, which then
    # raises (scripts raise; run_main prints the one line)
    with pytest.raises(ValueError, match='missing: no such file'):
        test_script.main(['--data_path', str(tmp_path / 'missing'), '--model', 'spikerain-tiny',
                          '--random_weights', '--device', 'cpu'])
    assert calls == [False]


def test_lif_kernel_report_says_nothing_on_the_cpu():
    from utils.core.device import lif_kernel_choice, lif_kernel_report
    assert lif_kernel_report(torch.device('cpu')) is None
    assert lif_kernel_choice(torch.device('cpu'), native=False, triton=False,
                             compiler=False) == (None, None)


def test_lif_kernel_decision(monkeypatch):
    import importlib.util

    from utils.core import device as gpu
    cuda = torch.device('cuda', 0)

    def report(native, triton, compiler, requested='auto'):
        real = importlib.util.find_spec
        monkeypatch.setattr(gpu, '_native_built', lambda: native)
        monkeypatch.setattr(gpu, 'has_c_compiler', lambda: compiler)
        monkeypatch.setattr(gpu, '_requested', lambda: requested)
        monkeypatch.setattr(gpu.importlib.util, 'find_spec',
                            lambda name, *a: (object() if triton else None) if name == 'triton'
                            else real(name, *a))
        kernel, line = gpu.lif_kernel_choice(cuda, native=native, triton=triton,
                                             compiler=compiler, requested=requested)
        assert gpu.lif_kernel_report(cuda) == line and '\n' not in line
        return kernel, line

    kernel, line = report(native=False, triton=False, compiler=True)
    assert kernel == 'torch' and 'SLOW' in line and 'requirements-cuda.txt' in line
    kernel, line = report(native=False, triton=True, compiler=True)
    assert kernel == 'triton' and 'SJ_LIF_CUDA_IMPLEMENTATION=torch' in line
    kernel, line = report(native=False, triton=True, compiler=False)
    assert kernel == 'triton' and 'no C compiler' in line and 'expected to fail' in line
    kernel, line = report(native=True, triton=True, compiler=True)
    assert kernel == 'cuda' and 'native' in line
    kernel, line = report(native=True, triton=True, compiler=True, requested='torch')
    assert kernel == 'torch' and 'as SJ_LIF_CUDA_IMPLEMENTATION=torch asks' in line
    kernel, line = report(native=False, triton=False, compiler=True, requested='triton')
    assert kernel is None and 'not installed' in line
    kernel, line = report(native=False, triton=True, compiler=True, requested='cuda')
    assert kernel is None and 'native CUDA extension' in line
    kernel, line = report(native=False, triton=True, compiler=True, requested='bogus')
    assert kernel is None and 'not one of' in line


def test_requirements_cuda_adds_triton():
    from support import ROOT
    text = (ROOT / 'requirements-cuda.txt').read_text()
    lines = [ln.split('#')[0].strip() for ln in text.splitlines()]
    assert '-r requirements.txt' in lines
    assert any(ln.startswith('triton') for ln in lines)


def test_loss_is_read_back_every_log_every_steps_and_before_saving(tmp_path, paired_folder):
    """No host sync of the loss per step: it is read every --log_every steps (and before any
    save/validation/epoch summary), and a non-finite loss still stops the run before saving."""
    import pytest

    from utils.train.trainer import TrainConfig, Trainer, TrainingError
    paired_folder(tmp_path / 'train', 8, (16, 16), name='{i}')
    cfg = dict(model='spikerain-tiny', train_dir=str(tmp_path / 'train'), batch_size=1,
               patch_size=16, iters=5, warmup='0', save_every='0', val_every='0', workers=0,
               tensorboard=False, log_every=2)
    trainer = Trainer(TrainConfig(**cfg, model_save_dir=str(tmp_path / 'a')), log=lambda s: None)
    reads, real = [], trainer._read_back

    def counting():
        reads.append((trainer.progress['iteration'], len(trainer._pending)))
        return real()
    trainer._read_back = counting
    trainer.fit()
    assert reads == [(2, 2), (4, 2), (5, 1)]          # steps 2 and 4, and the run's end

    trainer = Trainer(TrainConfig(**{**cfg, 'log_every': 10, 'save_every': '4'},
                                  model_save_dir=str(tmp_path / 'b')), log=lambda s: None)
    real_loss, calls = trainer.criterion, []

    def nan_at_step_2(pred, target):
        calls.append(1)
        return real_loss(pred, target) * (float('nan') if len(calls) == 2 else 1.0)
    trainer.criterion = nan_at_step_2
    with pytest.raises(TrainingError, match=r'non-finite loss nan at iteration 2 \(epoch 1\); '
                                            r'stopped without saving; no checkpoint'):
        trainer.fit()
    assert not (tmp_path / 'b' / 'model_last.pth').exists()
