"""The LIF (inference) and NI-LIF (inference and training) as one pass of native code, built on
first use and cached per machine.

Written with torch ops, the fused LIF of :mod:`models.fast_lif` makes three passes over the
membrane per time step, and its spike writes into a dense block's channel slice are strided: on
an Intel Xeon with AVX-512 the neuron took about as long as the convolutions it feeds. Here the
same arithmetic (``H = X + V/2``, ``S = H >= v_th``, ``V = S ? H - H : H``) runs once per element
over all T steps, in a small C function (no torch headers, so it compiles in well under a second)
loaded with :mod:`ctypes`, which releases the GIL while it runs on ``torch.get_num_threads()``
threads. The spikes are the same bit for bit as
the torch ops' (halving is exact, so a fused multiply-add rounds like the separate ops; the
reset to 0 differs at most in the sign of a zero membrane, which no later compare can see).
VLIF-Net's NI-LIF (:func:`native_nilif`) walks its r x r patch steps the same way and also fills
the mask its straight-through gradient needs.

The library is compiled with ``cc -O3 -march=native`` into ``$SPIKEDERAIN_CACHE`` (default
``~/.cache/spikederain``) under a name that hashes the source, the flags and the CPU, so it is
built once per machine (``make setup`` builds it ahead of time). Without a C compiler, or with
``SPIKEDERAIN_NATIVE=0``, :func:`native_lif` returns ``False`` and the torch ops run, after a
one-line note.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

DISABLE_ENV = 'SPIKEDERAIN_NATIVE'
CACHE_ENV = 'SPIKEDERAIN_CACHE'
# No contraction into fused multiply-adds: each op rounds as the torch op it replaces.
FLAGS = ('-O3', '-march=native', '-ffp-contract=off', '-shared', '-fPIC', '-pthread')

SOURCE = r'''
#include <stdint.h>
#include <pthread.h>
#include <math.h>
#include <stdlib.h>

#define CHUNK 2048
#define MAX_THREADS 64

/* Threads to use for this many work items (at least one, at most MAX_THREADS). */
static int thread_count(int threads, int64_t items) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > items) threads = (int)items;
    return threads < 1 ? 1 : threads;
}

/* fn on each of `threads` jobs (`size` bytes apart), jobs 1.. on new threads; a thread that
   cannot start runs its job here. */
static void run_jobs(void *(*fn)(void *), char *jobs, size_t size, int threads) {
    pthread_t ids[MAX_THREADS];
    int started = 0;
    for (int i = 1; i < threads; i++) {
        if (pthread_create(&ids[i], 0, fn, jobs + i * size) != 0) break;
        started = i;
    }
    fn(jobs);
    for (int i = started + 1; i < threads; i++) fn(jobs + i * size);
    for (int i = 1; i <= started; i++) pthread_join(ids[i], 0);
}

typedef struct {
    const float *x; void *out; int bf16;
    int64_t T, R, K, xs_t, xs_r, os_t, os_r, first, last;
    float vth;
} job_t;

/* Items are (row, chunk of K) pairs; each runs all T steps with its membrane in a local array. */
static void *run(void *arg) {
    const job_t *j = (const job_t *)arg;
    int64_t chunks = (j->K + CHUNK - 1) / CHUNK;
    float v[CHUNK];
    for (int64_t item = j->first; item < j->last; item++) {
        int64_t r = item / chunks, k0 = (item % chunks) * CHUNK;
        int64_t n = j->K - k0 < CHUNK ? j->K - k0 : CHUNK;
        for (int64_t t = 0; t < j->T; t++) {
            const float *x = j->x + t * j->xs_t + r * j->xs_r + k0;
            int64_t o = t * j->os_t + r * j->os_r + k0;
            float half = t ? 0.5f : 0.0f;
            if (j->bf16) {
                uint16_t *s = (uint16_t *)j->out + o;
                for (int64_t c = 0; c < n; c++) {
                    float h = t ? x[c] + half * v[c] : x[c];
                    int fire = h >= j->vth;
                    s[c] = fire ? (uint16_t)0x3F80 : (uint16_t)0;
                    v[c] = fire ? h - h : h;      /* as H - H*S: NaN for an infinite H */
                }
            } else {
                float *s = (float *)j->out + o;
                for (int64_t c = 0; c < n; c++) {
                    float h = t ? x[c] + half * v[c] : x[c];
                    int fire = h >= j->vth;
                    s[c] = fire ? 1.0f : 0.0f;
                    v[c] = fire ? h - h : h;      /* as H - H*S: NaN for an infinite H */
                }
            }
        }
    }
    return 0;
}

int lif_forward(const float *x, void *out, int bf16, int64_t T, int64_t R, int64_t K,
                int64_t xs_t, int64_t xs_r, int64_t os_t, int64_t os_r, float vth,
                int threads) {
    int64_t items = R * ((K + CHUNK - 1) / CHUNK);
    threads = thread_count(threads, items);
    job_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        job_t j = {x, out, bf16, T, R, K, xs_t, xs_r, os_t, os_r,
                   items * i / threads, items * (i + 1) / threads, vth};
        jobs[i] = j;
    }
    run_jobs(run, (char *)jobs, sizeof(job_t), threads);
    return 0;
}

/* NI-LIF over T steps of r x r patch pixels. x [T*B, C, H, W] and out [T*B, C*r*r, H/r, W/r]
   with any strides (xs, os: n, c, y, x); inside (optional) [T, r*r, B, C, H/r, W/r] bytes.
   Same ops in the same order as models.spiking.NILIF on each element. */
typedef struct {
    const float *x; float *out; uint8_t *inside;
    int64_t T, B, C, h, w, r, first, last;
    const int64_t *xs, *os;
    float levels, decay; int exact_scale;
} nijob_t;

/* One item is a row (b, yy) of the h x w grid, every channel: the membranes of its w*C elements
   live in two scratch arrays while all T*r*r steps run; the innermost loop walks whichever of
   channel and column is contiguous in x (channels-last: the channel). */
static void *run_nilif(void *arg) {
    const nijob_t *j = (const nijob_t *)arg;
    int64_t rr = j->r * j->r, C = j->C, w = j->w;
    int c_inner = j->xs[1] <= j->xs[3];
    float *u = (float *)malloc(sizeof(float) * (size_t)(w * C));
    float *prev = (float *)malloc(sizeof(float) * (size_t)(w * C));
    if (!u || !prev) { free(u); free(prev); return (void *)1; }
    int64_t n_outer = c_inner ? w : C, n_inner = c_inner ? C : w;
    for (int64_t item = j->first; item < j->last; item++) {
        int64_t b = item / j->h, yy = item % j->h;
        int first = 1;
        for (int64_t t = 0; t < j->T; t++) {
            for (int64_t k = 0; k < rr; k++) {
                int64_t i = k / j->r, jj = k % j->r;
                const float *xrow = j->x + (t * j->B + b) * j->xs[0] + (yy * j->r + i) * j->xs[2]
                                    + jj * j->xs[3];
                float *orow = j->out + (t * j->B + b) * j->os[0] + k * j->os[1] + yy * j->os[2];
                /* strides of the inner loop in x, out and inside, and of the outer one */
                int64_t xi = c_inner ? j->xs[1] : j->r * j->xs[3];
                int64_t xo = c_inner ? j->r * j->xs[3] : j->xs[1];
                int64_t oi = c_inner ? rr * j->os[1] : j->os[3];
                int64_t oo = c_inner ? j->os[3] : rr * j->os[1];
                int64_t ii = c_inner ? j->h * w : 1, io = c_inner ? 1 : j->h * w;
                uint8_t *irow = j->inside ? j->inside + (((t * rr + k) * j->B + b) * C * j->h
                                                         + yy) * w : 0;
                for (int64_t o = 0; o < n_outer; o++) {
                    const float *xp = xrow + o * xo;
                    float *op = orow + o * oo;
                    float *up = u + o * n_inner, *pp = prev + o * n_inner;
                    for (int64_t q = 0; q < n_inner; q++) {
                        float xk = xp[q * xi];
                        float v;
                        if (first) {
                            v = xk;
                        } else {
                            v = up[q] - pp[q];
                            if (j->exact_scale) v = xk + j->decay * v;
                            else { v = v * j->decay; v = v + xk; }
                        }
                        up[q] = v;
                        float cl = v < 0.0f ? 0.0f : (v > j->levels ? j->levels : v);
                        if (irow) irow[o * io + q * ii] = cl == v;
                        float sp = rintf(cl) / j->levels;
                        pp[q] = sp;
                        op[q * oi] = sp;
                    }
                }
                first = 0;
            }
        }
    }
    free(u);
    free(prev);
    return 0;
}

int nilif_forward(const float *x, float *out, uint8_t *inside, int64_t T, int64_t B, int64_t C,
                  int64_t h, int64_t w, int64_t r, const int64_t *xs, const int64_t *os,
                  float levels, float decay, int exact_scale, int threads) {
    int64_t items = B * h;
    threads = thread_count(threads, items);
    nijob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        nijob_t j = {x, out, inside, T, B, C, h, w, r, items * i / threads,
                     items * (i + 1) / threads, xs, os, levels, decay, exact_scale};
        jobs[i] = j;
    }
    run_jobs(run_nilif, (char *)jobs, sizeof(nijob_t), threads);
    return 0;
}
'''

_state: dict = {}          # 'fn': the loaded function, or 'failed': why it is not available


def _note(why: str) -> None:
    _state['failed'] = why
    print(f'note: native LIF kernel not available ({why}); using torch ops (slower on some '
          f'CPUs)', file=sys.stderr, flush=True)


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'spikederain')
    return Path(root) / 'native'


def _cpu_id() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in text.splitlines() if line.startswith(('model name', 'flags'))][:2]
    return '\n'.join(keep) or platform.machine()


def library_path(compiler: str) -> Path:
    key = hashlib.sha256('\0'.join([SOURCE, compiler, *FLAGS, _cpu_id()]).encode()).hexdigest()
    return cache_dir() / f'lif-{key[:16]}.so'


def build(quiet: bool = False) -> Path | None:
    """Compile the kernel into the cache if it is not there (atomically); its path, or ``None``
    (with a one-line note unless ``quiet``) when no compiler can build it."""
    compiler = shutil.which(os.environ.get('CC', 'cc')) or shutil.which('gcc')
    if compiler is None:
        if not quiet:
            _note('no C compiler (cc) found')
        return None
    target = library_path(compiler)
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src = Path(tmp) / 'lif.c'
            src.write_text(SOURCE)
            built = Path(tmp) / target.name
            result = subprocess.run([compiler, *FLAGS, str(src), '-o', str(built), '-lm'],
                                    capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                first = (result.stderr.strip().splitlines() or ['failed'])[0]
                raise OSError(f'{compiler}: {first}')
            os.replace(built, target)
    except (OSError, subprocess.SubprocessError) as err:
        if not quiet:
            _note(f'build failed: {err}')
        return None
    return target


def _function():
    if 'fn' in _state or 'failed' in _state:
        return _state.get('fn')
    if os.environ.get(DISABLE_ENV, '1').strip() == '0':
        _state['failed'] = f'{DISABLE_ENV}=0'
        return None
    path = build()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        _note(f'cannot load {path}: {err}')
        return None
    fn = lib.lif_forward
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int] + [ctypes.c_int64] * 7 + [
        ctypes.c_float, ctypes.c_int]
    fn.restype = ctypes.c_int
    ni = lib.nilif_forward
    ni.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 6 + [ctypes.c_void_p] * 2 + [
        ctypes.c_float, ctypes.c_float, ctypes.c_int, ctypes.c_int]
    ni.restype = ctypes.c_int
    _state['fn'], _state['nilif'] = fn, ni
    return fn


def _rows(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, int, int] | None:
    """Two same-shape tensors (one time step) as R rows of K unit-stride elements, at a fixed
    row stride in each (channels-last: a row per pixel, K channels; contiguous: one row), with
    the same element order: ``(R, K, a_row_stride, b_row_stride)``, or ``None``."""
    dims = sorted((d for d in range(a.dim()) if a.shape[d] > 1), key=lambda d: -a.stride(d))
    inner = 1
    while dims and a.stride(dims[-1]) == inner and b.stride(dims[-1]) == inner:
        inner *= a.shape[dims.pop()]
    if not dims:
        return 1, inner, inner, inner
    rows, row_a, row_b = 1, a.stride(dims[-1]), b.stride(dims[-1])
    while dims and a.stride(dims[-1]) == row_a * rows and b.stride(dims[-1]) == row_b * rows:
        rows *= a.shape[dims.pop()]
    return None if dims or inner < 8 else (rows, inner, row_a, row_b)


def native_lif(x: torch.Tensor, T: int, v_th: float, out: torch.Tensor) -> bool:
    """Spikes of ``x [T*B, ...]`` (float32, CPU) from rest into ``out`` (float32 or bfloat16,
    any strides that keep the same rows as ``x``, e.g. a dense block's channel slice). ``False``
    when the kernel is unavailable or the layouts do not fit (the caller runs the torch ops)."""
    if (x.device.type != 'cpu' or out.device.type != 'cpu' or x.dtype != torch.float32
            or out.dtype not in (torch.float32, torch.bfloat16) or x.shape != out.shape
            or x.dim() < 2 or x.shape[0] % T or x.numel() == 0):
        return False
    xs, os_ = x.unflatten(0, (T, -1)), out.unflatten(0, (T, -1))
    layout = _rows(xs[0], os_[0])
    if layout is None:
        return False
    fn = _function()
    if fn is None:
        return False
    rows, inner, row_x, row_o = layout
    step_x, step_o = (xs.stride(0), os_.stride(0)) if T > 1 else (0, 0)
    fn(x.data_ptr(), out.data_ptr(), int(out.dtype == torch.bfloat16), T, rows, inner,
       step_x, row_x, step_o, row_o, float(v_th), torch.get_num_threads())
    return True


def native_nilif(x: torch.Tensor, T: int, r: int, levels: int, decay: float, out: torch.Tensor,
                 inside: torch.Tensor | None = None, exact_scale: bool = False) -> bool:
    """NI-LIF spikes of ``x [T*B,C,H,W]`` over T·r² patch steps into ``out [T*B, C*r*r, H/r,
    W/r]`` (float32, any strides), and where the potential lay in [0, levels] into ``inside``
    (bool ``[T, r*r, B, C, H/r, W/r]``, contiguous) when given; ``False`` if unavailable."""
    if (x.device.type != 'cpu' or x.dtype != torch.float32 or out.dtype != torch.float32
            or x.dim() != 4 or out.dim() != 4 or x.numel() == 0
            or (inside is not None and (inside.dtype != torch.bool or not inside.is_contiguous()))):
        return False
    if _function() is None:
        return False
    N, C, H, W = x.shape
    strides = (ctypes.c_int64 * 4)(*x.stride()), (ctypes.c_int64 * 4)(*out.stride())
    _state['nilif'](x.data_ptr(), out.data_ptr(), inside.data_ptr() if inside is not None else None,
                    T, N // T, C, H // r, W // r, r, strides[0], strides[1], float(levels),
                    float(decay), int(exact_scale), torch.get_num_threads())
    return True
