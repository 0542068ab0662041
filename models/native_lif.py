"""The LIF and NI-LIF (inference and training) as one pass of native code, built on first use
and cached per machine.

Written with torch ops, the fused LIF of :mod:`models.fast_lif` makes three passes over the
membrane per time step, and its spike writes into a dense block's channel slice are strided: on
an Intel Xeon with AVX-512 the neuron took about as long as the convolutions it feeds. Here the
same arithmetic (``H = X + V/2``, ``S = H >= v_th``, ``V = H - H*S``) runs once per element
over all T steps, in a small C function (no torch headers, so it compiles in well under a second)
loaded with :mod:`ctypes`, which releases the GIL while it runs on ``torch.get_num_threads()``
threads. The spikes are the same bit for bit as the torch ops' (halving is exact, so a fused
multiply-add rounds like the separate ops). The inference kernel also reads a bfloat16 input
(a bf16 conv's output) exactly, so that path needs no float32 copy.

Training: :func:`native_lif_charge` is the forward (spikes, and the potential H the backward
pass needs) and :func:`native_lif_backward` the surrogate-gradient pass through all T resets.
Between them torch computes the sigmoid, per step as the torch ops do, because a C ``expf``
rounds differently; every other operation is the one torch does (its ``addcmul`` is a fused
multiply-add, hence ``fmaf``), so the gradients are the same bit for bit.
VLIF-Net's NI-LIF (:func:`native_nilif`) walks its r x r patch steps the same way and also fills
the mask its straight-through gradient needs, which :func:`native_nilif_backward` reads.
Helpers that are not neurons live here too, since they are built with them:
:func:`native_channel_cat`, the channel concatenation of channels-last spikes that training's
dense blocks make before each conv (torch's cat writes those interleaved rows about half as fast),
and the attentions' element-wise passes at inference, each one pass where torch makes two or
three (:func:`native_gated_residual`, :func:`native_channel_gate`,
:func:`native_relu_gated_residual`), and x2 bilinear up-sampling fused with what reads it next
(:func:`native_upsample2x`, :func:`native_upsample2x_decompose`, :func:`native_upsample2x_lif`);
in training, the attention's backward passes (:func:`native_attention_gate_grad`,
:func:`native_attention_map_grad`) and decompose-enhance's (:func:`native_decompose_backward`).

The library is compiled with ``cc -O3 -march=native`` into ``$SPIKEDERAIN_CACHE`` (default
``~/.cache/spikederain``) under a name that hashes the source, the flags and the CPU, so it is
built once per machine (``make setup`` builds it ahead of time). Without a C compiler, or with
``SPIKEDERAIN_NATIVE=0``, :func:`native_lif` returns ``False`` and the torch ops run, after a
one-line note.
"""
from __future__ import annotations

import contextlib
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
# Tried first: the kernels' threads are then torch's OpenMP threads (see run_jobs).
OPENMP = '-fopenmp'

SOURCE = r'''
#include <stdint.h>
#include <pthread.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 2048
#define MAX_THREADS 64

/* Threads to use for this many work items (at least one, at most MAX_THREADS). */
static int thread_count(int threads, int64_t items) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > items) threads = (int)items;
    return threads < 1 ? 1 : threads;
}

/* fn on each of `threads` jobs (`size` bytes apart). Built with OpenMP, the jobs run on the
   process's OpenMP threads, torch's own pool (libgomp is loaded once per process): threads of
   our own would compete with torch's workers, which spin for a while after each torch op (they
   took the second core: measured up to twice the kernel's time). Without OpenMP, jobs 1.. run
   on new threads, and a thread that cannot start runs its job here. */
#ifdef _OPENMP
static void run_jobs(void *(*fn)(void *), char *jobs, size_t size, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int i = 0; i < threads; i++) fn(jobs + i * size);
}
#else
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
#endif

static float bf16_to_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, NaN to the quiet NaN: torch's float -> bfloat16. */
static inline uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if (f != f) return (uint16_t)0x7FC0;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* Element i of a float32 or bfloat16 array (read exactly); bf16 is a constant at each caller,
   so the loops around it stay branch-free. */
static inline float load_any(const void *p, int64_t i, int bf16) {
    return bf16 ? bf16_to_float(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* One LIF step of one element as the torch ops make it: H = X (+ V/2 after the first step),
   S = H >= vth, V = H - H*S (NaN for an infinite H); the spike as 0/1. */
static inline int lif_fire(float x, float *v, int64_t t, float vth) {
    float h = t ? x + 0.5f * *v : x;
    int fire = h >= vth;
    *v = fire ? h - h : h;
    return fire;
}

/* A spike written as 1.0 or 0.0, in float32 or bfloat16 (both exact). */
static inline void store_spike(void *p, int64_t i, int fire, int bf16) {
    if (bf16) ((uint16_t *)p)[i] = fire ? (uint16_t)0x3F80 : (uint16_t)0;
    else ((float *)p)[i] = fire ? 1.0f : 0.0f;
}

/* VLIF-Net's decompose-enhance of one element, x*b + high*(x + amb), rounded as torch's mul,
   add and addcmul (a fused multiply-add) round it. */
static inline float decompose(float x, float high, float b, float amb) {
    return fmaf(high, x + amb, x * b);
}

/* Inference: items are (row, chunk of K) pairs, each running all T steps with its membrane in
   a local array and writing its spikes straight into the output row (which may be a strided
   channel slice of a dense block's buffer). */
typedef struct {
    const void *x; void *out; int x_bf16, out_bf16;
    int64_t T, R, K, xs_t, xs_r, os_t, os_r, first, last;
    float vth;
} ijob_t;

static inline __attribute__((always_inline)) void infer_row(
        const ijob_t *j, const void *xv, void *ov, float *v, int64_t n, int64_t t,
        const int x_bf16, const int out_bf16) {
    for (int64_t c = 0; c < n; c++)
        store_spike(ov, c, lif_fire(load_any(xv, c, x_bf16), v + c, t, j->vth), out_bf16);
}

static void *run_inference(void *arg) {
    const ijob_t *j = (const ijob_t *)arg;
    int64_t chunks = (j->K + CHUNK - 1) / CHUNK;
    float v[CHUNK];
    size_t xsize = j->x_bf16 ? 2 : 4, osize = j->out_bf16 ? 2 : 4;
    for (int64_t item = j->first; item < j->last; item++) {
        int64_t r = item / chunks, k0 = (item % chunks) * CHUNK;
        int64_t n = j->K - k0 < CHUNK ? j->K - k0 : CHUNK;
        for (int64_t t = 0; t < j->T; t++) {
            const char *x = (const char *)j->x + (t * j->xs_t + r * j->xs_r + k0) * xsize;
            char *o = (char *)j->out + (t * j->os_t + r * j->os_r + k0) * osize;
            if (j->x_bf16 && j->out_bf16) infer_row(j, x, o, v, n, t, 1, 1);
            else if (j->x_bf16) infer_row(j, x, o, v, n, t, 1, 0);
            else if (j->out_bf16) infer_row(j, x, o, v, n, t, 0, 1);
            else infer_row(j, x, o, v, n, t, 0, 0);
        }
    }
    return 0;
}

int lif_inference(const void *x, int x_bf16, void *out, int out_bf16, int64_t T, int64_t R,
                  int64_t K, int64_t xs_t, int64_t xs_r, int64_t os_t, int64_t os_r, float vth,
                  int threads) {
    int64_t items = R * ((K + CHUNK - 1) / CHUNK);
    threads = thread_count(threads, items);
    ijob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        ijob_t j = {x, out, x_bf16, out_bf16, T, R, K, xs_t, xs_r, os_t, os_r,
                    items * i / threads, items * (i + 1) / threads, vth};
        jobs[i] = j;
    }
    run_jobs(run_inference, (char *)jobs, sizeof(ijob_t), threads);
    return 0;
}

/* Training kernels: every tensor holds each time step as one dense run of n elements, `step`
   apart (what a conv's output is), so a work item is a CHUNK-element piece of that run. */
static int64_t piece(int64_t item, int64_t n, int64_t *k0) {
    *k0 = item * CHUNK;
    return n - *k0 < CHUNK ? n - *k0 : CHUNK;
}

/* Training forward: spikes (optional), the charged potential H and the surrogate's argument
   (H - v_th)·alpha (optional), as the torch ops round them (H = X + V/2, the halving exact;
   V = H - H*S, one rounding as addcmul). */
typedef struct {
    const float *x; float *out, *h, *z;
    int64_t T, n, step, first, last;
    float vth, alpha;
} cjob_t;

static void *run_charge(void *arg) {
    const cjob_t *j = (const cjob_t *)arg;
    float v[CHUNK], sb[CHUNK], hb[CHUNK];
    for (int64_t item = j->first; item < j->last; item++) {
        int64_t k0, len = piece(item, j->n, &k0);
        for (int64_t t = 0; t < j->T; t++) {
            int64_t o = t * j->step + k0;
            const float *x = j->x + o;
            float *s = j->out ? j->out + o : sb, *h = j->h ? j->h + o : hb;
            for (int64_t c = 0; c < len; c++) {
                float hc = t ? x[c] + 0.5f * v[c] : x[c];
                float fire = hc >= j->vth ? 1.0f : 0.0f;
                s[c] = fire;
                h[c] = hc;
                v[c] = fmaf(-hc, fire, hc);
            }
            if (j->z)
                for (int64_t c = 0; c < len; c++) j->z[o + c] = (h[c] - j->vth) * j->alpha;
        }
    }
    return 0;
}

int lif_charge(const float *x, float *out, float *h, float *z, int64_t T, int64_t n,
               int64_t step, float vth, float alpha, int threads) {
    int64_t items = (n + CHUNK - 1) / CHUNK;
    threads = thread_count(threads, items);
    cjob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        cjob_t j = {x, out, h, z, T, n, step, items * i / threads, items * (i + 1) / threads,
                    vth, alpha};
        jobs[i] = j;
    }
    run_jobs(run_charge, (char *)jobs, sizeof(cjob_t), threads);
    return 0;
}

/* The LIF's backward pass over all T steps, as models.fast_lif._LIFFunction.backward's torch
   ops do it (addcmul is one fused multiply-add there, so fmaf here). h, sig (the sigmoid of
   (H - v_th)·alpha, computed by torch), g (dL/dS) and gx (dL/dX) share one layout. */
typedef struct {
    const float *h, *sig, *g; float *gx;
    int64_t T, n, step, first, last;
    float vth, alpha;
} bjob_t;

static void *run_backward(void *arg) {
    const bjob_t *j = (const bjob_t *)arg;
    float carry[CHUNK];
    for (int64_t item = j->first; item < j->last; item++) {
        int64_t k0, len = piece(item, j->n, &k0);
        for (int64_t t = j->T - 1; t >= 0; t--) {
            int64_t o = t * j->step + k0;
            const float *h = j->h + o, *sig = j->sig + o, *g = j->g + o;
            float *gx = j->gx + o;
            int last = t + 1 == j->T;
            for (int64_t c = 0; c < len; c++) {
                float sg = fmaf(-sig[c], sig[c], sig[c]) * j->alpha;    /* surrogate dS/dH */
                float gh = g[c] * sg;
                if (!last) {                 /* dV/dH = (1 - S) - H·dS/dH, v_reset = 0 */
                    float reset = fmaf(-h[c], sg, h[c] < j->vth ? 1.0f : 0.0f);
                    gh = fmaf(carry[c], reset, gh);
                }
                gx[c] = gh;
                carry[c] = gh * 0.5f;        /* dH[t]/dV[t-1] = 1 - 1/tau */
            }
        }
    }
    return 0;
}

int lif_backward(const float *h, const float *sig, const float *g, float *gx, int64_t T,
                 int64_t n, int64_t step, float vth, float alpha, int threads) {
    int64_t items = (n + CHUNK - 1) / CHUNK;
    threads = thread_count(threads, items);
    bjob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        bjob_t j = {h, sig, g, gx, T, n, step, items * i / threads, items * (i + 1) / threads,
                    vth, alpha};
        jobs[i] = j;
    }
    run_jobs(run_backward, (char *)jobs, sizeof(bjob_t), threads);
    return 0;
}

/* Concatenation along the channels of channels-last tensors: each of R rows (pixels) of the
   output is the parts' rows one after another. torch.cat writes these interleaved rows about
   half as fast. srcs/bytes: the k (dense) parts' data and row widths in bytes. */
typedef struct {
    const char *const *srcs; const int64_t *bytes; int64_t k;
    char *dst; int64_t dst_row, first, last;
} catjob_t;

static void *run_cat(void *arg) {
    const catjob_t *j = (const catjob_t *)arg;
    for (int64_t r = j->first; r < j->last; r++) {
        char *d = j->dst + r * j->dst_row;
        for (int64_t p = 0; p < j->k; p++) {
            memcpy(d, j->srcs[p] + r * j->bytes[p], (size_t)j->bytes[p]);
            d += j->bytes[p];
        }
    }
    return 0;
}

int cat_rows(const char *const *srcs, const int64_t *bytes, int64_t k, void *dst, int64_t R,
             int64_t dst_row, int threads) {
    threads = thread_count(threads, R / 256 + 1);
    catjob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        catjob_t j = {srcs, bytes, k, (char *)dst, dst_row, R * i / threads,
                      R * (i + 1) / threads};
        jobs[i] = j;
    }
    run_jobs(run_cat, (char *)jobs, sizeof(catjob_t), threads);
    return 0;
}

/* A gated residual on channels-last rows (SpikeRain's attention output): row r (sample n =
   r / P, pixel) of out = res + (z * g[r]) * s[n, :], the product rounded, then one fused
   multiply-add, as torch's mul then addcmul: the same bits in one pass instead of two. z may be
   bfloat16 (read exactly, as torch promotes it). Without g (NULL) and res (NULL): z * s[n, :]
   (the fma with -0 adds nothing, not even to a zero's sign), and then, where sums and maxs are
   given, each row's sum (in 16 interleaved partial sums) and max (NaN wins, as torch's amax). */
typedef struct {
    const float *res; const void *z; const float *g, *s; float *out, *sums, *maxs;
    int64_t P, C, first, last; int z_bf16;
} gjob_t;

static inline __attribute__((always_inline)) void gated_row(
        const gjob_t *j, int64_t r, float *o, const int z_bf16, const int has_res) {
    const float *res = has_res ? j->res + r * j->C : 0, *s = j->s + r / j->P * j->C;
    float g = j->g ? j->g[r] : 1.0f;
    for (int64_t c = 0; c < j->C; c++) {
        float z = load_any(j->z, r * j->C + c, z_bf16);
        o[c] = fmaf(z * g, s[c], has_res ? res[c] : -0.0f);
    }
    if (j->sums) {     /* 16 lanes, so that the loop vectorises, then folded as a tree */
        float sum[16] = {0}, max[16];
        int64_t c = 0;
        for (int k = 0; k < 16; k++) max[k] = -INFINITY;
        for (; c + 16 <= j->C; c += 16)
            for (int k = 0; k < 16; k++) {
                sum[k] += o[c + k];
                max[k] = o[c + k] > max[k] ? o[c + k] : max[k];
            }
        for (; c < j->C; c++) {
            sum[0] += o[c];
            max[0] = o[c] > max[0] ? o[c] : max[0];
        }
        for (int w = 8; w > 0; w /= 2)
            for (int k = 0; k < w; k++) {
                sum[k] += sum[k + w];
                max[k] = max[k + w] > max[k] ? max[k + w] : max[k];
            }
        /* a NaN inside makes the sum NaN (an inf, inf or NaN): only then is the row scanned
           again, for amax's rule that NaN wins, exactly */
        if (!(sum[0] - sum[0] == 0.0f))
            for (c = 0; c < j->C; c++) if (o[c] != o[c]) max[0] = o[c];
        j->sums[r] = sum[0];
        j->maxs[r] = max[0];
    }
}

static void *run_gated(void *arg) {
    const gjob_t *j = (const gjob_t *)arg;
    /* without out (statistics only) each row is made in a scratch row that stays in cache */
    float *scratch = j->out ? 0 : (float *)malloc(sizeof(float) * (size_t)j->C);
    if (!j->out && !scratch) return (void *)1;
    for (int64_t r = j->first; r < j->last; r++) {
        float *o = j->out ? j->out + r * j->C : scratch;
        if (j->z_bf16) {
            if (j->res) gated_row(j, r, o, 1, 1);
            else gated_row(j, r, o, 1, 0);
        } else {
            if (j->res) gated_row(j, r, o, 0, 1);
            else gated_row(j, r, o, 0, 0);
        }
    }
    free(scratch);
    return 0;
}

int gated_residual(const float *res, const void *z, int z_bf16, const float *g, const float *s,
                   float *out, float *sums, float *maxs, int64_t R, int64_t P, int64_t C,
                   int threads) {
    threads = thread_count(threads, R / 256 + 1);
    gjob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        gjob_t j = {res, z, g, s, out, sums, maxs, P, C, R * i / threads,
                    R * (i + 1) / threads, z_bf16};
        jobs[i] = j;
    }
    run_jobs(run_gated, (char *)jobs, sizeof(gjob_t), threads);
    return 0;
}

/* The attention's last step on channels-last rows: out = relu(v) * g[r] + res as one fused
   multiply-add (torch's relu then addcmul, the same bits), or relu(v) * g[r] without res; with
   out16, also out in bfloat16 (as torch's conversion rounds it), for the bf16 convs it feeds,
   and without out only that (a bfloat16 stream: each row is made in a float scratch row).
   v is z (float32, or bfloat16 read exactly), or with s the gated map z * s[n, :] made again
   on the fly (rounded as torch's mul): the gated map need not be stored. res is float32, or
   bfloat16 read exactly. */
typedef struct {
    const void *z; const float *s, *g; const void *res; float *out; uint16_t *out16;
    int64_t P, C, first, last; int z_bf16, res_bf16, failed;
} rjob_t;

/* Constant flags (the caller's branches pick them) keep the element loops branch-free, so
   they vectorise. has_res: 0 none, 1 float32, 2 bfloat16. */
static inline __attribute__((always_inline)) void relu_gated_row(
        const rjob_t *j, int64_t r, float *o, const int z_bf16, const int has_s,
        const int has_res) {
    const float *s = has_s ? j->s + r / j->P * j->C : 0, g = j->g[r];
    const int64_t at = r * j->C;
    for (int64_t c = 0; c < j->C; c++) {
        float v = load_any(j->z, at + c, z_bf16);
        if (has_s) v = v * s[c];
        float a = v < 0.0f ? 0.0f : v;
        o[c] = has_res ? fmaf(a, g, load_any(j->res, at + c, has_res == 2)) : a * g;
    }
    if (j->out16)
        for (int64_t c = 0; c < j->C; c++) j->out16[at + c] = float_to_bf16(o[c]);
}

#define RELU_GATED(key) case key: \
    for (int64_t r = j->first; r < j->last; r++) \
        relu_gated_row(j, r, j->out ? j->out + r * j->C : scratch, (key) >> 3, (key) >> 2 & 1, \
                       (key) & 3); \
    break

static void *run_relu_gated(void *arg) {
    const rjob_t *j = (const rjob_t *)arg;
    float *scratch = j->out ? 0 : (float *)malloc(sizeof(float) * j->C);
    if (!j->out && !scratch) {
        ((rjob_t *)arg)->failed = 1;        /* the caller falls back: nothing half-written */
        return 0;
    }
    int key = (j->z_bf16 ? 8 : 0) | (j->s ? 4 : 0) | (j->res ? (j->res_bf16 ? 2 : 1) : 0);
    switch (key) {
        RELU_GATED(0); RELU_GATED(1); RELU_GATED(2); RELU_GATED(4); RELU_GATED(5);
        RELU_GATED(6); RELU_GATED(8); RELU_GATED(9); RELU_GATED(10); RELU_GATED(12);
        RELU_GATED(13); default: RELU_GATED(14);
    }
    free(scratch);
    return 0;
}

int relu_gated_residual(const void *z, int z_bf16, const float *s, const float *g,
                        const void *res, int res_bf16, float *out, uint16_t *out16, int64_t R,
                        int64_t P, int64_t C, int threads) {
    threads = thread_count(threads, R / 256 + 1);
    rjob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        rjob_t j = {z, s, g, res, out, out16, P, C, R * i / threads, R * (i + 1) / threads,
                    z_bf16, res_bf16, 0};
        jobs[i] = j;
    }
    run_jobs(run_relu_gated, (char *)jobs, sizeof(rjob_t), threads);
    for (int i = 0; i < threads; i++)
        if (jobs[i].failed) return 1;
    return 0;
}

/* NI-LIF over T steps of r x r patch pixels. x [T*B, C, H, W] and out [T*B, C*r*r, H/r, W/r]
   with any strides (xs, os: n, c, y, x), each float32 or bfloat16 (x read exactly, the spikes
   rounded as torch's conversion: k/L is exact for L = 4); inside (optional)
   [T, r*r, B, C, H/r, W/r] bytes.
   Same ops in the same order as models.spiking.NILIF on each element. */
typedef struct {
    const void *x; void *out; uint8_t *inside;
    int64_t T, B, C, h, w, r, first, last;
    const int64_t *xs, *os;
    float levels, decay; int exact_scale, x_bf16, out_bf16;
} nijob_t;

/* One step of n elements of x at stride xi, their membranes u, their previous spikes prev and
   the spikes sp (contiguous), and inside at stride ii. Every flag is a constant (the caller's
   switch picks it), so the loop is branch-free and vectorises. */
static inline __attribute__((always_inline)) void nilif_step(
        const nijob_t *j, const void *x, float *u, const float *prev, float *sp, uint8_t *in,
        int64_t n, int64_t xi, int64_t ii, const int x_bf16, const int first,
        const int exact, const int has_in) {
    float levels = j->levels, decay = j->decay;
    for (int64_t q = 0; q < n; q++) {
        float xk = load_any(x, q * xi, x_bf16);
        float v;
        if (first) v = xk;
        else if (exact) v = xk + decay * (u[q] - prev[q]);
        else v = (u[q] - prev[q]) * decay + xk;
        u[q] = v;
        float cl = v < 0.0f ? 0.0f : (v > levels ? levels : v);
        if (has_in) in[q * ii] = cl == v;
        sp[q] = rintf(cl) / levels;
    }
}

#define NILIF_STEP(key) case key: nilif_step(j, xp, up, pp, sp, ip, n, xi, ii, (key) >> 3 & 1, \
                                             (key) >> 2 & 1, (key) >> 1 & 1, (key) & 1); break

/* One item is a row (b, yy) of the h x w grid, every channel. For each output pixel (or, with
   a channel-major x, each channel) all r*r patch steps of one time step run back to back, their
   spikes kept in a small scratch array and then written to the output (where, channels-last,
   they interleave: channel c*r*r + k), so the arithmetic runs on contiguous arrays. The
   membranes and the spikes of the row's w*C elements live in scratch arrays over all T steps. */
static void *run_nilif(void *arg) {
    const nijob_t *j = (const nijob_t *)arg;
    int64_t rr = j->r * j->r, C = j->C, w = j->w;
    size_t xsz = j->x_bf16 ? 2 : 4, osz = j->out_bf16 ? 2 : 4;
    int c_inner = j->xs[1] <= j->xs[3];
    int64_t n_outer = c_inner ? w : C, n = c_inner ? C : w;
    float *u = (float *)malloc(sizeof(float) * (size_t)(w * C));
    float *spikes = (float *)malloc(sizeof(float) * (size_t)(w * C * rr));
    uint16_t *s16 = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(n * rr));
    if (!u || !spikes || !s16) { free(u); free(spikes); free(s16); return (void *)1; }
    /* strides of the inner loop in x, out and inside, and of the outer one */
    int64_t xi = c_inner ? j->xs[1] : j->r * j->xs[3];
    int64_t xo = c_inner ? j->r * j->xs[3] : j->xs[1];
    int64_t oi = c_inner ? rr * j->os[1] : j->os[3];
    int64_t oo = c_inner ? j->os[3] : rr * j->os[1];
    int64_t ii = c_inner ? j->h * w : 1, io = c_inner ? 1 : j->h * w;
    for (int64_t item = j->first; item < j->last; item++) {
        int64_t b = item / j->h, yy = item % j->h;
        for (int64_t t = 0; t < j->T; t++) {
            int64_t xrow = (t * j->B + b) * j->xs[0] + yy * j->r * j->xs[2];
            int64_t orow = (t * j->B + b) * j->os[0] + yy * j->os[2];
            for (int64_t o = 0; o < n_outer; o++) {
                float *up = u + o * n, *own = spikes + o * rr * n;
                for (int64_t k = 0; k < rr; k++) {
                    int64_t i = k / j->r, jj = k % j->r;
                    const char *xp = (const char *)j->x
                        + (xrow + i * j->xs[2] + jj * j->xs[3] + o * xo) * xsz;
                    float *sp = own + k * n;
                    const float *pp = own + (k ? k - 1 : rr - 1) * n;   /* the step before */
                    uint8_t *ip = j->inside ? j->inside + (((t * rr + k) * j->B + b) * C * j->h
                                                           + yy) * w + o * io : 0;
                    int key = (j->x_bf16 ? 8 : 0) | (t == 0 && k == 0 ? 4 : 0)
                              | (j->exact_scale ? 2 : 0) | (ip ? 1 : 0);
                    switch (key) {
                        NILIF_STEP(0); NILIF_STEP(1); NILIF_STEP(2); NILIF_STEP(3);
                        NILIF_STEP(4); NILIF_STEP(5); NILIF_STEP(6); NILIF_STEP(7);
                        NILIF_STEP(8); NILIF_STEP(9); NILIF_STEP(10); NILIF_STEP(11);
                        NILIF_STEP(12); NILIF_STEP(13); NILIF_STEP(14); default: NILIF_STEP(15);
                    }
                }
                /* spikes of this pixel (channel): out[c*rr + k] (or [k][q]) = own[k][q] */
                char *op = (char *)j->out + (orow + o * oo) * osz;
                if (oi == rr && j->os[1] == 1 && rr == 4) {
                    /* channels-last, 2 x 2 patches: this pixel's outputs are one contiguous
                       run, written in order (bfloat16: converted first on contiguous arrays,
                       so that it vectorises); strided writes ran 2.4x slower */
                    if (j->out_bf16) {
                        uint16_t *o16 = (uint16_t *)op;
                        for (int64_t q = 0; q < rr * n; q++) s16[q] = float_to_bf16(own[q]);
                        for (int64_t q = 0; q < n; q++)
                            for (int64_t k = 0; k < 4; k++) o16[q * 4 + k] = s16[k * n + q];
                    } else {
                        float *o32 = (float *)op;
                        for (int64_t q = 0; q < n; q++)
                            for (int64_t k = 0; k < 4; k++) o32[q * 4 + k] = own[k * n + q];
                    }
                    continue;
                }
                for (int64_t k = 0; k < rr; k++) {
                    const float *sp = own + k * n;
                    int64_t ok = k * j->os[1];
                    if (j->out_bf16)
                        for (int64_t q = 0; q < n; q++)
                            ((uint16_t *)op)[ok + q * oi] = float_to_bf16(sp[q]);
                    else
                        for (int64_t q = 0; q < n; q++) ((float *)op)[ok + q * oi] = sp[q];
                }
            }
        }
    }
    free(u);
    free(spikes);
    free(s16);
    return 0;
}

int nilif_forward(const void *x, int x_bf16, void *out, int out_bf16, uint8_t *inside,
                  int64_t T, int64_t B, int64_t C, int64_t h, int64_t w, int64_t r,
                  const int64_t *xs, const int64_t *os, float levels, float decay,
                  int exact_scale, int threads) {
    int64_t items = B * h;
    threads = thread_count(threads, items);
    nijob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        nijob_t j = {x, out, inside, T, B, C, h, w, r, items * i / threads,
                     items * (i + 1) / threads, xs, os, levels, decay, exact_scale, x_bf16,
                     out_bf16};
        jobs[i] = j;
    }
    run_jobs(run_nilif, (char *)jobs, sizeof(nijob_t), threads);
    return 0;
}

/* NI-LIF's straight-through backward over the T*r*r patch steps, newest first, per element of
   the h x w grid: g = go * inside / levels (+ decay * the next step's g), written to gx at the
   step's patch pixel; the same ops in the same order as the torch ops of
   models.fast_lif._NILIFFunction.backward. go [T*B, C*r*r, h, w] and gx [T*B, C, H, W] float32
   with any strides (gs, xs: n, c, y, x); inside bool [T, r*r, B, C, h, w], contiguous. One item
   is a row (b, yy) of the grid; its carries live in a scratch row of w*C floats. */
typedef struct {
    const float *go; const uint8_t *inside; float *gx;
    int64_t T, B, C, h, w, r, first, last;
    const int64_t *gs, *xs;
    float levels, decay; int failed;
} nbjob_t;

static void *run_nilif_back(void *arg) {
    nbjob_t *j = (nbjob_t *)arg;
    const int64_t rr = j->r * j->r, C = j->C, w = j->w, h = j->h;
    float *carry = (float *)malloc(sizeof(float) * (size_t)(w * C));
    if (!carry) { j->failed = 1; return 0; }
    /* the inner loop runs along the smaller stride: the channels, where channels-last */
    const int c_inner = j->gs[1] <= j->gs[3];
    const int64_t n_outer = c_inner ? w : C, n_inner = c_inner ? C : w;
    const int64_t go_o = c_inner ? j->gs[3] : rr * j->gs[1];
    const int64_t go_i = c_inner ? rr * j->gs[1] : j->gs[3];
    const int64_t gx_o = c_inner ? j->r * j->xs[3] : j->xs[1];
    const int64_t gx_i = c_inner ? j->xs[1] : j->r * j->xs[3];
    const int64_t in_o = c_inner ? 1 : h * w, in_i = c_inner ? h * w : 1;
    const int64_t cr_o = c_inner ? 1 : w, cr_i = c_inner ? w : 1;
    for (int64_t item = j->first; item < j->last; item++) {
        int64_t b = item / h, yy = item % h;
        for (int64_t s = j->T * rr - 1; s >= 0; s--) {
            int64_t t = s / rr, k = s % rr, i = k / j->r, jj = k % j->r, n = t * j->B + b;
            const uint8_t *in = j->inside + (((t * rr + k) * j->B + b) * C * h + yy) * w;
            const float *go = j->go + n * j->gs[0] + k * j->gs[1] + yy * j->gs[2];
            float *gx = j->gx + n * j->xs[0] + (yy * j->r + i) * j->xs[2] + jj * j->xs[3];
            for (int64_t o = 0; o < n_outer; o++)
                for (int64_t q = 0; q < n_inner; q++) {
                    float g = go[o * go_o + q * go_i] * (float)in[o * in_o + q * in_i]
                              / j->levels;
                    float *cr = carry + o * cr_o + q * cr_i;
                    if (s != j->T * rr - 1) g = fmaf(*cr, j->decay, g);
                    *cr = g;
                    gx[o * gx_o + q * gx_i] = g;
                }
        }
    }
    free(carry);
    return 0;
}

int nilif_backward(const float *go, const uint8_t *inside, float *gx, int64_t T, int64_t B,
                   int64_t C, int64_t h, int64_t w, int64_t r, const int64_t *gs,
                   const int64_t *xs, float levels, float decay, int threads) {
    int64_t items = B * h;
    threads = thread_count(threads, items);
    nbjob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        nbjob_t j = {go, inside, gx, T, B, C, h, w, r, items * i / threads,
                     items * (i + 1) / threads, gs, xs, levels, decay, 0};
        jobs[i] = j;
    }
    run_jobs(run_nilif_back, (char *)jobs, sizeof(nbjob_t), threads);
    int failed = 0;
    for (int i = 0; i < threads; i++) failed |= jobs[i].failed;
    return failed;
}

/* VLIF-Net's decompose-enhance at inference: out = x*b + high*(x + amb) (amb = a - b), each
   step rounded as torch's mul, add and addcmul (a fused multiply-add) round it, over n
   elements laid out alike in x, high and out, each float32 or bfloat16 (read exactly; a
   bfloat16 out is rounded as torch's conversion). One pass where torch makes three. */
typedef struct {
    const void *x, *high; void *out;
    int64_t first, last; float b, amb; int x_bf16, high_bf16, out_bf16;
} djob_t;

static inline __attribute__((always_inline)) void decompose_span(
        const djob_t *j, const int x_bf16, const int high_bf16, const int out_bf16) {
    for (int64_t i = j->first; i < j->last; i++) {
        float v = decompose(load_any(j->x, i, x_bf16), load_any(j->high, i, high_bf16), j->b,
                            j->amb);
        if (out_bf16) ((uint16_t *)j->out)[i] = float_to_bf16(v);
        else ((float *)j->out)[i] = v;
    }
}

#define DECOMPOSE(xb, hb, ob) decompose_span(j, xb, hb, ob); break

static void *run_decompose(void *arg) {
    const djob_t *j = (const djob_t *)arg;
    switch ((j->x_bf16 ? 4 : 0) | (j->high_bf16 ? 2 : 0) | (j->out_bf16 ? 1 : 0)) {
        case 0: DECOMPOSE(0, 0, 0);
        case 1: DECOMPOSE(0, 0, 1);
        case 2: DECOMPOSE(0, 1, 0);
        case 3: DECOMPOSE(0, 1, 1);
        case 4: DECOMPOSE(1, 0, 0);
        case 5: DECOMPOSE(1, 0, 1);
        case 6: DECOMPOSE(1, 1, 0);
        default: DECOMPOSE(1, 1, 1);
    }
    return 0;
}

int decompose_enhance(const void *x, int x_bf16, const void *high, int high_bf16, void *out,
                      int out_bf16, int64_t n, float b, float amb, int threads) {
    threads = thread_count(threads, n / 65536 + 1);
    djob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        djob_t j = {x, high, out, n * i / threads, n * (i + 1) / threads, b, amb, x_bf16,
                    high_bf16, out_bf16};
        jobs[i] = j;
    }
    run_jobs(run_decompose, (char *)jobs, sizeof(djob_t), threads);
    return 0;
}

/* The backward pass of decompose-enhance in training, out = addcmul(x * b, high, x + amb): for
   the upstream gradient g, gx = g*b + g*high and ghigh = g*(x + amb), each product rounded as
   autograd's separate ops round it (so the same bits), and the sums of g*high and g*x (the
   gradients of amb and of b's product; 16 float lanes per block of 1024, then double). */
typedef struct {
    const float *g, *x, *h; float *gx, *gh; int64_t first, last; float b, amb;
    double s_gh, s_gx;
} dbjob_t;

static void *run_decompose_back(void *arg) {
    dbjob_t *j = (dbjob_t *)arg;
    double s_gh = 0.0, s_gx = 0.0;
    for (int64_t i0 = j->first; i0 < j->last; i0 += 1024) {
        int64_t i1 = i0 + 1024 < j->last ? i0 + 1024 : j->last, i = i0;
        float a_gh[16] = {0}, a_gx[16] = {0};
        for (; i + 16 <= i1; i += 16)
            for (int k = 0; k < 16; k++) {
                float g = j->g[i + k], x = j->x[i + k], h = j->h[i + k], gu = g * h;
                j->gx[i + k] = g * j->b + gu;
                j->gh[i + k] = g * (x + j->amb);
                a_gh[k] += gu;
                a_gx[k] += g * x;
            }
        for (; i < i1; i++) {
            float g = j->g[i], x = j->x[i], gu = g * j->h[i];
            j->gx[i] = g * j->b + gu;
            j->gh[i] = g * (x + j->amb);
            a_gh[0] += gu;
            a_gx[0] += g * x;
        }
        for (int k = 0; k < 16; k++) {
            s_gh += a_gh[k];
            s_gx += a_gx[k];
        }
    }
    j->s_gh = s_gh;
    j->s_gx = s_gx;
    return 0;
}

int decompose_backward(const float *g, const float *x, const float *h, float *gx, float *gh,
                       int64_t n, float b, float amb, double *sums, int threads) {
    threads = thread_count(threads, n / 65536 + 1);
    dbjob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        dbjob_t j = {g, x, h, gx, gh, n * i / threads, n * (i + 1) / threads, b, amb, 0.0, 0.0};
        jobs[i] = j;
    }
    run_jobs(run_decompose_back, (char *)jobs, sizeof(dbjob_t), threads);
    sums[0] = sums[1] = 0.0;
    for (int i = 0; i < threads; i++) {
        sums[0] += jobs[i].s_gh;
        sums[1] += jobs[i].s_gx;
    }
    return 0;
}

/* Bilinear x2 up-sampling (align_corners=False, as torch's) of a channels-last map low
   [N, h, w, C], and what reads it next, into out [N, 2h, 2w, C]: op 0, the up-sampled map u
   itself; op 1, u + other; op 2, VLIF-Net's decompose-enhance of x = other with u as its
   high part, x*b + u*(x + amb) (as decompose_enhance rounds it); op 3, the spikes of a LIF
   over the T steps of u (N = T*B, as lif_inference makes them). At this scale each output
   blends two neighbours per axis with weights 3/4 and 1/4 (edges clamped): an output row is
   made in a float scratch row (input rows, then columns), then one plain pass over it applies
   the op, so the up-sampled map is never stored. Every map float32 or bfloat16 (read
   exactly; a bfloat16 out rounded as torch's conversion). Rounds otherwise than torch's
   up-sampling (its order of the products). */
typedef struct {
    const void *low, *other; void *out;
    int64_t T, B, h, w, C, first, last; float b, amb, vth;
    int low_bf16, op, other_bf16, out_bf16, failed;
} ujob_t;

static inline void store_any(void *p, int64_t i, float v, int bf16) {
    if (bf16) ((uint16_t *)p)[i] = float_to_bf16(v);
    else ((float *)p)[i] = v;
}

/* Output row oh of sample n into line (2*w*C floats), through rows (w*C floats). */
static void up_row(const ujob_t *j, int64_t n, int64_t oh, float *rows, float *line) {
    const int64_t h = j->h, w = j->w, C = j->C, wc = w * C, i = oh / 2;
    const void *low = j->low;
    const int64_t base = n * h * wc + i * wc;
    if (oh == 0) {                         /* torch's output row 0 takes input row 0 alone */
        for (int64_t k = 0; k < wc; k++) rows[k] = load_any(low, base + k, j->low_bf16);
    } else {
        const int64_t other = oh % 2 ? (i < h - 1 ? wc : 0) : -wc;  /* next row, or previous */
        for (int64_t k = 0; k < wc; k++) {
            float c = load_any(low, base + k, j->low_bf16);
            float o = load_any(low, base + other + k, j->low_bf16);
            rows[k] = oh % 2 ? 0.75f * c + 0.25f * o : 0.25f * o + 0.75f * c;
        }
    }
    for (int64_t q = 0; q < w; q++) {
        const float *cur = rows + q * C, *left = rows + (q > 0 ? q - 1 : 0) * C,
                    *right = rows + (q < w - 1 ? q + 1 : w - 1) * C;
        float *l0 = line + 2 * q * C, *l1 = l0 + C;
        if (q > 0)
            for (int64_t c = 0; c < C; c++) l0[c] = 0.25f * left[c] + 0.75f * cur[c];
        else
            for (int64_t c = 0; c < C; c++) l0[c] = cur[c];
        for (int64_t c = 0; c < C; c++) l1[c] = 0.75f * cur[c] + 0.25f * right[c];
    }
}

static inline __attribute__((always_inline)) void up_epilogue(
        const ujob_t *j, const float *line, int64_t o, int64_t n, const int op,
        const int other_bf16, const int out_bf16) {
    for (int64_t k = 0; k < n; k++) {
        float v = line[k];
        if (op == 1) v += load_any(j->other, o + k, other_bf16);
        if (op == 2) {
            v = decompose(load_any(j->other, o + k, other_bf16), v, j->b, j->amb);
        }
        store_any(j->out, o + k, v, out_bf16);
    }
}

/* One LIF step over a row (lif_fire on each element), as infer_row makes it. */
static inline __attribute__((always_inline)) void up_lif_step(
        const ujob_t *j, const float *line, float *v, int64_t o, int64_t n, int64_t t,
        const int out_bf16) {
    for (int64_t k = 0; k < n; k++)
        store_spike(j->out, o + k, lif_fire(line[k], v + k, t, j->vth), out_bf16);
}

#define UP_EPILOGUE(key) case key: up_epilogue(j, line, o, len, (key) >> 2, (key) >> 1 & 1, \
                                               (key) & 1); break

/* Items are (sample, output row) pairs; for the LIF (op 3) a sample of the first step, whose
   T steps are B samples apart, run one after another on a membrane row. */
static void *run_upsample(void *arg) {
    const ujob_t *j = (const ujob_t *)arg;
    const int64_t h2 = 2 * j->h, wc = j->w * j->C, len = 2 * wc;
    float *rows = (float *)malloc(sizeof(float) * 5 * wc);
    if (!rows) {
        ((ujob_t *)arg)->failed = 1;        /* the caller falls back: nothing half-written */
        return 0;
    }
    float *line = rows + wc, *v = rows + 3 * wc;
    const int key = j->op << 2 | (j->other_bf16 ? 2 : 0) | (j->out_bf16 ? 1 : 0);
    for (int64_t item = j->first; item < j->last; item++) {
        const int64_t n = item / h2, oh = item % h2;
        if (j->op == 3) {
            for (int64_t t = 0; t < j->T; t++) {
                const int64_t sample = t * j->B + n;
                up_row(j, sample, oh, rows, line);
                if (j->out_bf16) up_lif_step(j, line, v, (sample * h2 + oh) * len, len, t, 1);
                else up_lif_step(j, line, v, (sample * h2 + oh) * len, len, t, 0);
            }
            continue;
        }
        const int64_t o = (n * h2 + oh) * len;
        up_row(j, n, oh, rows, line);
        switch (key) {
            UP_EPILOGUE(0); UP_EPILOGUE(1); UP_EPILOGUE(2); UP_EPILOGUE(3);
            UP_EPILOGUE(4); UP_EPILOGUE(5); UP_EPILOGUE(6); UP_EPILOGUE(7);
            UP_EPILOGUE(8); UP_EPILOGUE(9); UP_EPILOGUE(10); default: UP_EPILOGUE(11);
        }
    }
    free(rows);
    return 0;
}

int upsample2x(const void *low, int low_bf16, int op, const void *other, int other_bf16,
               void *out, int out_bf16, int64_t T, int64_t N, int64_t h, int64_t w, int64_t C,
               float b, float amb, float vth, int threads) {
    const int64_t B = N / T, items = (op == 3 ? B : N) * 2 * h;
    threads = thread_count(threads, items);
    ujob_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        ujob_t j = {low, other, out, T, B, h, w, C, items * i / threads,
                    items * (i + 1) / threads, b, amb, vth, low_bf16, op, other_bf16, out_bf16,
                    0};
        jobs[i] = j;
    }
    run_jobs(run_upsample, (char *)jobs, sizeof(ujob_t), threads);
    for (int i = 0; i < threads; i++)
        if (jobs[i].failed) return 1;
    return 0;
}

/* Per-channel sums and maxima over the pixels of each sample of a channels-last map z
   [N, P pixels, C] (float32 or bfloat16, read exactly), as an attention's gates start from.
   Each job walks a range of the N*P rows; its sums go through float blocks of STAT_BLOCK rows
   into double totals, its maxima are exact (NaN wins, as torch's amax). */
#define STAT_BLOCK 256
typedef struct {
    const void *z; double *sums; float *maxs;
    int64_t N, P, C, first, last; int z_bf16;
} sjob_t;

static inline __attribute__((always_inline)) void stats_rows(
        const sjob_t *j, int64_t r0, int64_t r1, float *sum, float *max, const int z_bf16) {
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c = 0; c < j->C; c++) {
            float v = load_any(j->z, r * j->C + c, z_bf16);
            sum[c] += v;
            max[c] = (v > max[c] || v != v) ? v : max[c];
        }
}

static void *run_stats(void *arg) {
    const sjob_t *j = (const sjob_t *)arg;
    float *sum = (float *)malloc(sizeof(float) * (size_t)j->C);
    if (!sum) return (void *)1;
    for (int64_t r = j->first; r < j->last;) {
        int64_t n = r / j->P, end = (n + 1) * j->P;          /* rows of one sample at a time */
        if (end > j->last) end = j->last;
        if (end > r + STAT_BLOCK) end = r + STAT_BLOCK;
        for (int64_t c = 0; c < j->C; c++) sum[c] = 0.0f;
        float *max = j->maxs + n * j->C;
        if (j->z_bf16) stats_rows(j, r, end, sum, max, 1);
        else stats_rows(j, r, end, sum, max, 0);
        for (int64_t c = 0; c < j->C; c++) j->sums[n * j->C + c] += sum[c];
        r = end;
    }
    free(sum);
    return 0;
}

int spatial_stats(const void *z, int z_bf16, float *sums, float *maxs, int64_t N, int64_t P,
                  int64_t C, int threads) {
    int64_t R = N * P;
    threads = thread_count(threads, R / 1024 + 1);
    sjob_t jobs[MAX_THREADS];
    double *part_sums = (double *)calloc((size_t)(threads * N * C), sizeof(double));
    float *part_maxs = (float *)malloc(sizeof(float) * (size_t)(threads * N * C));
    if (!part_sums || !part_maxs) { free(part_sums); free(part_maxs); return 1; }
    for (int64_t i = 0; i < threads * N * C; i++) part_maxs[i] = -INFINITY;
    for (int i = 0; i < threads; i++) {
        sjob_t j = {z, part_sums + i * N * C, part_maxs + i * N * C, N, P, C, R * i / threads,
                    R * (i + 1) / threads, z_bf16};
        jobs[i] = j;
    }
    run_jobs(run_stats, (char *)jobs, sizeof(sjob_t), threads);
    for (int64_t k = 0; k < N * C; k++) {
        double total = 0.0;
        float peak = -INFINITY;
        for (int i = 0; i < threads; i++) {
            float m = part_maxs[i * N * C + k];
            total += part_sums[i * N * C + k];
            if (peak == peak && (m != m || m > peak)) peak = m;     /* NaN wins */
        }
        sums[k] = (float)total;
        maxs[k] = peak;
    }
    free(part_sums);
    free(part_maxs);
    return 0;
}

/* The backward pass of the attention's gated part in training, over channels-last rows of
   float32 maps (row r = pixel r % P of sample n = r / P, C channels). With v = z * s[n, :]
   (the gated map, made again as torch's mul rounds it), the forward was out = relu(v) * g[r]
   (+ a residual), with the pixel gate g made from each row's channel sum and max (peak) of v.
   Op 0: out[r] = sum_c go * relu(v), the gradient of the pixel gate.
   Op 1: with gs, gm the gradients of the row sums and maxima,
   d = (v > 0 ? go * g[r] : 0) + gs[r] + (v == peak[r] ? gm[r] : 0) is the gradient of v;
   gz = d * s[n, c] is z's, and out[n, c], the sum of d * z over the sample's pixels, is s's
   (float per STAT_BLOCK rows, then double). */
typedef struct {
    const float *go, *z, *s, *g, *peak, *gs, *gm; float *gz, *gg; double *gsum;
    int64_t P, C, first, last; int op, failed;
} ajob_t;

static void gate_grad_row(const ajob_t *j, int64_t r) {
    const int64_t C = j->C, at = r * C;
    const float *s = j->s + r / j->P * C, *go = j->go + at, *z = j->z + at;
    float sum[16] = {0};
    int64_t c = 0;
    for (; c + 16 <= C; c += 16)
        for (int k = 0; k < 16; k++) {
            float v = z[c + k] * s[c + k];
            sum[k] += go[c + k] * (v > 0.0f ? v : 0.0f);
        }
    for (; c < C; c++) {
        float v = z[c] * s[c];
        sum[0] += go[c] * (v > 0.0f ? v : 0.0f);
    }
    for (int w = 8; w > 0; w /= 2)
        for (int k = 0; k < w; k++) sum[k] += sum[k + w];
    j->gg[r] = sum[0];
}

static void map_grad_row(const ajob_t *j, int64_t r, float *acc) {
    const int64_t C = j->C, at = r * C;
    const float *s = j->s + r / j->P * C, *go = j->go + at, *z = j->z + at;
    const float g = j->g[r], peak = j->peak[r], gs = j->gs[r], gm = j->gm[r];
    float *gz = j->gz + at;
    for (int64_t c = 0; c < C; c++) {
        float v = z[c] * s[c];
        float d = (v > 0.0f ? go[c] * g : 0.0f) + gs + (v == peak ? gm : 0.0f);
        gz[c] = d * s[c];
        acc[c] += d * z[c];
    }
}

static void *run_attention_back(void *arg) {
    ajob_t *j = (ajob_t *)arg;
    if (!j->op) {
        for (int64_t r = j->first; r < j->last; r++) gate_grad_row(j, r);
        return 0;
    }
    float *acc = (float *)calloc((size_t)j->C, sizeof(float));
    if (!acc) { j->failed = 1; return 0; }
    for (int64_t r = j->first; r < j->last;) {
        int64_t n = r / j->P, end = (n + 1) * j->P;          /* rows of one sample at a time */
        if (end > j->last) end = j->last;
        if (end > r + STAT_BLOCK) end = r + STAT_BLOCK;
        for (; r < end; r++) map_grad_row(j, r, acc);
        for (int64_t c = 0; c < j->C; c++) {
            j->gsum[n * j->C + c] += acc[c];
            acc[c] = 0.0f;
        }
    }
    free(acc);
    return 0;
}

int attention_backward(int op, const float *go, const float *z, const float *s, const float *g,
                       const float *peak, const float *gs, const float *gm, float *gz,
                       float *out, int64_t N, int64_t P, int64_t C, int threads) {
    int64_t R = N * P;
    threads = thread_count(threads, R / 256 + 1);
    ajob_t jobs[MAX_THREADS];
    double *part = op ? (double *)calloc((size_t)(threads * N * C), sizeof(double)) : 0;
    if (op && !part) return 1;
    for (int i = 0; i < threads; i++) {
        ajob_t j = {go, z, s, g, peak, gs, gm, gz, op ? 0 : out, op ? part + i * N * C : 0,
                    P, C, R * i / threads, R * (i + 1) / threads, op, 0};
        jobs[i] = j;
    }
    run_jobs(run_attention_back, (char *)jobs, sizeof(ajob_t), threads);
    int failed = 0;
    for (int i = 0; i < threads; i++) failed |= jobs[i].failed;
    if (op && !failed)
        for (int64_t k = 0; k < N * C; k++) {
            double total = 0.0;
            for (int i = 0; i < threads; i++) total += part[i * N * C + k];
            out[k] = (float)total;
        }
    free(part);
    return failed;
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


def library_path(compiler: str, flags: tuple[str, ...] = FLAGS + (OPENMP,)) -> Path:
    key = hashlib.sha256('\0'.join([SOURCE, compiler, *flags, _cpu_id()]).encode()).hexdigest()
    return cache_dir() / f'lif-{key[:16]}.so'


def build(quiet: bool = False) -> Path | None:
    """Compile the kernel into the cache if it is not there (atomically); its path, or ``None``
    (with a one-line note unless ``quiet``) when no compiler can build it."""
    compiler = shutil.which(os.environ.get('CC', 'cc')) or shutil.which('gcc')
    if compiler is None:
        if not quiet:
            _note('no C compiler (cc) found')
        return None
    error = None
    for flags in (FLAGS + (OPENMP,), FLAGS):      # without OpenMP: the kernels' own threads
        target = library_path(compiler, flags)
        failed = target.with_suffix('.failed')    # not tried again in the next process
        if target.is_file():
            return target
        if failed.is_file():
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src = Path(tmp) / 'lif.c'
                src.write_text(SOURCE)
                built = Path(tmp) / target.name
                result = subprocess.run([compiler, *flags, str(src), '-o', str(built), '-lm'],
                                        capture_output=True, text=True, timeout=120)
                if result.returncode != 0:
                    first = (result.stderr.strip().splitlines() or ['failed'])[0]
                    raise OSError(f'{compiler}: {first}')
                os.replace(built, target)
            return target
        except (OSError, subprocess.SubprocessError) as err:
            error = err
            if flags != FLAGS:
                with contextlib.suppress(OSError):
                    failed.write_text(f'{err}\n')
    if not quiet:
        _note(f'build failed: {error}')
    return None


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
    fn = lib.lif_inference
    fn.argtypes = ([ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
                   + [ctypes.c_int64] * 7 + [ctypes.c_float, ctypes.c_int])
    fn.restype = ctypes.c_int
    charge = lib.lif_charge
    charge.argtypes = ([ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3
                       + [ctypes.c_float, ctypes.c_float, ctypes.c_int])
    charge.restype = ctypes.c_int
    back = lib.lif_backward
    back.argtypes = ([ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3
                     + [ctypes.c_float, ctypes.c_float, ctypes.c_int])
    back.restype = ctypes.c_int
    _state['backward'], _state['charge'] = back, charge
    cat = lib.cat_rows
    cat.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int]
    cat.restype = ctypes.c_int
    _state['cat'] = cat
    gated = lib.gated_residual
    gated.argtypes = ([ctypes.c_void_p] * 2 + [ctypes.c_int] + [ctypes.c_void_p] * 5
                      + [ctypes.c_int64] * 3 + [ctypes.c_int])
    gated.restype = ctypes.c_int
    relu_gated = lib.relu_gated_residual
    relu_gated.argtypes = ([ctypes.c_void_p, ctypes.c_int] + [ctypes.c_void_p] * 3
                           + [ctypes.c_int] + [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 3
                           + [ctypes.c_int])
    relu_gated.restype = ctypes.c_int
    _state['gated'], _state['relu_gated'] = gated, relu_gated
    ni = lib.nilif_forward
    ni.argtypes = ([ctypes.c_void_p, ctypes.c_int] * 2 + [ctypes.c_void_p]
                   + [ctypes.c_int64] * 6 + [ctypes.c_void_p] * 2
                   + [ctypes.c_float, ctypes.c_float, ctypes.c_int, ctypes.c_int])
    ni.restype = ctypes.c_int
    dec = lib.decompose_enhance
    dec.argtypes = ([ctypes.c_void_p, ctypes.c_int] * 3
                    + [ctypes.c_int64, ctypes.c_float, ctypes.c_float, ctypes.c_int])
    dec.restype = ctypes.c_int
    dec_back = lib.decompose_backward
    dec_back.argtypes = ([ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_float, ctypes.c_float,
                                                  ctypes.c_void_p, ctypes.c_int])
    dec_back.restype = ctypes.c_int
    _state['decompose_backward'] = dec_back
    up = lib.upsample2x
    up.argtypes = ([ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
                   + [ctypes.c_void_p, ctypes.c_int] * 2 + [ctypes.c_int64] * 5
                   + [ctypes.c_float] * 3 + [ctypes.c_int])
    up.restype = ctypes.c_int
    _state['upsample'] = up
    stats = lib.spatial_stats
    stats.argtypes = ([ctypes.c_void_p, ctypes.c_int] + [ctypes.c_void_p] * 2
                      + [ctypes.c_int64] * 3 + [ctypes.c_int])
    stats.restype = ctypes.c_int
    _state['fn'], _state['nilif'], _state['decompose'] = fn, ni, dec
    _state['stats'] = stats
    att_back = lib.attention_backward
    att_back.argtypes = ([ctypes.c_int] + [ctypes.c_void_p] * 9 + [ctypes.c_int64] * 3
                         + [ctypes.c_int])
    att_back.restype = ctypes.c_int
    _state['attention_backward'] = att_back
    ni_back = lib.nilif_backward
    ni_back.argtypes = ([ctypes.c_void_p] * 3 + [ctypes.c_int64] * 6 + [ctypes.c_void_p] * 2
                        + [ctypes.c_float, ctypes.c_float, ctypes.c_int])
    ni_back.restype = ctypes.c_int
    _state['nilif_backward'] = ni_back
    return fn


def _rows(*tensors: torch.Tensor) -> tuple[int, int, list[int]] | None:
    """Same-shape tensors (one time step) as R rows of K unit-stride elements, at a fixed row
    stride in each (channels-last: a row per pixel, K channels; contiguous: one row), with the
    same element order in all: ``(R, K, row strides)``, or ``None``."""
    a = tensors[0]
    dims = sorted((d for d in range(a.dim()) if a.shape[d] > 1), key=lambda d: -a.stride(d))
    inner = 1
    while dims and all(t.stride(dims[-1]) == inner for t in tensors):
        inner *= a.shape[dims.pop()]
    if not dims:
        return 1, inner, [inner] * len(tensors)
    rows, row = 1, [t.stride(dims[-1]) for t in tensors]
    while dims and all(t.stride(dims[-1]) == r * rows for t, r in zip(tensors, row)):
        rows *= a.shape[dims.pop()]
    return None if dims else (rows, inner, row)


def _time_layout(T: int, *tensors: torch.Tensor) -> tuple[int, int, list[int], list[int]] | None:
    """``[T*B, ...]`` tensors of one shape as T steps of R rows of K elements each, the rows in
    the same element order in all of them: ``(R, K, step strides, row strides)``, or ``None``."""
    first = tensors[0]
    if (first.dim() < 2 or first.shape[0] % T or first.numel() == 0
            or any(t.shape != first.shape or t.device.type != 'cpu' for t in tensors)):
        return None
    steps = [t.unflatten(0, (T, -1)) for t in tensors]
    layout = _rows(*(s[0] for s in steps))
    if layout is None:
        return None
    rows, inner, row_strides = layout
    return rows, inner, [s.stride(0) if T > 1 else 0 for s in steps], row_strides


def native_lif(x: torch.Tensor, T: int, v_th: float, out: torch.Tensor) -> bool:
    """Spikes of ``x [T*B, ...]`` (float32 or bfloat16, CPU) from rest into ``out`` (float32 or
    bfloat16, any strides that keep the same rows as ``x``, e.g. a dense block's channel slice).
    ``False`` when the kernel is unavailable or the layouts do not fit (the caller runs the
    torch ops). A bfloat16 input is read exactly (widened to float32, as ``x.float()`` would)."""
    halves = (torch.float32, torch.bfloat16)
    if x.dtype not in halves or out.dtype not in halves:
        return False
    layout = _time_layout(T, x, out)
    fn = _function() if layout is not None else None
    if fn is None:
        return False
    rows, inner, (step_x, step_o), (row_x, row_o) = layout
    fn(x.data_ptr(), int(x.dtype == torch.bfloat16), out.data_ptr(),
       int(out.dtype == torch.bfloat16), T, rows, inner, step_x, row_x, step_o, row_o,
       float(v_th), torch.get_num_threads())
    return True


def _dense_steps(T: int, *tensors: torch.Tensor) -> tuple[int, int] | None:
    """Float32 ``[T*B, ...]`` tensors of one shape and strides whose every time step is one
    dense run of elements (a conv output, in either layout): ``(elements per step, step
    stride)``, or ``None``."""
    first = tensors[0]
    if any(t.dtype != torch.float32 or t.stride() != first.stride() for t in tensors):
        return None
    layout = _time_layout(T, *tensors)
    if layout is None or _function() is None:
        return None
    rows, inner, steps, row_strides = layout
    return (rows * inner, steps[0]) if rows == 1 or row_strides[0] == inner else None


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def native_lif_charge(x: torch.Tensor, T: int, v_th: float, alpha: float,
                      spikes: torch.Tensor | None, charged: torch.Tensor | None,
                      surrogate_arg: torch.Tensor | None) -> bool:
    """The LIF's training forward: from float32 ``x [T*B, ...]``, any of its spikes, its charged
    potential H and the surrogate's argument ``(H - v_th)·alpha`` (each laid out as ``x``), one
    pass. ``False`` if unavailable (the caller runs the torch ops)."""
    dense = _dense_steps(T, x, *(t for t in (spikes, charged, surrogate_arg) if t is not None))
    if dense is None:
        return False
    _state['charge'](x.data_ptr(), _ptr(spikes), _ptr(charged), _ptr(surrogate_arg), T, *dense,
                     float(v_th), float(alpha), torch.get_num_threads())
    return True


def native_lif_backward(charged: torch.Tensor, sigmoid: torch.Tensor, grad_spikes: torch.Tensor,
                        T: int, v_th: float, alpha: float) -> torch.Tensor | None:
    """dL/dX of the LIF from its charged potential H, ``sigmoid((H - v_th)·alpha)`` and dL/dS
    (one layout), all T steps in one pass; ``None`` if unavailable."""
    dense = _dense_steps(T, charged, sigmoid, grad_spikes)
    if dense is None:
        return None
    grad_x = torch.empty_like(charged)
    _state['backward'](charged.data_ptr(), sigmoid.data_ptr(), grad_spikes.data_ptr(),
                       grad_x.data_ptr(), T, *dense, float(v_th), float(alpha),
                       torch.get_num_threads())
    return grad_x


def native_channel_cat(parts: list[torch.Tensor]) -> torch.Tensor | None:
    """``torch.cat(parts, dim=1)`` of 4-D channels-last CPU tensors of one dtype, as one row copy
    per pixel and part (torch's cat runs these interleaved rows about half as fast); ``None``
    where the layouts do not fit or the kernel is unavailable."""
    first = parts[0]
    if (first.dim() != 4 or first.device.type != 'cpu'
            or any(p.dtype != first.dtype or p.device != first.device or p.dim() != 4
                   or p.shape[:1] + p.shape[2:] != first.shape[:1] + first.shape[2:]
                   or p.numel() == 0 or not p.is_contiguous(memory_format=torch.channels_last)
                   for p in parts)):
        return None
    if _function() is None:
        return None
    (N, _, H, W), C = first.shape, sum(p.shape[1] for p in parts)
    out = torch.empty((N, C, H, W), dtype=first.dtype, memory_format=torch.channels_last)
    size, k = first.element_size(), len(parts)
    srcs = (ctypes.c_void_p * k)(*(p.data_ptr() for p in parts))
    widths = (ctypes.c_int64 * k)(*(p.shape[1] * size for p in parts))
    _state['cat'](srcs, widths, k, out.data_ptr(), N * H * W, C * size, torch.get_num_threads())
    return out


_MAPS = (torch.float32, torch.bfloat16)      # what the attention kernels read a map in


def _channels_last_rows(t: torch.Tensor, shape, dtypes=(torch.float32,)) -> bool:
    """``t`` is a non-empty CPU tensor of ``shape`` and one of ``dtypes``, in dense
    channels-last rows (one row of C per pixel, samples one after another)."""
    return (t.device.type == 'cpu' and t.dtype in dtypes and t.shape == shape and t.numel() > 0
            and t.is_contiguous(memory_format=torch.channels_last)
            and t.stride(0) == t[0].numel())


def _dense_gate(t: torch.Tensor, shape: tuple) -> bool:
    """``t`` is a contiguous float32 CPU gate of ``shape``."""
    return (t.device.type == 'cpu' and t.dtype == torch.float32 and t.shape == shape
            and t.is_contiguous())


def native_gated_residual(residual: torch.Tensor, z: torch.Tensor, pixel_gate: torch.Tensor,
                          channel_gate: torch.Tensor) -> torch.Tensor | None:
    """``torch.addcmul(residual, z * pixel_gate, channel_gate.view(N, C, 1, 1))`` in one pass,
    the same bits, for a float32 channels-last ``residual``, ``z`` ``[N,C,H,W]`` (float32, or
    bfloat16 read exactly), a ``pixel_gate [N,1,H,W]`` and a ``channel_gate [N,C]``; ``None``
    where these do not fit or the kernel is unavailable."""
    N, C, H, W = z.shape
    if (not (_channels_last_rows(z, z.shape, _MAPS) and _channels_last_rows(residual, z.shape)
             and _dense_gate(pixel_gate, (N, 1, H, W)) and _dense_gate(channel_gate, (N, C)))
            or _function() is None):
        return None
    out = torch.empty(z.shape, dtype=torch.float32, memory_format=torch.channels_last)
    _state['gated'](residual.data_ptr(), z.data_ptr(), int(z.dtype == torch.bfloat16),
                    pixel_gate.data_ptr(), channel_gate.data_ptr(), out.data_ptr(), None, None,
                    N * H * W, H * W, C, torch.get_num_threads())
    return out


def native_spatial_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each channel's sum and max over the pixels of a channels-last ``z [N,C,H,W]`` (float32,
    or bfloat16 read exactly): ``[N,C]`` float32 each, in one pass where torch makes two (the
    max is ``amax``'s, NaN included; the sum adds in another order: float32 over blocks of 256
    pixels, then in double; a bfloat16 map's sums are not rounded to bfloat16, as torch's are).
    ``None`` where these do not fit or the kernel is unavailable."""
    N, C, H, W = z.shape
    if not _channels_last_rows(z, z.shape, _MAPS) or _function() is None:
        return None
    sums, maxs = torch.empty(N, C), torch.empty(N, C)
    if _state['stats'](z.data_ptr(), int(z.dtype == torch.bfloat16), sums.data_ptr(),
                       maxs.data_ptr(), N, H * W, C, torch.get_num_threads()):
        return None                              # out of memory for the partial sums
    return sums, maxs


def native_channel_gate(z: torch.Tensor, channel_gate: torch.Tensor, keep_gated: bool = True
                        ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor] | None:
    """``z * channel_gate.view(N, C, 1, 1)`` (the same bits; ``None`` in its place without
    ``keep_gated``: :func:`native_relu_gated_residual` can make it again on the fly) with each
    pixel's channel sum and channel max of it (``[N,H,W]`` each; the sum in 16 partial sums),
    one pass over a channels-last ``z`` (float32 or bfloat16) and a float32
    ``channel_gate [N,C]``; ``None`` where these do not fit or the kernel is unavailable."""
    N, C, H, W = z.shape
    if (not (_channels_last_rows(z, z.shape, _MAPS) and _dense_gate(channel_gate, (N, C)))
            or _function() is None):
        return None
    out = (torch.empty(z.shape, dtype=torch.float32, memory_format=torch.channels_last)
           if keep_gated else None)
    sums, maxs = torch.empty(N, H, W), torch.empty(N, H, W)
    _state['gated'](None, z.data_ptr(), int(z.dtype == torch.bfloat16), None,
                    channel_gate.data_ptr(), _ptr(out), sums.data_ptr(), maxs.data_ptr(),
                    N * H * W, H * W, C, torch.get_num_threads())
    return out, sums, maxs


def native_relu_gated_residual(v: torch.Tensor, pixel_gate: torch.Tensor,
                               residual: torch.Tensor | None,
                               bf16_copy: torch.Tensor | None = None,
                               channel_gate: torch.Tensor | None = None,
                               dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """``torch.addcmul(residual, relu(v), pixel_gate)`` (or ``relu(v) * pixel_gate`` without a
    residual) in one pass, the same bits, for a channels-last ``v [N,C,H,W]`` (float32, or
    bfloat16 read exactly), a channels-last ``residual`` (float32, or bfloat16 read exactly)
    and a float32 ``pixel_gate [N,1,H,W]``; with ``channel_gate [N,C]``, ``v`` is the map
    before that gate and the gated map is made again on the fly (as ``v * channel_gate.view(N,
    C, 1, 1)`` rounds it). Also written into ``bf16_copy`` (a bfloat16 tensor laid out as the
    output) where given, rounded as ``.to(torch.bfloat16)`` does; with ``dtype`` bfloat16 the
    output is only that rounding (no float32 map). ``None`` where these do not fit."""
    N, C, H, W = v.shape
    if (not (_channels_last_rows(v, v.shape, _MAPS) and _dense_gate(pixel_gate, (N, 1, H, W))
             and (residual is None or _channels_last_rows(residual, v.shape, _MAPS))
             and (bf16_copy is None
                  or _channels_last_rows(bf16_copy, v.shape, (torch.bfloat16,)))
             and (channel_gate is None or _dense_gate(channel_gate, (N, C)))
             and dtype in _MAPS and (dtype == torch.float32 or bf16_copy is None))
            or _function() is None):
        return None
    out = torch.empty(v.shape, dtype=dtype, memory_format=torch.channels_last)
    floats, halves = (out, bf16_copy) if dtype == torch.float32 else (None, out)
    failed = _state['relu_gated'](
        v.data_ptr(), int(v.dtype == torch.bfloat16), _ptr(channel_gate), pixel_gate.data_ptr(),
        _ptr(residual), int(residual is not None and residual.dtype == torch.bfloat16),
        _ptr(floats), _ptr(halves), N * H * W, H * W, C, torch.get_num_threads())
    return None if failed else out


def native_nilif(x: torch.Tensor, T: int, r: int, levels: int, decay: float, out: torch.Tensor,
                 inside: torch.Tensor | None = None, exact_scale: bool = False) -> bool:
    """NI-LIF spikes of ``x [T*B,C,H,W]`` over T·r² patch steps into ``out [T*B, C*r*r, H/r,
    W/r]`` (any strides; each float32 or bfloat16: a bfloat16 ``x`` is read exactly, as
    ``x.float()`` would, and bfloat16 spikes are rounded as ``.to(torch.bfloat16)`` rounds the
    float32 ones), and where the potential lay in [0, levels] into ``inside`` (bool
    ``[T, r*r, B, C, H/r, W/r]``, contiguous) when given; ``False`` if unavailable."""
    if (x.device.type != 'cpu' or x.dtype not in _MAPS or out.dtype not in _MAPS
            or x.dim() != 4 or out.dim() != 4 or x.numel() == 0
            or (inside is not None and (inside.dtype != torch.bool or not inside.is_contiguous()))):
        return False
    if _function() is None:
        return False
    N, C, H, W = x.shape
    strides = (ctypes.c_int64 * 4)(*x.stride()), (ctypes.c_int64 * 4)(*out.stride())
    _state['nilif'](x.data_ptr(), int(x.dtype == torch.bfloat16), out.data_ptr(),
                    int(out.dtype == torch.bfloat16), _ptr(inside), T, N // T, C, H // r,
                    W // r, r, strides[0], strides[1], float(levels), float(decay),
                    int(exact_scale), torch.get_num_threads())
    return True


def native_nilif_backward(grad_out: torch.Tensor, inside: torch.Tensor, T: int, r: int,
                          levels: int, decay: float, grad_x: torch.Tensor) -> bool:
    """NI-LIF's straight-through gradient over T·r² patch steps, one pass: ``grad_x [T*B,C,H,W]``
    from ``grad_out [T*B, C*r*r, H/r, W/r]`` (float32, any strides) and the forward's
    ``inside`` (bool ``[T, r*r, B, C, H/r, W/r]``, contiguous), the same bits as the torch ops
    of :class:`models.fast_lif._NILIFFunction`; ``False`` if unavailable."""
    if (any(t.device.type != 'cpu' or t.dtype != torch.float32 or t.dim() != 4
            for t in (grad_out, grad_x)) or grad_x.numel() == 0
            or inside.dtype != torch.bool or not inside.is_contiguous()
            or _function() is None):
        return False
    N, C, H, W = grad_x.shape
    strides = (ctypes.c_int64 * 4)(*grad_out.stride()), (ctypes.c_int64 * 4)(*grad_x.stride())
    return not _state['nilif_backward'](grad_out.data_ptr(), inside.data_ptr(), grad_x.data_ptr(),
                                        T, N // T, C, H // r, W // r, r, strides[0], strides[1],
                                        float(levels), float(decay), torch.get_num_threads())


def _dense_format(x: torch.Tensor) -> torch.memory_format:
    """Channels-last where ``x`` is a dense channels-last 4-D tensor, else contiguous."""
    return (torch.channels_last if x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)


def native_decompose_enhance(x: torch.Tensor, high: torch.Tensor, a: torch.Tensor,
                             b: torch.Tensor, dtype: torch.dtype = torch.float32
                             ) -> torch.Tensor | None:
    """VLIF-Net's decompose-enhance as its fast path writes it, ``torch.addcmul(x * b, high,
    x + (a - b))``, in one pass, the same bits, in ``dtype`` (float32, or bfloat16 rounded as
    ``.to(torch.bfloat16)`` rounds the float32 result: what a bf16 conv reads next). ``x`` and
    ``high`` are CPU tensors of one shape and layout (dense, channels-last or contiguous), each
    float32 or bfloat16 (read exactly); ``a`` and ``b`` one-element float32 tensors. ``None``
    where these do not fit or the kernel is unavailable."""
    fmt = _dense_format(x)
    if (x.device.type != 'cpu' or high.device.type != 'cpu' or x.dtype not in _MAPS
            or high.dtype not in _MAPS or dtype not in _MAPS or x.shape != high.shape
            or x.numel() == 0 or a.numel() != 1 or b.numel() != 1
            or a.dtype != torch.float32 or b.dtype != torch.float32
            or not (x.is_contiguous(memory_format=fmt) and high.is_contiguous(memory_format=fmt))
            or x.stride() != high.stride() or _function() is None):
        return None
    out = torch.empty(x.shape, dtype=dtype, memory_format=fmt)
    _state['decompose'](x.data_ptr(), int(x.dtype == torch.bfloat16), high.data_ptr(),
                        int(high.dtype == torch.bfloat16), out.data_ptr(),
                        int(dtype == torch.bfloat16), x.numel(), float(b), float(a - b),
                        torch.get_num_threads())
    return out


def native_upsample2x(low: torch.Tensor, skip: torch.Tensor | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """Bilinear x2 up-sampling of ``low`` ``[N, C, h, w]`` (``align_corners=False``), plus
    ``skip`` ``[N, C, 2h, 2w]`` if given, in one pass, in ``dtype`` (float32, or bfloat16
    rounded as ``.to`` rounds the float32 result): torch's values up to float32 rounding
    (another order of its products). Dense channels-last CPU maps, each float32 or bfloat16
    (read exactly); ``None`` where these do not fit or the kernel is unavailable."""
    return _upsample2x(low, 0 if skip is None else 1, skip, dtype)


def native_upsample2x_decompose(low: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                                b: torch.Tensor, dtype: torch.dtype = torch.float32
                                ) -> torch.Tensor | None:
    """:func:`native_decompose_enhance` of ``x`` ``[N, C, 2h, 2w]`` whose high part is ``low``
    ``[N, C, h, w]`` up-sampled as :func:`native_upsample2x` does, in one pass: the up-sampled
    map is never stored. In ``dtype`` (float32 or bfloat16); dense channels-last CPU maps, each
    float32 or bfloat16; ``None`` where these do not fit or the kernel is unavailable."""
    if a.numel() != 1 or b.numel() != 1:
        return None
    return _upsample2x(low, 2, x, dtype, b=float(b), amb=float(a - b))


def native_upsample2x_lif(low: torch.Tensor, T: int, v_th: float,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """The LIF spikes (as :func:`native_lif` makes them) of ``low`` ``[T*B, C, h, w]``
    up-sampled as :func:`native_upsample2x` does, in one pass: the up-sampled map is never
    stored. Spikes in ``dtype`` (float32 or bfloat16); a dense channels-last CPU map, float32
    or bfloat16; ``None`` where it does not fit or the kernel is unavailable."""
    if low.dim() != 4 or T < 1 or low.shape[0] % T:
        return None
    return _upsample2x(low, 3, None, dtype, T=T, v_th=float(v_th))


def _upsample2x(low: torch.Tensor, op: int, other: torch.Tensor | None, dtype: torch.dtype,
                T: int = 1, b: float = 0.0, amb: float = 0.0, v_th: float = 0.0
                ) -> torch.Tensor | None:
    if low.dim() != 4 or dtype not in _MAPS:
        return None
    N, C, h, w = low.shape
    shape = (N, C, 2 * h, 2 * w)
    if (not _channels_last_rows(low, low.shape, _MAPS)
            or (other is not None and not _channels_last_rows(other, shape, _MAPS))
            or _function() is None):
        return None
    out = torch.empty(shape, dtype=dtype, memory_format=torch.channels_last)
    failed = _state['upsample'](low.data_ptr(), int(low.dtype == torch.bfloat16), op,
                                _ptr(other), int(other is not None
                                                 and other.dtype == torch.bfloat16),
                                out.data_ptr(), int(dtype == torch.bfloat16), T, N, h, w, C, b,
                                amb, v_th, torch.get_num_threads())
    return None if failed else out


def native_decompose_backward(grad: torch.Tensor, x: torch.Tensor, high: torch.Tensor,
                              a: torch.Tensor, b: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor, float, float] | None:
    """The gradients of :func:`native_decompose_enhance`'s ``torch.addcmul(x * b, high,
    x + (a - b))`` in training, one pass: ``grad_x`` and ``grad_high`` (the same bits as
    autograd's), and the sums of ``grad * high`` and ``grad * x`` (float64; autograd sums in
    another order) from which ``a`` and ``b`` take theirs. float32 CPU tensors of one shape and
    dense layout (``grad`` is laid out as ``x`` first); ``None`` where these do not fit or the
    kernel is unavailable."""
    fmt = _dense_format(x)
    grad = grad.contiguous(memory_format=fmt)
    tensors = (grad, x, high)
    if (any(t.device.type != 'cpu' or t.dtype != torch.float32 or t.shape != x.shape
            or not t.is_contiguous(memory_format=fmt) or t.stride() != x.stride()
            for t in tensors)
            or x.numel() == 0 or a.numel() != 1 or b.numel() != 1 or _function() is None):
        return None
    grad_x, grad_high = (torch.empty(x.shape, memory_format=fmt) for _ in range(2))
    sums = (ctypes.c_double * 2)()
    _state['decompose_backward'](grad.data_ptr(), x.data_ptr(), high.data_ptr(),
                                 grad_x.data_ptr(), grad_high.data_ptr(), x.numel(),
                                 float(b), float(a - b), sums, torch.get_num_threads())
    return grad_x, grad_high, sums[0], sums[1]


def native_attention_gate_grad(grad: torch.Tensor, z: torch.Tensor,
                               channel_gate: torch.Tensor) -> torch.Tensor | None:
    """The gradient of the pixel gate ``g`` in ``relu(z * channel_gate) * g``: each pixel's
    sum over the channels of ``grad * relu(z * channel_gate.view(N, C, 1, 1))``, ``[N,1,H,W]``,
    in one pass (the gated map made again, not stored). float32 channels-last ``grad`` and
    ``z``, a float32 ``channel_gate [N,C]``; ``None`` where these do not fit."""
    N, C, H, W = z.shape
    if (not (_channels_last_rows(z, z.shape) and _channels_last_rows(grad, z.shape)
             and _dense_gate(channel_gate, (N, C))) or _function() is None):
        return None
    out = torch.empty(N, 1, H, W)
    if _state['attention_backward'](0, grad.data_ptr(), z.data_ptr(), channel_gate.data_ptr(),
                                    None, None, None, None, None, out.data_ptr(), N, H * W, C,
                                    torch.get_num_threads()):
        return None
    return out


def native_attention_map_grad(grad: torch.Tensor, z: torch.Tensor, channel_gate: torch.Tensor,
                              pixel_gate: torch.Tensor, peak: torch.Tensor,
                              grad_sum: torch.Tensor, grad_max: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The gradients of ``z`` and ``channel_gate`` through the attention's gated part,
    ``v = z * channel_gate.view(N, C, 1, 1)``, read as ``relu(v) * pixel_gate`` (gradient
    ``grad``) and as each pixel's channel sum and max ``peak`` of ``v`` (gradients
    ``grad_sum``, ``grad_max``; the max's goes to every channel holding it), in one pass:
    ``grad_z`` (channels-last) and ``grad_gate [N,C]`` (summed per block of pixels, then in
    double). float32 CPU tensors; ``None`` where these do not fit."""
    N, C, H, W = z.shape
    pixels = (N, H, W)
    if (not (_channels_last_rows(z, z.shape) and _channels_last_rows(grad, z.shape)
             and _dense_gate(channel_gate, (N, C)) and _dense_gate(pixel_gate, (N, 1, H, W))
             and all(_dense_gate(t, pixels) for t in (peak, grad_sum, grad_max)))
            or _function() is None):
        return None
    grad_z = torch.empty(z.shape, memory_format=torch.channels_last)
    grad_gate = torch.empty(N, C)
    if _state['attention_backward'](1, grad.data_ptr(), z.data_ptr(), channel_gate.data_ptr(),
                                    pixel_gate.data_ptr(), peak.data_ptr(), grad_sum.data_ptr(),
                                    grad_max.data_ptr(), grad_z.data_ptr(), grad_gate.data_ptr(),
                                    N, H * W, C, torch.get_num_threads()):
        return None
    return grad_z, grad_gate
