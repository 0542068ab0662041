"""ONNX Runtime and OpenVINO against torch for shipped weights: fidelity and time per image.

``python tools/onnx_benchmark.py --weights W [W ...]`` exports each model (into a temporary
folder), then on rainy 256x256 crops of scikit-image photos (astronaut, coffee, chelsea, rocket,
with the ``heavy`` rain preset) reports for torch's default (fast) path, torch bf16 (where the
CPU has it), ONNX Runtime fp32 and OpenVINO fp32 and bf16: the PSNR against torch's exact path,
the PSNR against the clean photo, and the median time per image, interleaved (the first photo's
pass is the warm-up; ``--time_exact`` times the exact path too), with ``--threads`` threads for
every runtime (default 1: the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models import build_from_checkpoint
from models.acceleration import bf16_supported, optimize_for_inference, plain_forward
from models.export import export_onnx
from models.onnx_runtime import OnnxRestorer, psnr
from utils.core.atomic import write_text_atomic
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import UsageError
from utils.data.image_io import uint8_to_tensor
from utils.data.rain import add_rain
from utils.efficiency.benchmark import cpu_description, cpu_line

PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket')


def photos(size: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, rainy, clean) centre crops of ``size`` x ``size``."""
    from skimage import data
    out = []
    for i, name in enumerate(PHOTOS):
        img = getattr(data, name)()
        h, w = img.shape[:2]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        clean = np.ascontiguousarray(img[top:top + size, left:left + size, :3])
        rainy = add_rain(clean, 'heavy', seed=[25, i])
        out.append((name, uint8_to_tensor(rainy), uint8_to_tensor(clean)))
    return out


@torch.no_grad()
def measure(weights: str, size: int, repeats: int, threads: int, time_exact: bool) -> dict:
    model = build_from_checkpoint(weights).eval()
    fast = optimize_for_inference(model)
    bf16 = bf16_supported()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(model, Path(tmp) / 'model.onnx')
        export_s = time.perf_counter() - start
        runs = {'torch exact': lambda x: _plain(model, x), 'torch default (fast)': fast}
        if bf16:
            runs['torch bf16'] = optimize_for_inference(model, precision='bf16')
        runs['onnxruntime fp32'] = OnnxRestorer(path, model, threads=threads)
        runs['openvino fp32'] = OnnxRestorer(path, model, threads, runtime='openvino')
        if bf16:
            runs['openvino bf16'] = OnnxRestorer(path, model, threads, runtime='openvino',
                                                 precision='bf16')
        images = photos(size)
        rows = []
        for name, rainy, clean in images:
            outs = {k: f(rainy).clamp(0, 1) for k, f in runs.items()}
            rows.append({'photo': name,
                         'vs_exact_db': {k: psnr(v, outs['torch exact']) for k, v in outs.items()
                                         if k != 'torch exact'},
                         'vs_clean_db': {k: psnr(v, clean) for k, v in outs.items()},
                         'rainy_vs_clean_db': psnr(rainy, clean)})
        if not time_exact:
            del runs['torch exact']
        times = {k: [] for k in runs}
        x = images[0][1]                              # (its pass above was the warm-up)
        for _ in range(repeats):                      # interleaved: drift hits all alike
            for k, f in runs.items():
                start = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - start)
    return {'model': model.model_name, 'weights': weights, 'export_s': export_s,
            'photos': rows, 'seconds_per_image': {k: statistics.median(v)
                                                  for k, v in times.items()}}


def _plain(model, x):
    with plain_forward(model):
        return model(x)


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--weights', nargs='+', required=True, help='weights files to measure')
    p.add_argument('--size', type=int, default=256, help='side of the square test crops')
    p.add_argument('--repeats', type=int, default=5, help='timed runs per path (median)')
    p.add_argument('--threads', type=int, default=1, help='threads of every runtime')
    p.add_argument('--time_exact', action='store_true', help='time the exact path too')
    p.add_argument('--json', default=None, help='also write the figures here')
    args = p.parse_args(argv)
    if args.size < 16 or args.repeats < 1 or args.threads < 1:
        raise UsageError('--size must be >= 16, --repeats and --threads >= 1')
    torch.set_num_threads(args.threads)
    cpu = cpu_description()
    print(f'CPU: {cpu_line(cpu)}; {args.threads} thread(s); {args.size}x{args.size} crops of '
          f'{", ".join(PHOTOS)} under heavy rain')
    results = []
    for weights in args.weights:
        r = measure(weights, args.size, args.repeats, args.threads, args.time_exact)
        results.append(r)
        print(f'\n{r["model"]} ({weights}), exported in {r["export_s"]:.1f} s')
        for row in r['photos']:
            vs = ', '.join(f'{k} {v:.1f} dB' for k, v in row['vs_exact_db'].items())
            clean = ', '.join(f'{k} {v:.2f}' for k, v in row['vs_clean_db'].items())
            print(f'  {row["photo"]:<10} vs torch exact: {vs}; vs clean (rainy '
                  f'{row["rainy_vs_clean_db"]:.2f}): {clean}')
        secs = r['seconds_per_image']
        print('  time per image: ' + ', '.join(
            f'{k} {v:.3f} s ({v / secs["torch default (fast)"]:.2f}x default)'
            for k, v in secs.items()))
    if args.json:
        write_text_atomic(args.json, json.dumps({'cpu': cpu, 'threads': args.threads,
                                                 'size': args.size, 'results': results},
                                                indent=2) + '\n')
    return 0


if __name__ == '__main__':
    run_main(main, 'onnx_benchmark.py')
