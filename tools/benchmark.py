"""Speed and peak memory of a model's inference and training step: plain path vs fast paths.

Times inference on one SIZExSIZE image and an Adam training step (batch B, patch P) after
warm-up, as the median of --runs rounds (one call of every variant per round, so load from
others on a shared machine hits all alike); in the same run times the model's convolutions alone
on channels-last tensors (the conv floor) and prints ``model time / conv floor``, and every fast
path's speed-up and peak-memory ratio (first call, fresh process) against the plain eager path.
``default`` is what ``test.py``/``train.py`` do with no flags; ``bf16`` runs the convs in bfloat16
(skipped, with a note, on CPUs without native bf16). ``--model all`` measures SpikeRain-S, ESDNet
and VLIF-Net one after another and ends with one summary table.
Example: ``python tools/benchmark.py --model all --size 256``
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
from tqdm import tqdm

from models import available_models, build_model
from models.acceleration import bf16_supported, supports_fast_path
from utils.efficiency.benchmark import (INFERENCE_VARIANTS, LIVE_MEMORY_ENV, NEEDS_FAST_FORWARD,
                                        TRAINING_VARIANTS, BF16_FLOOR, Job, cpu_description,
                                        cpu_line,
                                        interleaved_times, peak_memory, run_isolated)
from utils.core.atomic import check_output_file, write_text_atomic
from utils.core.cli import ArgumentParser, describe, print_error, run_main
from utils.core.errors import UsageError

ALL_MODELS = ('spikerain-s', 'esdnet', 'vlif-net')     # --model all


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--model', default='spikerain-s',
                   help=f'registered model name, or all ({", ".join(ALL_MODELS)})')
    p.add_argument('--size', type=int, default=256, help='inference image side')
    p.add_argument('--batch', type=int, default=4, help='training batch size')
    p.add_argument('--patch', type=int, default=64, help='training patch side')
    p.add_argument('--runs', type=int, default=5, help='timed rounds (median per variant)')
    p.add_argument('--warmup', type=int, default=1, help='untimed runs before timing')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                   help='auto: the CPU, and CUDA too when present')
    p.add_argument('--inference', nargs='*', default=list(INFERENCE_VARIANTS),
                   help=f'inference variants ({", ".join(INFERENCE_VARIANTS)}); none to skip')
    p.add_argument('--training', nargs='*', default=list(TRAINING_VARIANTS),
                   help=f'training variants ({", ".join(TRAINING_VARIANTS)}); none to skip')
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> list[str]:
    """The devices to run on; raises ValueError naming the bad option."""
    if args.model != 'all' and args.model not in available_models():
        raise ValueError(f'--model {args.model!r}: unknown; choose one of '
                         f'all, {", ".join(available_models())}')
    fast_variants = NEEDS_FAST_FORWARD & set(args.inference + args.training)
    for name in model_names(args):
        if fast_variants and not supports_fast_path(build_model(name)):
            raise ValueError(f'--model {name}: no fast path for this model (it defines no '
                             f'fast_forward); measure only plain/default')
    for opt in ('size', 'batch', 'patch', 'runs'):
        if getattr(args, opt) < 1:
            raise ValueError(f'--{opt} must be >= 1')
    if args.size < 8 or args.patch < 8:
        raise ValueError('--size and --patch must be at least 8')
    if args.warmup < 0 or args.threads < 0:
        raise ValueError('--warmup and --threads must be >= 0')
    for opt, known in (('inference', INFERENCE_VARIANTS), ('training', TRAINING_VARIANTS)):
        bad = [v for v in getattr(args, opt) if v not in known]
        if bad:
            raise ValueError(f'--{opt}: unknown variant(s) {bad}; choose from {", ".join(known)}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise ValueError('--device cuda: no CUDA device available')
    default = parse_args([])             # an option set away from its default had an effect
    for opt, idle in (('training', ('batch', 'patch')), ('inference', ('size',))):
        changed = [f'--{o} {getattr(args, o)}' for o in idle
                   if getattr(args, o) != getattr(default, o)]
        if changed and not getattr(args, opt):
            raise UsageError(f'{", ".join(changed)}: no effect without --{opt} variants (--{opt} '
                             f'is empty)')
    check_output_file('--json', args.json)           # before the benchmark, not after it
    devices = ['cpu'] if args.device in ('auto', 'cpu') else []
    if args.device == 'cuda' or (args.device == 'auto' and torch.cuda.is_available()):
        devices.append('cuda')
    return devices


def model_names(args: argparse.Namespace) -> list[str]:
    return list(ALL_MODELS) if args.model == 'all' else [args.model]


def _job(args, model, task, variant, device) -> Job:
    return Job(task, model, variant, args.size, args.batch, args.patch, args.runs,
               args.warmup, args.threads, device)


def runnable_variants(variants: list[str], device: str) -> tuple[list[str], list[str]]:
    """The variants that can run on ``device``, and one note per variant left out."""
    if 'bf16' in variants and (device != 'cpu' or not bf16_supported()):
        where = 'this CPU has no native bf16' if device == 'cpu' else 'bf16 is a CPU path'
        return [v for v in variants if v != 'bf16'], [f'note: bf16 skipped on {device} ({where})']
    return list(variants), []


def measure(args: argparse.Namespace, model: str, device: str) -> dict:
    """Peak memory of every variant (each in a fresh process), then the times of all of them
    together in one fresh process, in rounds."""
    plan = []
    for task, variants in (('inference', args.inference), ('training', args.training)):
        variants, notes = runnable_variants(variants, device)
        for note in notes:
            print(note, file=sys.stderr)
        if variants:
            plan += [(f'floor_{task}', 'conv_floor')] + [(task, v) for v in variants]
        if task == 'inference' and 'bf16' in variants:      # the convs' own bf16 gain
            plan.append(('floor_inference', BF16_FLOOR))
    jobs = [_job(args, model, task, variant, device) for task, variant in plan]
    results = {}
    for key, job in zip(tqdm(plan, desc=f'peak memory on {device}', leave=False), jobs):
        results[key] = run_isolated(peak_memory, job, what=f'{job.task} {job.variant}')
        if device == 'cpu' and not key[0].startswith('floor'):   # on a GPU peak is live
            live = run_isolated(peak_memory, job, what=f'{job.task} {job.variant} (live)',
                                env=LIVE_MEMORY_ENV)
            results[key]['live_bytes'] = live['peak_bytes']
    print(f'timing {len(jobs)} measurements in rounds on {device}...', file=sys.stderr)
    for key, timing in zip(plan, run_isolated(interleaved_times, jobs, what='timing')):
        results[key].update(timing)
    return results


def _mb(nbytes: int) -> str:
    return f'{nbytes / 2 ** 20:,.0f}'


def report(args, device: str, results: dict, model: str = '') -> list[str]:
    lines = [f'\n== {model} ==' ] if model else []
    sections = [('inference', f'inference, 1x3x{args.size}x{args.size}', INFERENCE_VARIANTS),
                ('training', f'training step (Adam), batch {args.batch}, patch {args.patch}',
                 TRAINING_VARIANTS)]
    for task, title, described in sections:
        variants = [v for (t, v) in results if t == task]
        if not variants:
            continue
        floor = results[(f'floor_{task}', 'conv_floor')]
        base = results.get((task, 'plain'))
        lines.append(f'\n{title} on {device} ({floor["threads"]} threads); conv floor '
                     f'{floor["median_s"]:.3f} s over {floor["conv_calls"]} conv calls '
                     f'(channels-last{", forward+backward" if task == "training" else ""})')
        live = any('live_bytes' in results[(task, v)] for v in variants)
        head = (f'  {"variant":<16}{"median s":>10}{"/ floor":>9}{"speed-up":>10}'
                f'{"peak MB":>10}{"mem ratio":>11}' + (f'{"live MB":>9}{"live ratio":>12}'
                                                       if live else ''))
        lines += [head, '  ' + '-' * (len(head) - 2)]
        for v in variants:
            r = results[(task, v)]
            speed = f'{base["median_s"] / r["median_s"]:.2f}x' if base else '-'
            row = (f'  {v:<16}{r["median_s"]:>10.3f}{r["median_s"] / floor["median_s"]:>9.2f}'
                   f'{speed:>10}{_mb(r["peak_bytes"]):>10}{_ratio(r, base, "peak_bytes"):>11}')
            if live:
                row += (f'{_mb(r.get("live_bytes", 0)):>9}'
                        f'{_ratio(r, base, "live_bytes"):>12}')
            lines.append(row)
        lines += [f'    {v}: {described[v]}' for v in variants]
        if live:
            lines.append('    peak MB: the process high-water mark under the default malloc; '
                         'live MB: the same with every block of 128 KiB or more mapped on its '
                         'own, i.e. the tensors alive at the peak (what a GPU reports)')
    return lines


def _ratio(r: dict, base: dict | None, key: str) -> str:
    return f'{r[key] / base[key]:.2f}' if base and base.get(key) and key in r else '-'


def summary(args, device: str, per_model: dict) -> list[str]:
    """One row per model: each inference variant's time / fp32 conv floor, and the training
    variants' speed-up and peak-memory ratio against the plain path."""
    inf = [v for v in ('plain', 'default', 'fast', 'bf16') if any(
        ('inference', v) in r for r in per_model.values())]
    train = [v for v in ('default', 'fast') if any(('training', v) in r
                                                   for r in per_model.values())]
    lines = [f'\nsummary on {device}: inference 1x3x{args.size}x{args.size} as time / fp32 conv '
             f'floor; training step (batch {args.batch}, patch {args.patch}) as speed-up and peak '
             f'memory vs plain' + ('; bf16 gain: default / bf16 time, convs: the same for the '
                                   'convs alone, share: the first / the second' if 'bf16' in inf
                                   and 'default' in inf else '')]
    bf16 = 'bf16' in inf and 'default' in inf
    head = f'  {"model":<14}{"floor s":>9}' + ''.join(f'{v:>10}' for v in inf)
    head += f'{"bf16 gain":>11}{"convs":>7}{"share":>7}' if bf16 else ''
    head += ''.join(f'{"train " + v:>16}{"mem":>6}{"live":>6}' for v in train)
    lines += [head, '  ' + '-' * (len(head) - 2)]
    for model, r in per_model.items():
        row = f'  {model:<14}'
        floor = r.get(('floor_inference', 'conv_floor'))
        row += f'{floor["median_s"]:>9.3f}' if floor else f'{"-":>9}'
        for v in inf:
            got = r.get(('inference', v))
            ratio = f'{got["median_s"] / floor["median_s"]:.2f}x' if got and floor else '-'
            row += f'{ratio:>10}'
        if bf16:
            row += _bf16_gains(r)
        base = r.get(('training', 'plain'))
        for v in train:
            got = r.get(('training', v))
            if got and base:
                row += (f'{base["median_s"] / got["median_s"]:>15.2f}x'
                        f'{_ratio(got, base, "peak_bytes"):>6}{_ratio(got, base, "live_bytes"):>6}')
            else:
                row += f'{"-":>16}{"-":>6}{"-":>6}'
        lines.append(row)
    return lines


def _bf16_gains(r: dict) -> str:
    """default / bf16 time, the same for the convs alone, and the first as a share of the second
    (how much of what bf16 convs offer the whole model keeps)."""
    model = [r.get(('inference', v)) for v in ('default', 'bf16')]
    convs = [r.get(('floor_inference', v)) for v in ('conv_floor', BF16_FLOOR)]
    if not all(model + convs):
        return f'{"-":>11}{"-":>7}{"-":>7}'
    gain = model[0]['median_s'] / model[1]['median_s']
    conv_gain = convs[0]['median_s'] / convs[1]['median_s']
    return f'{gain:>10.2f}x{conv_gain:>6.2f}x{gain / conv_gain:>7.0%}'


def write_json(path: str, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        devices = check_args(args)
    except ValueError as err:
        print_error(describe(err), 'benchmark.py')
        return 2
    cpu = cpu_description()
    print(f'{args.model}: torch {torch.__version__}, CPU {cpu_line(cpu)}; median of {args.runs} '
          f'rounds after {args.warmup} warm-up. On a shared machine compare ratios within one '
          f'run, and timings only between runs on the same CPU kind.')
    out = {}
    for device in devices:
        per_model = {}
        for model in model_names(args):
            try:
                results = measure(args, model, device)
            except RuntimeError as err:
                print_error(describe(err), 'benchmark.py')
                return 1
            print('\n'.join(report(args, device, results, model)))
            per_model[model] = results
            out.setdefault(device, {})[model] = {f'{t}/{v}': r for (t, v), r in results.items()}
        print('\n'.join(summary(args, device, per_model)))
    if args.json:
        write_json(args.json, {'model': args.model, 'cpu': cpu, 'size': args.size,
                               'batch': args.batch,
                               'patch': args.patch, 'results': out})
        print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    run_main(main, 'benchmark.py')
