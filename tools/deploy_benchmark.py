"""Every deployable path of shipped weights in one run: time, conv floor, peak memory, quality.

    python tools/deploy_benchmark.py --weights pretrained_models/spikerain-s_synthetic.pth \
        pretrained_models/vlif-net-tiny_synthetic.pth --sizes 256 1024 --json deploy.json

For each weights file it exports the model once (fp32, and its int8 form: models/quantize.py),
then for each size (``1024`` is 1 MP) and each path (torch exact, default, bf16; ONNX Runtime
fp32, int8; OpenVINO fp32, bf16, int8, int8+bf16; bf16 only where the CPU has it) measures in a
fresh process the peak memory of the first call (over the loaded model) and the median time of
up to ``--repeats`` calls, next to the model's fp32 conv floor at that size. A path whose
measured memory line (utils/inference/memory_table.json) says it needs more than the free memory
for one image whole is not run at that size (test.py would tile it); one whose process is killed
(out of memory) is reported as such. Quality is judged
on photos never trained on (``--photos``, default the held-out split of ``make photos``):
light and heavy rain on each photo shrunk to ``--heldout_size``, every path's Y-PSNR against
the clean photo next to the exact path's, and its RGB PSNR against the exact output. A path is
at *quality parity* when its mean is within 0.1 dB of exact and no image is worse by more than
0.3 dB. Prints one table per model (markdown) and the CPU with its matrix extensions.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from tqdm import tqdm

from models import build_from_checkpoint
from models.acceleration import bf16_supported
from models.export import example_input, export_onnx
from models.onnx_runtime import psnr
from models.quantize import int8_summary, quantize_int8
from utils.core.atomic import check_output_file, write_text_atomic
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import InputError, UsageError
from utils.data.image_io import list_images, tensor_to_uint8, uint8_to_tensor
from utils.efficiency.benchmark import cpu_description, cpu_line
from utils.efficiency.deployment import (available_paths, build_path, measure_floor,
                                         measure_path)
from utils.eval.heldout import heldout_pairs, load_photos
from utils.eval.metrics import calculate_psnr
from utils.inference.memory import available_memory, estimate_forward, format_bytes

PARITY_MEAN_DB, PARITY_WORST_DB = 0.1, 0.3


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--weights', nargs='+', required=True, help='weights files to measure')
    p.add_argument('--sizes', nargs='+', type=int, default=[256, 1024],
                   help='sides of the square test images (1024: 1 MP)')
    p.add_argument('--paths', nargs='+', default=None,
                   help='only these paths (e.g. "torch default" "openvino int8")')
    p.add_argument('--threads', type=int, default=1, help='threads of every path')
    p.add_argument('--repeats', type=int, default=3, help='timed calls per path at most')
    p.add_argument('--budget_s', type=float, default=60.0,
                   help='stop timing a path once its timed calls took this long (>= 1 call)')
    p.add_argument('--photos', default='data/photos/val',
                   help='clean photos never trained on, for quality (make photos)')
    p.add_argument('--heldout_size', type=int, default=192,
                   help='the held-out photos are shrunk to this on their longest side')
    p.add_argument('--heldout_limit', type=int, default=None, help='use only the first N photos')
    p.add_argument('--json', default=None, help='also write every figure here')
    return p


def check(args) -> list[str]:
    if min(args.sizes) < 16 or args.repeats < 1 or args.threads < 1 or args.heldout_size < 16:
        raise UsageError('--sizes and --heldout_size must be >= 16, --repeats and --threads '
                         '>= 1')
    for w in args.weights:
        if not Path(w).is_file():
            raise InputError(f'--weights {w}: no such file')
    paths = available_paths(bf16_supported())
    for path in args.paths or []:
        if path not in paths:
            raise UsageError(f'--paths {path!r}: this machine runs {", ".join(paths)}')
    if not Path(args.photos).is_dir() or not list_images(args.photos):
        raise InputError(f'--photos {args.photos}: no photos there (make photos writes '
                         f'data/photos/val)')
    if args.json:
        check_output_file('--json', args.json)
    return [p for p in paths if p in args.paths] if args.paths else paths


@torch.no_grad()
def judge(paths: list[str], weights: str, graphs: dict, photos, threads: int) -> dict:
    """Per path: Y-PSNR against the clean photo per image, and RGB PSNR against exact."""
    pairs = heldout_pairs(photos, ('light', 'heavy'), seed=0)
    runs = {p: build_path(p, weights, graphs, threads) for p in paths}
    if 'torch exact' not in runs:
        runs['torch exact'] = build_path('torch exact', weights, graphs, threads)
    rows = {p: {'vs_clean_db': [], 'vs_exact_db': []} for p in runs}
    for _, _, rainy, clean in tqdm(pairs, desc='held-out', leave=False):
        x = uint8_to_tensor(rainy)
        exact = runs['torch exact'](x).clamp(0, 1)
        for path, fn in runs.items():
            out = exact if path == 'torch exact' else fn(x).clamp(0, 1)
            rows[path]['vs_clean_db'].append(calculate_psnr(tensor_to_uint8(out), clean))
            rows[path]['vs_exact_db'].append(psnr(out, exact))
    base = rows['torch exact']['vs_clean_db']
    out = {}
    for path in paths:
        diffs = [a - b for a, b in zip(rows[path]['vs_clean_db'], base)]
        out[path] = {'mean_db': statistics.mean(rows[path]['vs_clean_db']),
                     'mean_diff_db': statistics.mean(diffs), 'worst_diff_db': min(diffs),
                     'min_vs_exact_db': min(rows[path]['vs_exact_db']),
                     'parity': abs(statistics.mean(diffs)) <= PARITY_MEAN_DB
                     and min(diffs) >= -PARITY_WORST_DB, 'images': len(diffs)}
    return out


def measure_model(weights: str, paths: list[str], args, tmp: Path) -> dict:
    model = build_from_checkpoint(weights).eval()
    fp32 = Path(export_onnx(model, tmp / f'{model.model_name}.onnx'))
    data = quantize_int8(fp32.read_bytes(), example_input(model).numpy())
    int8 = tmp / f'{model.model_name}-int8.onnx'
    int8.write_bytes(data)
    graphs = {'fp32': str(fp32), 'int8': str(int8)}
    result = {'model': model.model_name, 'weights': weights, 'int8': int8_summary(data),
              'sizes': {}}
    for size in args.sizes:
        floor = measure_floor(model.model_name, size, args.threads, args.repeats, args.budget_s)
        timed = {}
        for path in tqdm(paths, desc=f'{model.model_name} {size}x{size}', leave=False):
            need, free = whole_image_bytes(model, path, size), available_memory('cpu')
            if free is not None and need > free:
                timed[path] = {'skipped': f'needs ~{format_bytes(need)} whole, '
                                          f'{format_bytes(free)} free'}
                continue
            try:
                timed[path] = measure_path(path, weights, graphs, size, args.threads,
                                           args.repeats, args.budget_s)
            except RuntimeError as err:              # the measuring process was killed
                timed[path] = {'skipped': str(err).split(': ', 1)[-1]}
        result['sizes'][str(size)] = {'floor_s': floor['median_s'], 'paths': timed}
    photos = load_photos(args.photos, args.heldout_size, args.heldout_limit)
    result['quality'] = judge(paths, weights, graphs, photos, args.threads)
    return result


def whole_image_bytes(model, path: str, size: int) -> int:
    """What one ``size`` x ``size`` image takes whole on ``path``, from the measured memory
    lines (the exported graph's own, else the exact torch path's)."""
    if path.startswith(('onnxruntime', 'openvino')):
        view = SimpleNamespace(backend=path.split(' ')[0])
    elif path == 'torch exact':
        view = SimpleNamespace(fast_path=None)
    else:
        precision = 'bf16' if path.endswith('bf16') else 'fp32'
        view = SimpleNamespace(fast_path=SimpleNamespace(options=SimpleNamespace(
            precision=precision)))
    view.model_name, view.config = model.model_name, model.config
    view.family, view.size_multiple = type(model).__name__, model.size_multiple
    return estimate_forward(view, size, size, device='cpu')


def table(result: dict, paths: list[str]) -> str:
    sizes = list(result['sizes'])
    head = ['path'] + [f'{s}²: {c}' for s in sizes for c in ('s', '× floor', 'peak MB')] + \
        ['vs exact (min dB)', 'held-out Y-PSNR (Δ mean / worst)', 'parity']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for path in paths:
        cells = [path]
        for s in sizes:
            r, floor = result['sizes'][s]['paths'][path], result['sizes'][s]['floor_s']
            if 'skipped' in r:
                cells += ['—', '—', r['skipped']]
                continue
            cells += [f'{r["median_s"]:.3f}', f'{r["median_s"] / floor:.2f}',
                      f'{r["peak_bytes"] / 2**20:.0f}']
        q = result['quality'][path]
        exact = 'exact' if math.isinf(q['min_vs_exact_db']) else f'{q["min_vs_exact_db"]:.1f}'
        cells += [exact, f'{q["mean_db"]:.2f} ({q["mean_diff_db"]:+.2f} / '
                         f'{q["worst_diff_db"]:+.2f})', 'yes' if q['parity'] else 'no']
        lines.append('| ' + ' | '.join(cells) + ' |')
    floors = ', '.join(f'{s}²: {result["sizes"][s]["floor_s"]:.3f} s' for s in sizes)
    int8 = result['int8']
    share = int8.get('int8_mac_share', math.nan)
    lines.append(f'\nfp32 conv floor: {floors}; int8 convs: {int8["int8_convs"]} of '
                 f'{int8["convs"]} ({100 * share:.1f} % of the conv MACs)')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    paths = check(args)
    cpu = cpu_description()
    print(f'CPU: {cpu_line(cpu)}; {args.threads} thread(s); torch {torch.__version__}')
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for weights in args.weights:
            r = measure_model(weights, paths, args, Path(tmp))
            results.append(r)
            n = r['quality'][paths[0]]['images']
            print(f'\n{r["model"]} ({weights}); quality on {n} held-out images '
                  f'({args.photos}, light and heavy rain, {args.heldout_size} px)\n')
            print(table(r, paths))
    if args.json:
        write_text_atomic(args.json, json.dumps(
            {'cpu': cpu, 'threads': args.threads, 'torch': torch.__version__, 'paths': paths,
             'results': results}, indent=2, default=float) + '\n')
    return 0


if __name__ == '__main__':
    run_main(main, 'deploy_benchmark.py')
