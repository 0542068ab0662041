"""Restore rainy images with a trained model: ``python test.py --weights W --data_path DIR``.

Reads one image, a folder, or a benchmark split (its ``input/``), writes ``<stem>.png`` into
``--save_path`` (never into the input folder), and with ``--target_path`` reports PSNR/SSIM
by the published protocol (the same functions as evaluation.py); without it, the no-reference
scores (NIQE, BRISQUE, PIQE; lower is better) of the rainy inputs and of their outputs. Re-running
skips outputs that are already complete, so an interrupted run simply resumes.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

from models import available_models, build_from_checkpoint, build_model
from models.acceleration import optimize_for_inference, supports_fast_path
from models.onnx_runtime import cached_export
from utils.core.device import configure_numerics, resolve_device
from utils.core.device import lif_kernel_report
from utils.core.cli import ArgumentParser, describe, run_main
from utils.core.errors import InputError, SpikeDerainError, UsageError
from utils.eval.folders import (evaluate_pairs, input_output_text, input_output_without_targets,
                                pair_with_targets, psnr_text, target_folder)
from utils.eval.noreference import parse_metrics
from utils.core.lock import FolderLock
from utils.data.image_io import is_image_file, list_images
from utils.inference.outputs import (check_output_manifest, find_inputs, output_path,
                                     output_recipe, planned_tiling, restore_files, write_manifest,
                                     command_line, file_sha256)
from utils.data.image_io import check_writable, remove_interrupted_writes
from utils.inference.memory import memory_budget
from utils.inference.restore import AUTO
from utils.inference.tiling import check_tiling
from utils.core.paths import check_writes, split_folders

BACKENDS = ('torch', 'onnxruntime', 'openvino')
# Folder names that say nothing about the data set; the default save path skips them.
_GENERIC_NAMES = {'input', 'inputs', 'rain', 'rainy', 'test', 'testing', 'data'}


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', choices=available_models(), default=None,
                   help='registered model name; optional for our checkpoints (they record it), '
                        'required for official state dicts')
    p.add_argument('--weights', default=None,
                   help='checkpoint to load (ours or an official .pth)')
    p.add_argument('--random_weights', action='store_true',
                   help='run without --weights on random weights (smoke tests only: the output '
                        'is meaningless)')
    p.add_argument('--data_path', required=True,
                   help='an image, a folder of images, or a benchmark split with input/')
    p.add_argument('--save_path', default=None,
                   help='output folder (default: results/<model>/<data name>)')
    p.add_argument('--target_path', default=None,
                   help='ground-truth folder (or image): evaluate PSNR/SSIM after restoring')
    p.add_argument('--no_reference', default=None, metavar='METRICS',
                   help='no-reference scores of each rainy input and its output, as means input '
                        '-> output (lower is better): niqe, brisque, piqe (comma-separated), all '
                        'or none (default: all without --target_path, none with it). About 0.3 s '
                        'per metric per megapixel, twice per image; images too small for a metric '
                        '(NIQE: 192x96) are left out of its mean')
    p.add_argument('--device', default='auto',
                   help='auto (default: CUDA if present, else CPU), cpu, cuda or cuda:N')
    p.add_argument('--tf32', action='store_true',
                   help='allow TF32 convolutions/matmuls on a CUDA GPU (faster on Ampere or '
                        'newer, less exact; default: off, true float32)')
    p.add_argument('--tile', type=int, default=None,
                   help='restore in tiles of this many pixels; 0: whole images, whatever their '
                        'size (default: whole if the estimated memory fits, else tiles chosen '
                        'to fit, said in one line; SPIKEDERAIN_MEMORY_BUDGET=4G sets the budget)')
    p.add_argument('--tile_overlap', type=int, default=None,
                   help='overlap between tiles in pixels, blended smoothly (default: 32; not '
                        'with --tile 0)')
    p.add_argument('--batch_size', type=int, default=1,
                   help='images (untiled, same size) or tiles (tiled) per forward pass '
                        '(default: %(default)s)')
    p.add_argument('--overwrite', action='store_true',
                   help='redo outputs that already exist (default: skip them)')
    p.add_argument('--exact', action='store_true',
                   help='run the plain reference forward (bit-identical to the official code) '
                        'instead of the default fast inference path (fused LIF, channels-last, '
                        'BN folding: several times faster on a CPU; it changes rounding, so a few '
                        'spikes may differ: checked >= 99.9%% spike agreement, PSNR within '
                        '0.05 dB). Models without a fast path always run the plain forward')
    p.add_argument('--fast', action='store_true', help=argparse.SUPPRESS)   # the default now
    p.add_argument('--precision', choices=('fp32', 'bf16', 'int8', 'int8+bf16'), default='fp32',
                   help='bf16: the fast path with bfloat16 convolutions (neuron state stays '
                        'float32), on CPUs with native bf16 only; faster but less faithful than '
                        'fp32 (measured 96-99%% spike agreement, up to 0.4 dB on the shipped '
                        'weights; docs/efficiency.md), so opt-in. int8 (--backend onnxruntime '
                        'or openvino): the convs whose inputs are spikes in int8 (spikes exact, '
                        'weights per channel), the rest fp32, or bf16 with int8+bf16 '
                        '(openvino) (default: %(default)s)')
    p.add_argument('--backend', choices=BACKENDS, default='torch',
                   help='onnxruntime / openvino: run the model exported to ONNX (exact path '
                        'maths, BN folded) in ONNX Runtime (fp32) or OpenVINO (fp32, or '
                        '--precision bf16) on the CPU; it is exported once per '
                        'weights into a cache ($SPIKEDERAIN_CACHE, default ~/.cache/spikederain;'
                        ' needs requirements-deploy.txt) (default: %(default)s)')
    p.add_argument('--no_progress', action='store_true', help='hide the progress bar')
    return p.parse_args(argv)


def data_name(data_path: Path) -> str:
    """The data set's name for the default save path (``Rain200L/test/input`` -> Rain200L)."""
    path = data_path.resolve()
    folder = path.parent if path.is_file() else path
    return next((p.name for p in (folder, *folder.parents)
                 if p.name and p.name.lower() not in _GENERIC_NAMES), 'images')


def load_model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    if args.weights:
        model = build_from_checkpoint(args.weights, args.model)
    else:                                       # --random_weights --model NAME (check_options)
        torch.manual_seed(0)
        model = build_model(args.model)
    return model.to(device).eval()


def check_save_path(save: Path, inputs: list[Path], input_dir: Path, target: Path | None,
                    weights: str | None) -> None:
    """Nothing test.py writes may be something it reads: inputs, targets (folder or file),
    the benchmark split's ``input/`` and ``target/`` (with or without ``--target_path``)."""
    if save.exists() and not save.is_dir():
        raise UsageError(f'--save_path {save}: exists and is not a folder')
    reads = [('input folder', input_dir)]
    reads += [(f'benchmark {f.name} folder', f) for f in split_folders(input_dir)]
    if target is not None:
        reads.append(('--target_path', target))
        reads += [(f'benchmark {f.name} folder', f)
                  for f in split_folders(target if target.is_dir() else target.parent)]
    if weights:
        reads.append(('--weights', weights))
    reads += [('input image', p) for p in inputs if p.parent != input_dir]
    check_writes([('--save_path', save)], reads,
                 files=[('output', output_path(save, p)) for p in inputs])


def recipe_of(args: argparse.Namespace, model: torch.nn.Module, path: str,
              device: torch.device, tiling: dict | None = None) -> dict:
    """What decides the outputs' pixels, recorded in the output folder's manifest."""
    backend = device.type + (', tf32' if args.tf32 and device.type == 'cuda' else '')
    if args.backend != 'torch':
        runtime = __import__(args.backend)
        backend = f'{args.backend} {runtime.__version__}, cpu'
    return output_recipe(model, args.weights, path=path, precision=args.precision,
                         backend=backend, tile=args.tile, tile_overlap=args.tile_overlap,
                         batch_size=args.batch_size, tiling=tiling)


def check_targets(inputs: list[Path], target: Path) -> None:
    """Every input has its target (an image) before the model is loaded."""
    if target.is_file() and not is_image_file(target):
        raise InputError(f'--target_path {target}: not an image file')
    pair_with_targets(inputs, target)


def evaluate(summary, target_path: str) -> None:
    """Evaluate this run's outputs (new and skipped) against the targets; print the means."""
    outputs = summary.restored + summary.skipped
    if not outputs:
        raise InputError('evaluation: no restored images to evaluate')
    _, means = evaluate_pairs(pair_with_targets(outputs, target_path))
    print(f'evaluated {means["images"]} images against {target_path} (Y channel, no crop): '
          f'{psnr_text(means)}, SSIM {means["ssim"]:.4f}{subset_note(summary, target_path)}')


def compare_without_targets(summary, inputs: list[Path], metrics: list[str]) -> None:
    """No-reference scores of this run's outputs (new and skipped) and of their rainy inputs."""
    outputs = sorted(summary.restored + summary.skipped, key=lambda p: p.stem)
    if not outputs:
        return
    by_stem = {p.stem: p for p in inputs}
    before, after = input_output_without_targets([(by_stem[o.stem], o) for o in outputs],
                                                 metrics)
    print(f'no-reference scores of {len(outputs)} images, rainy input -> output (lower is '
          f'better): {input_output_text(before, after, metrics)}')


def subset_note(summary, target_path: str) -> str:
    """What a mean over fewer images than asked for leaves out (failed inputs, unused targets)."""
    scored = len(summary.restored) + len(summary.skipped)
    words = []
    if summary.failed:
        words.append(f'{len(summary.failed)} input(s) failed and are not in the mean')
    tdir = target_folder(target_path)
    targets = len(list_images(tdir)) if tdir.is_dir() else 1
    if targets > scored + len(summary.failed):
        words.append(f'{targets - scored - len(summary.failed)} of the {targets} images in '
                     f'{tdir} have no input here and are not scored')
    return f' (over {scored} images only: {"; ".join(words)})' if words else ''


def check_options(args: argparse.Namespace) -> None:
    """What the command line alone gets wrong (exit 2), before any file is read."""
    if args.tile is not None and args.tile < 0:
        raise UsageError(f'--tile {args.tile}: must be >= 8, or 0 for whole images')
    if args.tile_overlap is not None and args.tile == 0:
        print(f'note: --tile_overlap {args.tile_overlap} has no effect with --tile 0 (whole '
              f'images are restored)', file=sys.stderr)
    args.tile_overlap = 32 if args.tile_overlap is None else args.tile_overlap
    args.tile = AUTO if args.tile is None else (None if args.tile == 0 else args.tile)
    try:
        check_tiling(None if args.tile == AUTO else args.tile, args.tile_overlap)
        if args.tile == AUTO and args.tile_overlap < 0:
            raise ValueError(f'--tile_overlap {args.tile_overlap}: must be >= 0')
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.batch_size < 1:
        raise UsageError(f'--batch_size {args.batch_size}: must be >= 1')
    try:
        args.no_reference = parse_metrics(args.no_reference or
                                          ('none' if args.target_path else 'all'))
    except ValueError as err:
        raise UsageError(f'--no_reference {err}') from None
    if not args.weights and not args.random_weights:
        raise UsageError('--weights is required (a model with random weights restores nothing); '
                         'pass --random_weights explicitly for a smoke test')
    if not args.weights and args.model is None:
        raise UsageError('--random_weights needs --model')
    if args.backend != 'torch':
        check_exported_backend(args)
        return
    if args.precision.startswith('int8'):
        raise UsageError(f'--precision {args.precision} runs in the exported graph: add '
                         f'--backend openvino (or onnxruntime for int8)')
    if args.precision == 'bf16' and args.exact:
        raise UsageError('--precision bf16 runs the fast path; it cannot be combined with --exact')
    if args.precision == 'bf16':
        from models.acceleration import bf16_supported
        if not bf16_supported():
            raise UsageError('--precision bf16: this CPU has no native bfloat16 convolutions '
                             '(AVX-512 BF16 or AMX); use the default fp32')


def check_exported_backend(args: argparse.Namespace) -> None:
    """ONNX Runtime runs the exported graph in fp32 or int8, OpenVINO in fp32, bf16, int8 or
    int8+bf16, on the CPU."""
    import importlib.util
    from models.onnx_runtime import PRECISIONS
    if args.precision not in PRECISIONS[args.backend]:
        raise UsageError(f'--precision {args.precision}: --backend {args.backend} runs '
                         f'{", ".join(PRECISIONS[args.backend])}')
    for option, used in (('--exact', args.exact), ('--tf32', args.tf32)):
        if used:
            raise UsageError(f'{option} is a torch setting; --backend {args.backend} runs the '
                             f'exported fp32 graph (the exact path, BN folded)')
    if args.device not in ('auto', 'cpu'):
        raise UsageError(f'--device {args.device}: --backend {args.backend} runs on the CPU')
    args.device = 'cpu'
    calibration = ('onnxruntime',) if args.precision.startswith('int8') else ()  # quantize.py
    for package in dict.fromkeys(('onnx', args.backend, *calibration)):
        if importlib.util.find_spec(package) is None:
            raise InputError(f'--backend {args.backend}: the package {package} is not installed '
                             f'(pip install -r requirements-deploy.txt)')
    if args.precision.endswith('bf16'):
        import openvino
        if 'BF16' not in openvino.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'):
            raise UsageError(f'--precision {args.precision}: OpenVINO reports no native '
                             f'bfloat16 on this CPU; use fp32 or int8')


def main(argv=None) -> int:
    with contextlib.ExitStack() as held:         # the output folder's lock, for the whole run
        args = parse_args(argv)
        args.command = command_line('test.py', argv)   # recorded in the manifest
        return restore_folder(args, held)


def restore_folder(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    check_options(args)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    configure_numerics(device, tf32=args.tf32)
    kernel = lif_kernel_report(device)                # CUDA only: which LIF kernel runs
    if kernel:
        print(kernel)
    inputs, input_dir = find_inputs(args.data_path)
    target = target_folder(args.target_path) if args.target_path else None
    if target is not None and not target.exists():
        raise InputError(f'--target_path {target}: no such file or folder')
    if target is not None:
        check_targets(inputs, target)
    model = load_model(args, device)
    path = 'exact path'
    if not args.exact and supports_fast_path(model):
        path = 'fast path' if args.precision == 'fp32' else 'fast path, bf16'
    elif not args.exact:
        path = 'plain path (this model has no fast path yet)'
    save = Path(args.save_path) if args.save_path else (
        Path('results') / model.model_name / data_name(Path(args.data_path)))
    check_save_path(save, inputs, input_dir, target, args.weights)
    if args.backend != 'torch':
        precision = '' if args.precision == 'fp32' else f', {args.precision}'
        path = f'onnx export (exact path, BN folded{precision})'
        sha = file_sha256(args.weights) if args.weights else 'random weights, seed 0'
        model = cached_export(model, sha, report=lambda line: print(line, file=sys.stderr),
                              runtime=args.backend, precision=args.precision)
    elif path.startswith('fast path'):
        model = optimize_for_inference(model, precision=args.precision)
    memory = memory_budget(device)   # a bad SPIKEDERAIN_MEMORY_BUDGET: one line, before work
    tiling = None
    if args.tile == AUTO:            # what automatic tiling will do, decided and recorded now
        tiling = planned_tiling(model, inputs, args.tile_overlap, args.batch_size, memory,
                                image_on_model_device=device.type == 'cpu')
    recipe = recipe_of(args, model, path.split(' (')[0].split(',')[0], device, tiling)
    save.mkdir(parents=True, exist_ok=True)
    check_writable(save)                        # a full or read-only disk: before any work
    held.enter_context(FolderLock(save, what='test.py run', option='another --save_path'))
    check_output_manifest(save, recipe, inputs, args.overwrite)
    remove_interrupted_writes(save, (p.stem for p in inputs))   # a killed run's temps
    write_manifest(save, recipe, overwriting=args.overwrite,
                   command=args.command)
    tiling = (f'tiles {args.tile}/{args.tile_overlap}' if isinstance(args.tile, int) else
              'whole images' if args.tile is None else
              f'whole images where they fit (memory budget {memory})')
    where = f'{args.backend} (cpu)' if args.backend != 'torch' else device
    print(f'{model.model_name} ({path}) on {where}, {tiling}: {len(inputs)} images from '
          f'{input_dir} '
          f'-> {save}')
    try:
        summary = restore_files(model, inputs, save, args.tile, args.tile_overlap,
                                args.batch_size, args.overwrite, progress=not args.no_progress,
                                memory=memory)
    except KeyboardInterrupt as stop:
        stop.detail = 'outputs written so far are complete; re-run to finish the rest'
        raise
    if args.overwrite:
        write_manifest(save, recipe, command=args.command)  # all this recipe's now
    print(f'restored {len(summary.restored)} images in {summary.seconds:.1f} s '
          f'({summary.images_per_second:.3g} images/s); skipped {len(summary.skipped)} existing'
          f'{" (use --overwrite to redo them)" if summary.skipped else ""}; '
          f'{len(summary.failed)} failed')
    problems = []
    if args.target_path:
        try:
            evaluate(summary, args.target_path)
        except (ValueError, OSError) as err:         # the outputs stay; say what failed
            problems.append(f'evaluation: {describe(err)}')
    if args.no_reference:
        try:
            compare_without_targets(summary, inputs, args.no_reference)
        except (ValueError, OSError) as err:         # the outputs stay; say what failed
            problems.append(f'no-reference scores: {describe(err)}')
    if summary.failed:
        problems.append(f'{len(summary.failed)} of {len(inputs)} images failed: '
                        f'{", ".join(str(p) for p, _ in summary.failed[:5])}'
                        f'{", ..." if len(summary.failed) > 5 else ""}')
    if problems:
        raise SpikeDerainError('; '.join(problems))
    return 0


if __name__ == '__main__':
    run_main(main, 'test.py')
