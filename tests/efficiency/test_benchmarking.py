"""utils/efficiency/benchmark.py, tools/benchmark.py: conv floor, timings, peak memory, ratios."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from models import build_model
from utils.efficiency.benchmark import (Job, cpu_description, interleaved_times, peak_memory,
                                        record_conv_calls)


def test_conv_calls_are_recorded_with_the_shapes_the_model_sees():
    model = build_model('spikerain-tiny')
    calls = record_conv_calls(model, (2, 3, 32, 32), train=False)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    assert len(calls) == len(convs)                      # each conv runs once per forward
    embed = calls[0]
    assert embed.weight_shape == (16, 3, 3, 3) and embed.input_shape == (4 * 2, 3, 32, 32)
    assert any(c.stride == (2, 2) and c.input_shape == (8, 16, 32, 32) for c in calls)


def test_cpu_description_names_the_model_and_its_matrix_extensions():
    cpu = cpu_description()
    assert cpu['model'] and cpu['cpus'] >= 1
    flags = Path('/proc/cpuinfo').read_text().split('flags')[1].split('\n')[0].split()
    assert cpu['extensions'] == [e for e in ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16',
                                             'amx_tile', 'amx_bf16', 'amx_int8') if e in flags]


def test_jobs_report_times_and_peak_memory():
    jobs = [Job('floor_inference', 'spikerain-tiny', 'conv_floor', size=16, runs=2, warmup=0),
            Job('inference', 'spikerain-tiny', 'fast', size=16, runs=2, warmup=1),
            Job('training', 'spikerain-tiny', 'fast_checkpoint', batch=1, patch=16, runs=2)]
    times = interleaved_times(jobs)
    assert len(times) == 3 and times[0]['conv_calls'] == 66
    for t in times:
        assert len(t['times']) == 2 and t['median_s'] > 0
    memory = peak_memory(Job('inference', 'spikerain-tiny', 'plain', size=32))
    assert memory['peak_bytes'] >= 0


def test_peak_memory_sees_a_fresh_allocation():
    """In a fresh process, as the benchmark measures (this one may already keep freed memory
    for reuse: utils/core/allocator.py)."""
    import subprocess
    import sys

    from support import ROOT
    code = ('import torch; from utils.efficiency.benchmark import read_peak, reset_peak\n'
            'base = reset_peak(torch.device("cpu")); block = torch.ones(64 * 2 ** 20 // 4)\n'
            'print(read_peak(torch.device("cpu")) - base)')
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 48 * 2 ** 20             # 64 MB, touched


@pytest.fixture(scope='module')
def run(cli):
    """``python tools/benchmark.py ARGS``: (code, stdout, stderr)."""
    return lambda *args: cli('tools/benchmark.py', *args)


@pytest.mark.slow
def test_cli_prints_floor_ratio_speedup_and_memory(run, tmp_path):
    code, out, err = run('--model', 'spikerain-tiny', '--size', 16, '--runs', 1, '--warmup', 0,
                         '--inference', 'plain', 'fast', '--training', '--json',
                         tmp_path / 'b.json')
    assert code == 0, err
    cpu = json.loads((tmp_path / 'b.json').read_text())['cpu']      # the CPU named, header too
    assert cpu == cpu_description() and f'CPU {cpu["model"]}' in out.splitlines()[0]
    assert 'conv floor' in out and '/ floor' in out and 'speed-up' in out and 'mem ratio' in out
    rows = [line.split() for line in out.splitlines() if line.startswith(('  plain ', '  fast '))]
    assert [r[0] for r in rows] == ['plain', 'fast'] and rows[0][3] == '1.00x'


@pytest.mark.slow
def test_cli_rejects_bad_options(run):
    code, _, err = run('--model', 'vlif-net-xl')
    assert code == 2 and err.count('\n') == 1 and 'unknown' in err
    code, _, err = run('--model', 'vlif-net-tiny', '--inference', 'warp')
    assert code == 2 and err.count('\n') == 1 and 'warp' in err


def test_default_variants_are_what_the_scripts_do():
    """'default' = test.py's fast inference and train.py's fast training, for every model."""
    from utils.efficiency.benchmark import build_variant, train_py_uses_fast_path
    assert train_py_uses_fast_path()
    for name in ('spikerain-tiny', 'esdnet-tiny', 'vlif-net-tiny'):
        infer = build_variant(Job('inference', name, 'default'))
        assert infer.fast_path is not None and not infer.training, name
        assert not any(isinstance(m, nn.BatchNorm2d) for m in infer.modules())   # BN folded
        train = build_variant(Job('training', name, 'default'))
        assert train.fast_path is not None and train.training, name
        assert train.fast_path.options.recompute, name
        assert not build_variant(Job('training', name, 'fast_keep')).fast_path.options.recompute
    assert build_variant(Job('inference', 'vlif-net-tiny', 'plain')).fast_path is None


def test_bf16_variant_runs_bfloat16_convs():
    from models.acceleration import BF16_WEIGHT, bf16_supported
    from utils.efficiency.benchmark import build_variant
    if not bf16_supported():
        with pytest.raises(ValueError, match='bf16'):
            build_variant(Job('inference', 'vlif-net-tiny', 'bf16'))
        return
    model = build_variant(Job('inference', 'vlif-net-tiny', 'bf16'))
    assert model.fast_path.options.precision == 'bf16'
    copies = [getattr(m, BF16_WEIGHT) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert copies and all(w.dtype == torch.bfloat16 for w in copies)


@pytest.mark.slow
def test_cli_summary_has_plain_default_and_bf16_next_to_the_floor(run):
    from models.acceleration import bf16_supported
    code, out, err = run('--model', 'vlif-net-tiny', '--size', 16, '--runs', 1, '--warmup', 0,
                         '--inference', 'plain', 'default', 'bf16', '--training')
    assert code == 0, err
    summary = out[out.index('summary on cpu'):].splitlines()
    want = ['plain', 'default'] + (['bf16'] if bf16_supported() else [])
    gains = ['bf16', 'gain', 'convs', 'share'] if bf16_supported() else []
    assert summary[1].split() == ['model', 'floor', 's'] + want + gains
    row = summary[3].split()
    assert row[0] == 'vlif-net-tiny' and float(row[1]) > 0 and len(row) == 2 + len(want) + (
        3 if gains else 0)
    ratios = [float(c.rstrip('x')) for c in row[2:2 + len(want)]]
    assert all(r > 0 for r in ratios) and all(c.endswith('x') for c in row[2:2 + len(want)])
    if gains:                     # the model's bf16 gain as a share of its convs' bf16 gain
        gain, convs, share = float(row[-3][:-1]), float(row[-2][:-1]), float(row[-1][:-1])
        # the printed gains are rounded to 0.01 and the share to 1 %: the share recomputed from
        # them may differ by that rounding carried through the quotient, no more
        slack = 100 * gain / convs * (0.005 / gain + 0.005 / convs) + 0.5
        assert abs(share - 100 * gain / convs) <= slack + 1e-9, (gain, convs, share)


def test_large_floors_share_one_input_buffer(monkeypatch):
    """Past SHARED_INPUTS_BYTES (1 MP images) every conv input is a channels-last view into one
    buffer, so the floor fits in memory; the convs still see their own shapes."""
    from utils.efficiency import benchmark
    calls = record_conv_calls(build_model('spikerain-tiny'), (1, 3, 32, 32), train=False)
    separate = benchmark._conv_operands(calls, torch.device('cpu'), False)
    assert len({x.data_ptr() for _, x, *_ in separate}) == len(calls)
    monkeypatch.setattr(benchmark, 'SHARED_INPUTS_BYTES', 1)
    ops = benchmark._conv_operands(calls, torch.device('cpu'), False)
    assert len({x.untyped_storage().data_ptr() for _, x, *_ in ops}) == 1
    for (_, x, *_), call in zip(ops, calls):
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        assert tuple(x.shape) == call.input_shape and x.is_contiguous(memory_format=fmt)
    benchmark._conv_floor_once(ops, backward=False)
