"""GPU-related set-up that can be checked on the CPU (issue 16): the suite is pinned to the CPU,
TF32 is off unless asked for, and the start-up report of spikingjelly's LIF kernel."""
import os
import subprocess
import sys

import torch

from utils.distributed import resolve_device


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
