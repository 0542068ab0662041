"""The native one-pass LIF (models/native_lif.py) equals the torch-ops fused LIF bit for bit,
and falls back to the torch ops in one line where it cannot be built."""
import contextlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models.fast_lif as fast_lif
import models.native_lif as native_lif

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def kernel_state(**preset):
    """The native kernel's loaded state replaced by ``preset`` inside the block (``failed=...``:
    the torch ops run, the reference; nothing: it is looked up and built afresh), restored
    after."""
    state = dict(native_lif._state)
    native_lif._state.clear()
    native_lif._state.update(preset)
    try:
        yield
    finally:
        native_lif._state.clear()
        native_lif._state.update(state)


@pytest.fixture
def torch_ops_only(monkeypatch):
    """Runs lif_spikes on its torch ops (the reference)."""
    def run(*args, **kwargs):
        with kernel_state(failed='reference'):
            return fast_lif.lif_spikes(*args, **kwargs)
    return run


def _inputs(T, B, fmt, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T * B, 40, 9, 11, generator=g) * 2
    x[0, 0, 0, 0], x[0, 1, 0, 0], x[0, 2, 0, 0] = float('nan'), float('inf'), -0.0
    x[-1, 3, 1, 1] = 1.0                                  # exactly at the threshold
    return x.contiguous(memory_format=fmt)


def test_the_kernel_builds_here():
    assert native_lif.build() is not None, 'the CI machine has a C compiler: the kernel must build'


@pytest.mark.parametrize('T,B,fmt', list(itertools.product(
    range(1, 7), (1, 2), (torch.channels_last, torch.contiguous_format))))
def test_equal_to_the_torch_ops_bit_for_bit(T, B, fmt, torch_ops_only):
    for seed, v_th in enumerate((1.0, 0.5, 0.0)):
        x = _inputs(T, B, fmt, seed)
        ref = torch_ops_only(x, T, v_th)
        assert torch.equal(fast_lif.lif_spikes(x, T, v_th), ref)
        buf = torch.full((T * B, 100, 9, 11), 7.0).contiguous(memory_format=fmt)
        fast_lif.lif_spikes(x, T, v_th, out=buf[:, 30:70])       # a dense block's slice
        assert torch.equal(buf[:, 30:70], ref)
        assert (buf[:, :30] == 7).all() and (buf[:, 70:] == 7).all()
        half = torch.zeros((T * B, 100, 9, 11), dtype=torch.bfloat16).contiguous(
            memory_format=fmt)
        fast_lif.lif_spikes(x, T, v_th, out=half[:, 30:70])
        assert torch.equal(half[:, 30:70].float(), ref)
    assert 'fn' in native_lif._state, 'the native kernel did not run'


def test_layouts_it_cannot_walk_are_left_to_the_torch_ops():
    x = torch.randn(8, 16, 5, 7)
    out = torch.empty(8, 16, 5, 7).contiguous(memory_format=torch.channels_last)
    assert not native_lif.native_lif(x, 4, 1.0, out)           # element orders differ
    assert not native_lif.native_lif(x.double(), 4, 1.0, out.double())
    assert native_lif.native_lif(x, 4, 1.0, torch.empty_like(x))
    for fmt in (torch.channels_last, torch.contiguous_format):    # a dense block's slice
        buf = torch.empty(8, 40, 5, 7).contiguous(memory_format=fmt)
        assert native_lif.native_lif(x.contiguous(memory_format=fmt), 4, 1.0, buf[:, 10:26])
        assert native_lif.native_lif(x.contiguous(memory_format=fmt).bfloat16(), 4, 1.0,
                                     buf.bfloat16()[:, 10:26])


def test_without_a_compiler_one_note_then_the_torch_ops(monkeypatch, tmp_path, capsys,
                                                        torch_ops_only):
    monkeypatch.setenv('SPIKEDERAIN_CACHE', str(tmp_path / 'cache'))    # nothing built there
    monkeypatch.setenv('CC', 'no-such-cc')
    monkeypatch.setattr(native_lif.shutil, 'which', lambda name: None)  # no cc, no gcc
    with kernel_state():
        x = torch.randn(8, 16, 6, 6, generator=torch.Generator().manual_seed(0))
        first, again = fast_lif.lif_spikes(x, 4, 1.0), fast_lif.lif_spikes(x, 4, 1.0)
        assert 'fn' not in native_lif._state and not (tmp_path / 'cache').exists()
    notes = [line for line in capsys.readouterr().err.splitlines() if 'native LIF' in line]
    assert len(notes) == 1 and 'no C compiler' in notes[0]                # announced once
    assert torch.equal(first, torch_ops_only(x, 4, 1.0)) and torch.equal(again, first)


def test_switched_off_it_is_silent(monkeypatch, capsys):
    monkeypatch.setenv('SPIKEDERAIN_NATIVE', '0')
    with kernel_state():
        fast_lif.lif_spikes(torch.randn(4, 16, 6, 6), 4, 1.0)
        assert 'fn' not in native_lif._state
    assert 'native LIF' not in capsys.readouterr().err


def test_spikerain_temporal_fusion_fast_forward_is_the_same_sum():
    from models import build_model
    model = build_model('spikerain-s', dim=16).eval()
    with torch.no_grad():
        model.temporal_fusion.weights.copy_(torch.tensor([0.3, -1.2, 0.7, 2.0]))

    from models.acceleration import FastOptions, FastRunner
    for fmt, batch in [(torch.channels_last, 2), (torch.contiguous_format, 2),
                       (torch.channels_last, 1)]:
        run = FastRunner(model, FastOptions(channels_last=fmt == torch.channels_last))
        d = torch.randn(4 * batch, 32, 12, 20).contiguous(memory_format=fmt)
        expected = model.temporal_fusion(run.steps(d))
        got = model.temporal_fusion.fast_forward(d, run)
        assert torch.equal(got, expected)
        # one image: its canonical strides, so the 1x1 convs after it read it in place
        assert got.stride() == got.contiguous(memory_format=fmt).clone(memory_format=fmt).stride()


def _allocator_settings(env_extra):
    code = ('import torch; from models import build_model; '
            'from models.acceleration import optimize_for_inference; '
            'from utils.core.allocator import keep_freed_memory; '
            'optimize_for_inference(build_model("spikerain-tiny")); print(keep_freed_memory())')
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env={**env, **env_extra},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_freed_memory_is_kept_unless_the_environment_says_otherwise():
    assert _allocator_settings({}) == 'True'                       # glibc took the settings
    assert _allocator_settings({'MALLOC_MMAP_THRESHOLD_': '131072'}) == 'False'
    assert _allocator_settings({'SPIKEDERAIN_KEEP_MEMORY': '0'}) == 'False'


def _warm_forward_page_faults(env_extra):
    code = ('import resource, torch; from models import build_model; '
            'from models.acceleration import optimize_for_inference; '
            'm = optimize_for_inference(build_model("spikerain-tiny")); '
            'x = torch.rand(1, 3, 256, 256)\n'
            'def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n'
            'counts = []\n'
            'with torch.no_grad():\n m(x)\n for _ in range(3):\n'
            '  f = faults(); m(x); counts.append(faults() - f)\n'
            'print(min(counts))')
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          env={**env, 'OMP_NUM_THREADS': '1', **env_extra}, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.mark.slow
def test_a_warm_forward_reuses_freed_pages():
    """The least page faults of the 2nd-4th forwards: the heap may take a forward or two to
    settle (measured 2026-12-07 on spikerain-tiny at 256x256, one thread: 0-24704 faults in the
    2nd forward, then mostly 0; 34786 in each forward without the setting)."""
    kept, fresh = (_warm_forward_page_faults({}),
                   _warm_forward_page_faults({'SPIKEDERAIN_KEEP_MEMORY': '0'}))
    assert kept * 5 < fresh, (kept, fresh)


@pytest.mark.parametrize('T,r,levels,fmt', list(itertools.product(
    (1, 2, 4), (1, 2), (1, 4), (torch.channels_last, torch.contiguous_format))))
def test_nilif_equal_to_the_torch_ops_with_its_gradient(T, r, levels, fmt):
    def reference(*args):
        with kernel_state(failed='reference'):
            return fast_lif.nilif_spikes(*args)
    for B, decay in ((1, 0.5), (2, 0.3), (1, 1.0)):       # exact and rounded scaling
        g = torch.Generator().manual_seed(T * 100 + r * 10 + levels)
        x = (torch.randn(T * B, 6, 8, 12, generator=g) * 2).contiguous(memory_format=fmt)
        x[0, 1, 0, 0] = -0.0
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        expected = reference(a, T, r, levels, decay, True, fmt)
        got = fast_lif.nilif_spikes(b, T, r, levels, decay, True, fmt)
        assert torch.equal(got, expected) and got.stride() == expected.stride()
        grad = torch.randn(expected.shape, generator=g)
        expected.backward(grad)
        got.backward(grad)
        assert torch.equal(a.grad, b.grad)                  # the same [0, L] support
        assert torch.equal(fast_lif.nilif_spikes(x, T, r, levels, decay, False, fmt), expected)
    assert 'nilif' in native_lif._state, 'the native kernel did not run'



@pytest.mark.parametrize('x_dtype,dtype', [(torch.bfloat16, torch.bfloat16),
                                           (torch.bfloat16, torch.float32),
                                           (torch.float32, torch.bfloat16)])
@pytest.mark.parametrize('fmt', [torch.channels_last, torch.contiguous_format])
def test_nilif_reads_and_writes_bf16_as_the_float32_spikes_converted(x_dtype, dtype, fmt):
    """At inference the kernel reads a bf16 conv output as it is and writes bf16 spikes for a
    bf16 conv: the spikes of ``x.float()``, then ``.to(dtype)``, bit for bit."""
    T, r = 4, 2
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(T, 6, 8, 12, generator=g) * 3).to(x_dtype).contiguous(memory_format=fmt)
    x[0, 1, 0, 0] = -0.0
    x[1, 2, 3, 4] = float('nan')      # NaN spikes where torch's are (its NaN bits vary by path)
    with kernel_state(failed='reference'):
        expected = fast_lif.nilif_spikes(x.float(), T, r, 4, 0.25, False, fmt).to(dtype)
    out = torch.empty(expected.shape, dtype=dtype, memory_format=fmt)
    assert native_lif.native_nilif(x, T, r, 4, 0.25, out, exact_scale=True)
    assert expected.isnan().any()

    def same(a):
        torch.testing.assert_close(a, expected, rtol=0, atol=0, equal_nan=True)
    same(out)
    got = fast_lif.nilif_spikes(x, T, r, 4, 0.25, False, fmt, dtype)
    assert got.dtype == dtype
    same(got)
    with kernel_state(failed='reference'):      # the torch ops give the same without the kernel
        same(fast_lif.nilif_spikes(x, T, r, 4, 0.25, False, fmt, dtype))


@pytest.mark.parametrize('x_dtype,high_dtype,dtype', list(itertools.product(
    (torch.float32, torch.bfloat16), repeat=3)))
def test_decompose_enhance_is_torchs_mul_add_and_addcmul(x_dtype, high_dtype, dtype):
    """VLIF-Net's decompose-enhance in one pass equals the fast path's torch ops (bfloat16 read
    exactly, the result converted as ``.to`` does), NaN and infinities included."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 16, 8, 8, generator=g) * 4).contiguous(memory_format=torch.channels_last)
    high = torch.randn(x.shape, generator=g).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, :3] = torch.tensor([float('nan'), float('inf'), -0.0])
    high[0, 1, 0, :2] = torch.tensor([float('-inf'), 1e30])
    x, high = x.to(x_dtype), high.to(high_dtype)
    a, b = torch.tensor([0.37]), torch.tensor([1.61])
    expected = torch.addcmul(x.float() * b, high.float(), x.float() + (a - b)).to(dtype)
    got = native_lif.native_decompose_enhance(x, high, a, b, dtype)
    assert got.dtype == dtype and got.stride() == expected.stride()
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.nan_to_num(), expected.nan_to_num())
    contiguous = native_lif.native_decompose_enhance(x.contiguous(), high.contiguous(), a, b, dtype)
    assert torch.equal(contiguous.nan_to_num(), expected.contiguous().nan_to_num())
    assert native_lif.native_decompose_enhance(x, high.contiguous(), a, b, dtype) is None

@pytest.mark.parametrize('low_dtype,skip_dtype', [(torch.float32, torch.float32),
                                                  (torch.bfloat16, torch.float32),
                                                  (torch.float32, torch.bfloat16), (None, None)])
@pytest.mark.parametrize('shape', [(2, 5, 1, 1), (1, 3, 2, 7), (4, 24, 9, 6)])
def test_upsample2x_is_torchs_bilinear_plus_the_skip(low_dtype, skip_dtype, shape):
    """One pass for bilinear x2 (align_corners=False, edges clamped) plus a skip map: torch's
    values up to float32 rounding; maps it cannot read are refused (``None``)."""
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(5)
    N, C, h, w = shape
    low = (torch.randn(shape, generator=g) * 3).to(low_dtype or torch.float32).contiguous(
        memory_format=torch.channels_last)
    skip = None if skip_dtype is None else torch.randn(N, C, 2 * h, 2 * w, generator=g).to(
        skip_dtype).contiguous(memory_format=torch.channels_last)
    want = F.interpolate(low.float(), scale_factor=2, mode='bilinear', align_corners=False)
    want = want if skip is None else want + skip.float()
    got = native_lif.native_upsample2x(low, skip)
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    if C > 1 and h * w > 1:          # (else both layouts are the same memory)
        assert native_lif.native_upsample2x(low.contiguous(), skip) is None
    if skip is not None:
        assert native_lif.native_upsample2x(low, skip[:, :, :-1]) is None


@pytest.mark.parametrize('low_dtype,x_dtype,dtype', [
    (torch.float32, torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16, torch.bfloat16),
    (torch.bfloat16, torch.float32, torch.bfloat16)])
def test_upsample2x_decompose_is_decompose_enhance_of_the_upsampled_map(low_dtype, x_dtype,
                                                                        dtype):
    """VLIF's restore resize and decompose-enhance in one pass: the two passes' values up to
    the resize's float32 rounding (bfloat16 results: within one bfloat16 step)."""
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(7)
    low = torch.randn(4, 16, 5, 7, generator=g).to(low_dtype).contiguous(
        memory_format=torch.channels_last)
    x = (torch.randn(4, 16, 10, 14, generator=g) * 2).to(x_dtype).contiguous(
        memory_format=torch.channels_last)
    a, b = torch.tensor([0.37]), torch.tensor([1.61])
    high = F.interpolate(low.float(), scale_factor=2, mode='bilinear', align_corners=False)
    want = native_lif.native_decompose_enhance(x, high, a, b, torch.float32)
    got = native_lif.native_upsample2x_decompose(low, x, a, b, dtype)
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    else:
        torch.testing.assert_close(got.float(), want, rtol=2 ** -7, atol=1e-5)
    assert native_lif.native_upsample2x_decompose(low, x[:, :, 1:], a, b, dtype) is None


@pytest.mark.parametrize('low_dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('T,shape', [(1, (2, 5, 1, 3)), (4, (8, 24, 9, 6))])
def test_upsample2x_lif_is_the_lif_of_the_upsampled_map(low_dtype, dtype, T, shape):
    """The up-sampling's LIF spikes in one pass: bit for bit the LIF kernel's spikes of the
    map :func:`native_upsample2x` makes (NaN and infinities included)."""
    g = torch.Generator().manual_seed(8)
    low = (torch.randn(shape, generator=g) * 1.5)
    low[0, 0, 0, :2] = torch.tensor([float('nan'), float('inf')])
    low = low.to(low_dtype).contiguous(memory_format=torch.channels_last)
    want = fast_lif.lif_spikes(native_lif.native_upsample2x(low), T, 1.0)
    got = native_lif.native_upsample2x_lif(low, T, 1.0, dtype)
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got.float(), want)
    assert native_lif.native_upsample2x_lif(low, 3, 1.0, dtype) is None    # 3 steps: no fit


def test_runner_upsample_with_a_skip_is_torchs_in_training_and_without_the_kernel():
    import torch.nn.functional as F

    from models import build_model
    from models.acceleration import FastOptions, FastRunner
    g = torch.Generator().manual_seed(6)
    low = torch.randn(4, 8, 5, 6, generator=g).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(4, 8, 10, 12, generator=g).contiguous(memory_format=torch.channels_last)
    want = F.interpolate(low, scale_factor=2, mode='bilinear', align_corners=False) + skip
    model = build_model('spikerain-tiny')
    assert torch.equal(FastRunner(model, FastOptions()).upsample(low, 2, skip), want)   # grad on
    with torch.no_grad():
        fused = FastRunner(model, FastOptions()).upsample(low, 2, skip)
        torch.testing.assert_close(fused, want, rtol=1e-6, atol=1e-6)
        with kernel_state(failed='simulated'):
            assert torch.equal(FastRunner(model, FastOptions()).upsample(low, 2, skip), want)


def test_runner_upsample_neuron_fuses_the_lif_at_inference_and_falls_back_to_torch():
    import torch.nn.functional as F

    from models import build_model
    from models.acceleration import FastOptions, FastRunner
    from models.spiking import make_lif
    g = torch.Generator().manual_seed(9)
    low = (torch.randn(8, 6, 5, 4, generator=g) * 2).contiguous(memory_format=torch.channels_last)
    model, lif = build_model('spikerain-tiny'), make_lif()
    with torch.no_grad():
        up = F.interpolate(low, scale_factor=2, mode='bilinear', align_corners=False)
        torch_spikes = fast_lif.lif_spikes(up, model.T, float(lif.v_threshold))
        fused = FastRunner(model, FastOptions()).upsample_neuron(lif, low)
        assert (fused != torch_spikes).float().mean() < 0.01     # rounding: a rare spike moves
        with kernel_state(failed='simulated'):
            got = FastRunner(model, FastOptions()).upsample_neuron(lif, low)
        assert torch.equal(got, torch_spikes)


def _lif_grad(x, T, v_th, alpha, keep_input, seed):
    x = x.clone().requires_grad_(True)
    spikes = fast_lif.lif_spikes_autograd(x, T, v_th, alpha, keep_input=keep_input)
    g = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(seed))
    spikes.backward(g.contiguous(memory_format=torch.channels_last))   # any layout of dL/dS
    return spikes.detach(), x.grad


@pytest.mark.parametrize('T,fmt,keep_input', list(itertools.product(
    range(1, 7), (torch.channels_last, torch.contiguous_format), (True, False))))
def test_training_kernels_equal_the_torch_ops_bit_for_bit(T, fmt, keep_input):
    """The training forward (spikes, H) and backward (surrogate gradient through the resets) in
    native passes give the torch ops' spikes and gradients, bit for bit."""
    for seed, (v_th, alpha) in enumerate(((1.0, 4.0), (0.5, 2.0))):
        x = _inputs(T, 2, fmt, seed)
        x[0, 0, 0, 0] = 0.3                                 # finite: a NaN's gradient is NaN
        native = _lif_grad(x, T, v_th, alpha, keep_input, seed)
        assert native_lif.native_lif_charge(x, T, v_th, alpha, None, torch.empty_like(x), None)
        with kernel_state(failed='reference'):
            ref = _lif_grad(x, T, v_th, alpha, keep_input, seed)
        assert torch.equal(native[0], ref[0])
        # the input's inf gives NaN gradients in both; every other element is identical
        torch.testing.assert_close(native[1], ref[1], rtol=0, atol=0, equal_nan=True)
        assert native[1].nan_to_num().abs().sum() > 0      # the gradient is not all zero


@pytest.mark.parametrize('fmt', (torch.channels_last, torch.contiguous_format))
def test_bf16_inputs_give_the_spikes_of_their_float32_values(fmt, torch_ops_only):
    """A bfloat16 conv output is read by the kernel directly (no float32 copy): the same spikes
    as the float32 input of the same values."""
    for T in range(1, 7):
        x = _inputs(T, 2, fmt, T).to(torch.bfloat16)
        ref = torch_ops_only(x.float(), T, 1.0)
        out = fast_lif.lif_spikes(x, T, 1.0)
        assert out.dtype == torch.bfloat16 and torch.equal(out.float(), ref)
        buf = torch.zeros((2 * T, 100, 9, 11), dtype=torch.bfloat16).contiguous(memory_format=fmt)
        fast_lif.lif_spikes(x, T, 1.0, out=buf[:, 30:70])
        assert torch.equal(buf[:, 30:70].float(), ref)


def test_without_openmp_the_kernels_own_threads_run_them(monkeypatch, tmp_path, torch_ops_only):
    """Where the compiler cannot build with OpenMP (simulated by a flag it rejects), the kernel is
    built without it, on its own threads, and gives the same spikes."""
    monkeypatch.setenv('SPIKEDERAIN_CACHE', str(tmp_path / 'cache'))
    monkeypatch.delenv('CC', raising=False)
    monkeypatch.setattr(native_lif, 'OPENMP', '-fno-such-flag-here')
    with kernel_state():
        x = _inputs(4, 2, torch.channels_last, 0)
        out = torch.empty_like(x)
        assert native_lif.native_lif(x, 4, 1.0, out)
        compiler = native_lif.shutil.which('cc') or native_lif.shutil.which('gcc')
        built = list((tmp_path / 'cache' / 'native').glob('lif-*.so'))
        assert built == [native_lif.library_path(compiler, native_lif.FLAGS)]
        marker = native_lif.library_path(compiler, native_lif.FLAGS + (native_lif.OPENMP,))
        assert marker.with_suffix('.failed').is_file()      # the next process skips that try
    assert torch.equal(out, torch_ops_only(x, 4, 1.0))


@pytest.mark.parametrize('dtype', (torch.float32, torch.bfloat16, torch.uint8))
def test_channel_cat_equals_torch_cat(dtype):
    """Training's dense blocks join their spike parts with one row copy per pixel and part:
    the same tensor as torch.cat, channels-last; other layouts are left to torch.cat."""
    g = torch.Generator().manual_seed(0)
    parts = [(torch.rand(4, c, 5, 7, generator=g) * 3).to(dtype).contiguous(
        memory_format=torch.channels_last) for c in (1, 24, 32, 3)]
    out = native_lif.native_channel_cat(parts)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, torch.cat(parts, dim=1))
    assert native_lif.native_channel_cat([p.contiguous() for p in parts]) is None
    assert native_lif.native_channel_cat([parts[0], parts[1][:, :, :4]]) is None


def test_cat_channels_gradient_is_torch_cats():
    from models import build_model
    from models.acceleration import FastOptions, FastRunner
    run = FastRunner(build_model('spikerain-tiny'), FastOptions())
    g = torch.Generator().manual_seed(1)
    parts = [torch.randn(8, c, 6, 6, generator=g).contiguous(
        memory_format=torch.channels_last).requires_grad_(True) for c in (16, 24, 24)]
    grad = torch.randn(8, 64, 6, 6, generator=g)
    run.cat_channels(parts).backward(grad)
    got = [p.grad.clone() for p in parts]
    for p in parts:
        p.grad = None
    torch.cat(parts, dim=1).backward(grad)
    for a, p in zip(got, parts):
        assert torch.equal(a, p.grad)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_gated_residual_is_torchs_mul_then_addcmul(dtype):
    """SpikeRain's attention output in one pass: the same bits as ``z * gate`` then
    ``addcmul`` (a bfloat16 ``z`` promoted as torch does); layouts it does not take are left
    to the torch ops."""
    from models.native_lif import native_gated_residual
    g = torch.Generator().manual_seed(3)
    cl = torch.channels_last
    N, C, H, W = 8, 40, 7, 9
    res = torch.randn(N, C, H, W, generator=g).contiguous(memory_format=cl)
    z = torch.randn(N, C, H, W, generator=g).to(dtype).contiguous(memory_format=cl)
    z[0, 0, 0, 0] = float('inf')
    pixel = torch.rand(N, 1, H, W, generator=g)
    channel = torch.rand(N, C, generator=g)
    got = native_gated_residual(res, z, pixel, channel)
    want = torch.addcmul(res, z * pixel, channel.view(N, C, 1, 1))
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=cl)
    assert torch.equal(got, want)
    assert native_gated_residual(res.contiguous(), z, pixel, channel) is None
    assert native_gated_residual(res, z, pixel, channel.double()) is None


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_channel_gate_alone_is_a_channel_scale(dtype):
    """The attention's per-(sample, channel) gate on a bfloat16 conv output, in one pass (torch
    copies a bfloat16 operand to float32 before a mixed multiply): ``z * gate``, same bits."""
    from models.native_lif import native_channel_gate
    g = torch.Generator().manual_seed(4)
    z = torch.randn(8, 24, 5, 7, generator=g).to(dtype).contiguous(
        memory_format=torch.channels_last)
    z[1, 2, 3, 4] = -0.0
    gate = torch.rand(8, 24, generator=g)
    got = native_channel_gate(z, gate)[0]
    want = z * gate.view(8, 24, 1, 1)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert torch.equal(torch.signbit(got), torch.signbit(want))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_channel_gate_gives_the_gated_map_and_its_pixel_sums_and_maxima(dtype):
    """ESDNet's and VLIF-Net's attention at inference: ``z * gate`` bit for bit, with each
    pixel's channel sum (another order of the same sum) and channel max (exactly ``amax``, NaN
    included), in one pass."""
    from models.native_lif import native_channel_gate
    g = torch.Generator().manual_seed(6)
    z = torch.randn(8, 40, 5, 7, generator=g).to(dtype).contiguous(
        memory_format=torch.channels_last)
    z[0, 3, 1, 1], z[1, 39, 2, 2], z[2, 0, 0, 0] = float('nan'), float('inf'), -float('inf')
    gate = torch.rand(8, 40, generator=g)
    gated, sums, maxima = native_channel_gate(z, gate)
    want = z * gate.view(8, 40, 1, 1)
    torch.testing.assert_close(gated, want, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(maxima, want.amax(dim=1), rtol=0, atol=0, equal_nan=True)
    finite = want.sum(dim=1).isfinite()
    assert torch.allclose(sums[finite], want.sum(dim=1)[finite], atol=1e-5, rtol=1e-5)
    assert native_channel_gate(z.contiguous(), gate) is None


def test_relu_gated_residual_is_torchs_relu_then_addcmul():
    from models.native_lif import native_relu_gated_residual
    g = torch.Generator().manual_seed(7)
    cl = torch.channels_last
    v, res = (torch.randn(8, 24, 6, 5, generator=g).contiguous(memory_format=cl)
              for _ in range(2))
    pixel = torch.rand(8, 1, 6, 5, generator=g)
    assert torch.equal(native_relu_gated_residual(v, pixel, res),
                       torch.addcmul(res, torch.relu(v), pixel))
    assert torch.equal(native_relu_gated_residual(v, pixel, None), torch.relu(v) * pixel)
    assert native_relu_gated_residual(v, pixel.double(), res) is None


def test_relu_gated_residual_writes_the_bf16_copy_torch_would_make():
    """The bf16 copy written with the attention's output (for the bf16 conv that reads it next)
    is ``.to(torch.bfloat16)`` of it, bit for bit, over every float32 range: subnormals, ties,
    values that round up to infinity, inf and NaN."""
    from models.native_lif import native_relu_gated_residual
    g = torch.Generator().manual_seed(8)
    cl = torch.channels_last
    bits = torch.randint(-2**31, 2**31 - 1, (4, 64, 8, 8), generator=g, dtype=torch.int32)
    res = bits.view(torch.float32).contiguous(memory_format=cl)      # every exponent and sign
    res[0, :4, 0, 0] = torch.tensor([3.3961e38, float('inf'), float('nan'), 1.0 + 2**-8])
    zero = torch.zeros_like(res)
    copy = torch.empty(res.shape, dtype=torch.bfloat16, memory_format=cl)
    out = native_relu_gated_residual(zero, torch.zeros(4, 1, 8, 8), res, copy)
    torch.testing.assert_close(out, res, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(copy, res.to(torch.bfloat16), rtol=0, atol=0, equal_nan=True)


def test_relu_gated_residual_reads_and_writes_a_bf16_stream():
    """A bfloat16 residual is read exactly; ``dtype=bfloat16`` writes only the bfloat16
    rounding of the float32 result (no float32 map)."""
    from models.native_lif import native_relu_gated_residual
    g = torch.Generator().manual_seed(9)
    cl = torch.channels_last
    v = torch.randn(8, 24, 6, 5, generator=g).contiguous(memory_format=cl)
    res = torch.randn(8, 24, 6, 5, generator=g).bfloat16().contiguous(memory_format=cl)
    pixel = torch.rand(8, 1, 6, 5, generator=g)
    want = torch.addcmul(res.float(), torch.relu(v), pixel)
    assert torch.equal(native_relu_gated_residual(v, pixel, res), want)
    got = native_relu_gated_residual(v, pixel, res, dtype=torch.bfloat16)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=cl)
    assert torch.equal(got, want.to(torch.bfloat16))
    copy = torch.empty(v.shape, dtype=torch.bfloat16, memory_format=cl)     # one or the other
    assert native_relu_gated_residual(v, pixel, res, copy, dtype=torch.bfloat16) is None


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_spatial_stats_are_the_channel_sums_and_maxima(dtype):
    """The attention's per-channel statistics in one pass: the maxima are ``amax``'s (NaN
    included), the sums torch's up to float32 rounding (another order)."""
    from models.native_lif import native_spatial_stats
    g = torch.Generator().manual_seed(5)
    z = (torch.randn(3, 32, 40, 36, generator=g) * 3).to(dtype)
    z = z.contiguous(memory_format=torch.channels_last)
    z[1, 2, 5, 7] = float('nan')
    z[2, 3] = -float('inf')
    sums, maxima = native_spatial_stats(z)
    assert torch.equal(maxima.isnan(), z.amax(dim=(2, 3)).isnan())
    assert torch.equal(maxima.nan_to_num(), z.amax(dim=(2, 3)).float().nan_to_num())
    expected = z.double().sum(dim=(2, 3))
    assert torch.equal(sums.isnan(), expected.isnan()) and sums.isnan().sum() == 1
    finite = expected.isfinite()
    assert torch.allclose(sums[finite].double(), expected[finite], rtol=1e-6, atol=1e-3)
    infinite = ~finite & ~expected.isnan()
    assert infinite.any() and torch.equal(sums[infinite], expected[infinite].float())
    assert native_spatial_stats(z.contiguous()) is None        # channels-last rows only


@pytest.mark.parametrize('fmt', [torch.channels_last, torch.contiguous_format])
def test_decompose_enhance_backward_is_autograds(fmt):
    """VLIF-Net's decompose-enhance in training: one native backward pass gives autograd's
    gradients for x and high bit for bit, and a's and b's up to the order of their sums; without
    the kernel, autograd's own."""
    from models.vlifnet import _DecomposeEnhance
    g = torch.Generator().manual_seed(9)
    x, high, grad = ((torch.randn(4, 24, 9, 7, generator=g) * 2).contiguous(memory_format=fmt)
                     for _ in range(3))
    a, b = torch.tensor([0.3]), torch.tensor([0.7])

    def grads(fn):
        leaves = [t.clone().requires_grad_() for t in (x, high, a, b)]
        out = fn(*leaves)
        out.backward(grad)
        return [out.detach()] + [t.grad for t in leaves]
    want = grads(lambda xx, hh, aa, bb: torch.addcmul(xx * bb, hh, xx + (aa - bb)))
    for state in ({}, {'failed': 'reference'}):
        with kernel_state(**state):
            got = grads(_DecomposeEnhance.apply)
        for w, o in zip(want[:3], got[:3]):
            assert torch.equal(w, o)
        torch.testing.assert_close(got[3:], want[3:], rtol=1e-5, atol=1e-4)


def _gated_attention_by_autograd(z, gate, residual, weight, padding, T, _channel_max):
    """The training attention's gated part as torch ops, differentiated by autograd."""
    from models.acceleration import _ChannelMax
    from models.spiking import _spatial_gate
    N, C = gate.shape
    gated = z * gate.view(N, C, 1, 1)
    g_s = _spatial_gate(gated.sum(dim=1), _ChannelMax.apply(gated), weight, padding, T, C)
    relu = torch.relu(gated)
    return relu * g_s if residual is None else torch.addcmul(residual, relu, g_s)


@pytest.mark.parametrize('with_residual', [True, False])
def test_training_attention_gives_autograds_outputs_and_gradients(with_residual):
    """The attention's gated part in training (two native passes each way, the gated map never
    kept) gives the output and the gradients of z, the channel gate, the residual and the
    spatial gate's conv that autograd gives through the torch ops, up to rounding; a pixel
    whose max is held by two channels sends its gradient to both, as the fast path's
    channel max does; without the kernels, the torch ops give the same."""
    from models.acceleration import FastRunner
    from models.spiking import _GatedAttention
    g = torch.Generator().manual_seed(5)
    T, B, C, H, W = 4, 2, 20, 9, 7
    z = torch.randn(T * B, C, H, W, generator=g).contiguous(memory_format=torch.channels_last)
    z[0, :2, 0, 0] = 3.0                                  # a tie for the max at one pixel
    gate = torch.rand(T * B, C, generator=g) + 0.1
    gate[0, :2] = 1.0
    residual = (torch.randn(T * B, C, H, W, generator=g)
                .contiguous(memory_format=torch.channels_last) if with_residual else None)
    weight = torch.randn(1, 2, 7, 7, generator=g) * 0.1
    grad = torch.randn(T * B, C, H, W, generator=g)

    def grads(fn):
        leaves = [None if t is None else t.clone().requires_grad_()
                  for t in (z, gate, residual, weight)]
        out = fn(*leaves, (3, 3), T, FastRunner.channel_max)
        out.backward(grad)
        return [out.detach()] + [t.grad for t in leaves if t is not None]
    want = grads(_gated_attention_by_autograd)
    assert want[1][0, 0, 0, 0] != 0 and want[1][0, 1, 0, 0] != 0
    for state in ({}, {'failed': 'reference'}):
        with kernel_state(**state):
            got = grads(_GatedAttention.apply)
        assert got[1].is_contiguous(memory_format=torch.channels_last) or not state
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


def test_attention_gradient_kernels_refuse_what_they_cannot_walk():
    z = torch.randn(2, 8, 3, 3)                           # contiguous: not channels-last rows
    gate, pixels = torch.rand(2, 8), torch.rand(2, 3, 3)
    assert native_lif.native_attention_gate_grad(z, z, gate) is None
    zc = z.contiguous(memory_format=torch.channels_last)
    assert native_lif.native_attention_gate_grad(zc, zc.bfloat16(), gate) is None
    assert native_lif.native_attention_map_grad(zc, zc, gate, torch.rand(2, 1, 3, 3),
                                                pixels, pixels, pixels.transpose(1, 2)) is None


@pytest.mark.parametrize('fmt', [torch.channels_last, torch.contiguous_format])
def test_nilif_backward_runs_natively_with_the_torch_ops_gradient(fmt, monkeypatch):
    """NI-LIF's training backward takes its one native pass (for a gradient laid out either
    way) and gives the torch ops' gradient bit for bit."""
    ran = []
    inner = fast_lif.native_nilif_backward

    def spy(*args):
        ran.append(inner(*args))
        return ran[-1]
    monkeypatch.setattr(fast_lif, 'native_nilif_backward', spy)
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(8, 6, 8, 12, generator=g) * 2).contiguous(memory_format=fmt)
    grad = torch.randn(8, 24, 4, 6, generator=g).contiguous(memory_format=fmt)
    grads = []
    for state in ({}, {'failed': 'reference'}):
        with kernel_state(**state):
            leaf = x.clone().requires_grad_(True)
            fast_lif.nilif_spikes(leaf, 4, 2, 4, 0.3, True, fmt).backward(grad)
            grads.append(leaf.grad)
    assert ran[0] is (native_lif._function() is not None) and ran[1] is False
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize('autocast', [False, True])
def test_training_attention_takes_its_function_outside_autocast_only(autocast, monkeypatch):
    """ESDNet's fast training path runs the attention's gated part as one function; under
    bfloat16 autocast (train.py --precision bf16) the torch ops, whose dtypes autocast picks."""
    import models.spiking as spiking
    from models import build_model
    from models.acceleration import enable_fast_training
    calls = []
    inner = spiking._GatedAttention.apply
    monkeypatch.setattr(spiking._GatedAttention, 'apply',
                        lambda *args: calls.append(1) or inner(*args))
    model = enable_fast_training(build_model('esdnet-tiny').train())
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        out = model(torch.rand(2, 3, 16, 16))
    out.float().mean().backward()
    assert bool(calls) is not autocast
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
