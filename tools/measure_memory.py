"""Measure the peak memory of a forward per pixel, per model, path and device: the table
``utils/inference/memory_table.json`` that automatic tiling plans with.

For each model and path, each ``--sizes`` square image is restored once in a fresh process (a
process high-water mark, or ``torch.cuda.max_memory_allocated`` on a GPU, less what was there
before the forward); a line ``constant + bytes_per_pixel * pixels`` is fitted by least squares
and written with the command, date and machine. The largest size is also timed (a second call).
Example: ``OMP_NUM_THREADS=1 python tools/measure_memory.py --model all --write``
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time

import numpy as np
import torch

from models import available_models, build_model
from models.acceleration import bf16_supported, optimize_for_inference, supports_fast_path
from utils.core.atomic import write_text_atomic
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import UsageError
from utils.efficiency.benchmark import read_peak, reset_peak, run_isolated
from utils.inference.memory import TABLE_PATH

PATHS = ('fast', 'exact', 'bf16', 'onnxruntime', 'openvino')
RUNTIMES = ('onnxruntime', 'openvino')     # the exported graph (fp32), as test.py --backend
DEFAULT_MODELS = ('spikerain-tiny', 'spikerain-s', 'esdnet-tiny', 'esdnet', 'vlif-net-tiny',
                  'vlif-net')


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', nargs='+', default=['all'],
                   help=f'registered names, or all ({", ".join(DEFAULT_MODELS)})')
    p.add_argument('--paths', nargs='+', default=list(PATHS), choices=PATHS,
                   help='forwards to measure (fast: test.py\'s default; models without a fast '
                        'path have exact only; bf16 only on CPUs with native bf16; onnxruntime '
                        'and openvino: the exported graph in fp32, as test.py --backend)')
    p.add_argument('--sizes', type=int, nargs='+', default=[128, 256, 384],
                   help='square image sides to fit the line through')
    p.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    p.add_argument('--threads', type=int, default=1, help='CPU threads in each measurement')
    p.add_argument('--write', action='store_true',
                   help=f'merge the results into {TABLE_PATH.name} (else print them only)')
    return p.parse_args(argv)


def _build(name: str, path: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name).to(device).eval()
    if path in RUNTIMES:                 # exported here, in the measuring process
        from models.export import onnx_bytes
        from models.onnx_runtime import OnnxRestorer
        return OnnxRestorer(onnx_bytes(model), model, torch.get_num_threads(), runtime=path)
    if path != 'exact':
        model = optimize_for_inference(model, precision='bf16' if path == 'bf16' else 'fp32')
    return model


def measure(name: str, path: str, size: int, device: str, threads: int, timed: bool) -> dict:
    """In a fresh process: peak bytes of the first forward of one size x size image (above what
    the process held before it), and the seconds of a second one when ``timed``."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    model = _build(name, path, device)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)
    base = reset_peak(dev)
    with torch.no_grad():
        model(x).clamp_(0, 1)
    peak = max(0, read_peak(dev) - base)
    seconds = None
    if timed:
        start = time.perf_counter()
        with torch.no_grad():
            model(x).clamp_(0, 1)
        if dev.type == 'cuda':
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
    return {'peak_bytes': peak, 'seconds': seconds}


def fit(sizes: list[int], peaks: list[int], multiple: int) -> tuple[float, float]:
    pixels = np.array([(-(-s // multiple) * multiple) ** 2 for s in sizes], dtype=float)
    if len(sizes) == 1:
        return float(peaks[0] / pixels[0]), 0.0
    slope, intercept = np.polyfit(pixels, np.array(peaks, dtype=float), 1)
    return float(slope), float(max(0.0, intercept))


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as fh:
            names = [ln.split(':', 1)[1].strip() for ln in fh if ln.startswith('model name')]
        return f'{len(names)} x {names[0]}' if names else platform.machine()
    except OSError:
        return platform.machine()


def main(argv=None) -> int:
    args = parse_args(argv)
    names = list(DEFAULT_MODELS) if args.model == ['all'] else args.model
    for n in names:
        if n not in available_models():
            raise UsageError(f'--model {n!r}: unknown; choose from all, '
                             f'{", ".join(available_models())}')
    if any(s < 16 for s in args.sizes):
        raise UsageError(f'--sizes {args.sizes}: every size must be >= 16')
    device = torch.device(args.device)
    measured = {'command': f'OMP_NUM_THREADS={args.threads} python tools/measure_memory.py '
                + ' '.join(sys.argv[1:] if argv is None else argv),
                'date': datetime.date.today().isoformat(),
                'machine': cpu_name(),
                'torch': torch.__version__}
    entries = []
    for name in names:
        probe = build_model(name)
        for path in args.paths:
            if path in RUNTIMES and device.type != 'cpu':
                continue
            if path in ('fast', 'bf16') and not supports_fast_path(probe):
                continue
            if path == 'bf16' and (device.type != 'cpu' or not bf16_supported()):
                print(f'{name} bf16: skipped (no native bf16 here)')
                continue
            results = [run_isolated(measure, name, path, s, str(device), args.threads,
                                    s == max(args.sizes), what=f'{name} {path} {s}',
                                    env={'OMP_NUM_THREADS': str(args.threads)})
                       for s in sorted(args.sizes)]
            peaks = [r['peak_bytes'] for r in results]
            per_pixel, constant = fit(sorted(args.sizes), peaks, probe.size_multiple)
            seconds = results[-1]['seconds']
            mp = max(args.sizes) ** 2 / 1e6
            entry = dict(model=name, family=type(probe).__name__, config=probe.config, path=path,
                         device=device.type, bytes_per_pixel=round(per_pixel, 1),
                         constant_bytes=int(constant), sizes=sorted(args.sizes),
                         peak_bytes=peaks, seconds_per_megapixel=round(seconds / mp, 2),
                         measured=measured)
            entries.append(json.loads(json.dumps(entry, default=str)))
            print(f'{name:15s} {path:5s} {device.type}: {per_pixel / 1e3:7.2f} KB/pixel + '
                  f'{constant / 1e6:6.0f} MB = {per_pixel * 1e6 / 1e9 + constant / 1e9:6.2f} '
                  f'GB/MP; {seconds / mp:7.1f} s/MP ({args.threads} thread(s), at '
                  f'{max(args.sizes)}^2)', flush=True)
    if args.write:
        table = json.loads(TABLE_PATH.read_text()) if TABLE_PATH.exists() else {'entries': []}
        keys = {(e['model'], e['path'], e['device']) for e in entries}
        table['entries'] = [e for e in table['entries']
                            if (e['model'], e['path'], e['device']) not in keys] + entries
        table['entries'].sort(key=lambda e: (e['device'], e['model'], e['path']))
        write_text_atomic(TABLE_PATH, json.dumps(table, indent=1) + '\n')
        print(f'wrote {TABLE_PATH}')
    return 0


if __name__ == '__main__':
    run_main(main, 'tools/measure_memory.py')
