"""Export a model with its weights to ONNX, and check the file against the exact torch path.

``python tools/export_onnx.py --weights W --out model.onnx`` writes one standard-ops graph
(opset >= 17, T steps unrolled, BatchNorm folded, no custom ops) that takes ``image
[1,3,H,W]`` for any H and W that are multiples of the model's size multiple: padding other
sizes (reflect) and cropping back is the caller's (models/onnx_runtime.py does it). Before the
file is written, ONNX Runtime runs it on test images of two sizes (two crops of a photo that
ships with scikit-image, or --image) and its output is compared with the exact torch forward;
the PSNR is printed and a result under --min_psnr writes nothing and exits 1. ``--int8`` writes
the int8 form instead (models/quantize.py: the convs whose inputs are spikes in int8, spikes
exact, weights per channel), checked the same way against --min_psnr_int8.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from models import available_models, build_from_checkpoint, build_model
from models.export import OPSET, example_input, graph_summary, onnx_bytes
from models.onnx_runtime import OnnxError, OnnxRestorer, compare_with_torch
from models.quantize import int8_summary, quantize_int8
from utils.core.atomic import write_bytes_atomic
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import InputError, UsageError
from utils.core.paths import check_writes
from utils.data.image_io import read_image_rgb, uint8_to_tensor
from utils.inference.outputs import file_sha256


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--weights', default=None,
                   help='weights or checkpoint to export (ours record the model)')
    p.add_argument('--model', choices=available_models(), default=None,
                   help='registered model name: for official state dicts and --random_weights')
    p.add_argument('--random_weights', action='store_true',
                   help='export the model with random weights, seed 0 (smoke tests only)')
    p.add_argument('--out', required=True, help='the .onnx file to write')
    p.add_argument('--image', default=None,
                   help='test image for the check: two crops of it, of two sizes (default: '
                        'scikit-image\'s coffee photo, 256x256 and 200x300)')
    p.add_argument('--opset', type=int, default=OPSET, help='ONNX opset (17 or newer)')
    p.add_argument('--min_psnr', type=float, default=50.0,
                   help='least PSNR (dB) of ONNX Runtime against the exact torch path')
    p.add_argument('--int8', action='store_true',
                   help='write the int8 form (spike inputs exact, weights per channel)')
    p.add_argument('--min_psnr_int8', type=float, default=35.0,
                   help='with --int8: least PSNR (dB) of the int8 graph against exact torch')
    return p.parse_args(argv)


def test_images(image: str | None) -> list[torch.Tensor]:
    """Two sizes through the one graph: the dynamic height and width are checked too."""
    if image is not None:
        full = uint8_to_tensor(read_image_rgb(image))
    else:
        from skimage import data
        full = uint8_to_tensor(data.coffee())                 # 400 x 600, a real photo
    h, w = full.shape[-2:]
    h2, w2 = min(200, max(1, 3 * h // 4)), min(300, max(1, 3 * w // 4))
    crops = [full[..., :min(h, 256), :min(w, 256)], full[..., h - h2:, w - w2:]]
    return [c.contiguous() for c in crops]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.opset < 17:
        raise UsageError(f'--opset {args.opset}: must be 17 or newer')
    if not args.weights and not args.random_weights:
        raise UsageError('--weights is required (or --random_weights --model NAME for a smoke '
                         'test)')
    if args.random_weights and (args.weights or not args.model):
        raise UsageError('--random_weights takes --model and no --weights')
    if not args.out.endswith('.onnx'):
        raise UsageError(f'--out {args.out}: name the file .onnx')
    if args.image is not None and not Path(args.image).is_file():
        raise InputError(f'--image {args.image}: no such file')
    check_writes([], [('--weights', args.weights), ('--image', args.image)],
                 files=[('--out', args.out)])
    if args.weights:
        model = build_from_checkpoint(args.weights, args.model)
    else:
        torch.manual_seed(0)
        model = build_model(args.model)
    model.eval()
    start = time.perf_counter()
    data = onnx_bytes(model, opset=args.opset,
                      weights_sha256=file_sha256(args.weights) if args.weights else None)
    seconds = time.perf_counter() - start
    graph = graph_summary(data)
    custom = [d for d in graph['domains'] if d not in ('', 'ai.onnx')]
    if custom:
        raise OnnxError(f'{model.model_name}: the graph holds custom ops ({", ".join(custom)}); '
                        f'stock runtimes cannot load it')
    runtime = OnnxRestorer(data, model)
    images = test_images(args.image)
    scores = compare_with_torch(model, runtime, images)
    shown = ', '.join(f'{im.shape[-2]}x{im.shape[-1]}: '
                      f'{"inf" if math.isinf(s) else f"{s:.1f}"} dB'
                      for im, s in zip(images, scores))
    print(f'{model.model_name}: ONNX Runtime vs the exact torch path, PSNR {shown}')
    if min(scores) < args.min_psnr:
        raise OnnxError(f'{model.model_name}: ONNX Runtime output {min(scores):.1f} dB from the '
                        f'exact torch path, under --min_psnr {args.min_psnr:g}; nothing written')
    form = ''
    if args.int8:
        data = quantize_int8(data, example_input(model).numpy())
        scores = compare_with_torch(model, OnnxRestorer(data, model, precision='int8'), images)
        summary = int8_summary(data)
        print(f'{model.model_name}: int8 ({summary["int8_convs"]} of {summary["convs"]} convs) '
              f'vs the exact torch path, PSNR ' + ', '.join(f'{s:.1f} dB' for s in scores))
        if min(scores) < args.min_psnr_int8:
            raise OnnxError(f'{model.model_name}: int8 output {min(scores):.1f} dB from the '
                            f'exact torch path, under --min_psnr_int8 {args.min_psnr_int8:g}; '
                            f'nothing written')
        form = ', int8 spike convs'
    write_bytes_atomic(args.out, data)
    print(f'wrote {args.out}: {model.model_name}, opset {graph["opset"]}, {graph["nodes"]} '
          f'standard ops, T={model.T} steps unrolled, BatchNorm folded{form}, input image '
          f'[1,3,H,W] with H, W multiples of {model.size_multiple}; {len(data) / 1e6:.1f} MB, '
          f'exported in {seconds:.1f} s')
    return 0


if __name__ == '__main__':
    run_main(main, 'export_onnx.py')
