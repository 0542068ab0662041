"""The results table in one command: every benchmark under a data root, for one or more weights.

``python tools/paper_table.py --data_root data --weights runs/a/model_best.pth --weights esdnet.pth
--model auto --model esdnet --energy_model papers``

Benchmarks are the folders under ``--data_root`` holding ``test/input`` (or ``input``); the
papers' names come first in the papers' order (Rain200L, Rain200H, Rain1200, Rain12, RW_Rain),
others follow. Each weights file restores each benchmark into
``--save_root/<model>-<weights hash>/<benchmark>/``; outputs already there are reused, so an
interrupted run resumes (the hash makes retrained weights start afresh). Benchmarks with a
``target`` folder are scored by the published protocol with the functions evaluation.py uses;
the others (RW_Rain has no ground truth) by the no-reference scores NIQE, BRISQUE and PIQE of the
restored images (lower is better; the rainy inputs' scores are in the notes), as evaluation.py
without --target_path gives them. Params, GMACs and energy come from utils/efficiency/energy.py
under ``--energy_model``. The table is printed
(Markdown by default) and written as ``paper_table.{md,csv,tex,json}`` in ``--save_root``.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from models import available_models, build_from_checkpoint, is_ann_twin
from models.acceleration import optimize_for_inference, supports_fast_path
from utils.core.atomic import write_text_atomic
from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import InputError, UsageError
from utils.data.datasets import DATASET_PRESETS
from utils.efficiency.energy import ENERGY_CONVENTIONS, energy_report
from utils.data.image_io import (list_images, read_image_tensor, remove_interrupted_writes)
from utils.core.device import resolve_device
from utils.eval.folders import (evaluate_pair, evaluate_without_targets, mean_metrics,
                                no_reference_text, pair_with_targets)
from utils.eval.noreference import LABELS, parse_metrics
from utils.core.lock import FolderLock
from utils.inference.outputs import (check_output_manifest, find_inputs, output_path,
                                     output_recipe, restore_files, write_manifest)
from utils.inference.tiling import check_tiling

TABLE_NAME = 'paper_table'


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data_root', required=True,
                   help='folder holding the benchmarks (NAME/test/input, NAME/test/target)')
    p.add_argument('--weights', action='extend', nargs='+', required=True,
                   help='checkpoint(s), ours or official (repeatable)')
    p.add_argument('--model', action='extend', nargs='+', default=None,
                   help='model name for the weights: once for all, or once per --weights; '
                        '"auto" for our checkpoints (they record it); official ones need it '
                        f'({", ".join(available_models())})')
    p.add_argument('--datasets', nargs='+', default=None,
                   help='only these benchmarks (names as found under --data_root)')
    p.add_argument('--save_root', default='results/paper_table',
                   help='restored images and the table files go here')
    p.add_argument('--no_reference', default='all', metavar='METRICS',
                   help='no-reference scores of benchmarks without ground truth (lower is '
                        'better): niqe, brisque, piqe (comma-separated), all or none (restored, '
                        'not scored). About 0.3 s per metric per megapixel on a CPU; images too '
                        'small for a metric (NIQE: 192x96) are left out of its mean')
    p.add_argument('--energy_model', choices=sorted(ENERGY_CONVENTIONS), default='papers',
                   help='energy convention (utils/efficiency/energy.py)')
    p.add_argument('--size', type=int, default=None,
                   help="input side for MACs/energy (default: the convention's, 128 or 256)")
    p.add_argument('--rate_images', type=int, default=4,
                   help='firing rates are measured on this many inputs of the first benchmark')
    p.add_argument('--format', choices=('md', 'csv', 'latex', 'all'), default='md',
                   help='what to print (all three are always written to --save_root)')
    p.add_argument('--device', default='auto', help='auto, cpu or cuda')
    p.add_argument('--tile', type=int, default=None, help='restore in tiles of this size')
    p.add_argument('--tile_overlap', type=int, default=None,
                   help='overlap between tiles (default: 32; only with --tile)')
    p.add_argument('--batch_size', type=int, default=1, help='images or tiles per forward')
    p.add_argument('--fast', action='store_true',
                   help='fast inference path where the model has one (see test.py --fast)')
    p.add_argument('--overwrite', action='store_true',
                   help='redo outputs made with another recipe (weights, path, tiling, ...) '
                        'instead of refusing them')
    p.add_argument('--no_progress', action='store_true', help='hide the progress bar')
    return p.parse_args(argv)


# --- What to run ------------------------------------------------------------------------------

@dataclass
class Benchmark:
    name: str
    inputs: list[Path]
    input_dir: Path
    target: Path | None          # None: no ground truth, scored by the no-reference metrics


def _split_of(folder: Path) -> Path | None:
    """The folder holding ``input/`` for a benchmark folder (its ``test/``, or itself)."""
    for split in (folder / 'test', folder):
        if (split / 'input').is_dir():
            return split
    return None


def find_benchmarks(root: str | Path, only: list[str] | None = None) -> list[Benchmark]:
    """Benchmarks under ``root`` (or ``root`` itself if it is one), the papers' ones first."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f'--data_root {root}: folder not found')
    folders = [root] if _split_of(root) else [d for d in root.iterdir() if d.is_dir()
                                              and _split_of(d)]
    for d in ([] if _split_of(root) else sorted(root.iterdir())):
        if d.is_dir() and (d / 'test').is_dir() and not _split_of(d):
            print(f'note: {d}: has test/ but no test/input, so it is not in the table '
                  f'(convert it with dataset_load.py prepare)', file=sys.stderr)
    order = {name.lower(): i for i, name in enumerate(DATASET_PRESETS)}
    folders.sort(key=lambda d: (order.get(d.name.lower(), len(order)), d.name.lower()))
    if only is not None:
        wanted = {n.lower() for n in only}
        missing = [n for n in only if n.lower() not in {d.name.lower() for d in folders}]
        if missing:
            raise InputError(f'--datasets: {", ".join(missing)} not found under {root} '
                             f'(found: {", ".join(d.name for d in folders) or "none"})')
        folders = [d for d in folders if d.name.lower() in wanted]
    out = []
    for folder in folders:
        split = _split_of(folder)
        inputs, input_dir = find_inputs(split)
        target = split / 'target'
        has_target = target.is_dir() and bool(list_images(target))
        if target.is_dir() and not has_target:
            print(f'note: {target}: no images, so {folder.name} is restored but not scored',
                  file=sys.stderr)
        out.append(Benchmark(folder.name, inputs, input_dir, target if has_target else None))
    if not out:
        raise InputError(f'--data_root {root}: no benchmark found (expected NAME/test/input)')
    return out


def file_hash(path: Path) -> str:
    """First 8 hex digits of the file's SHA-256: a new checkpoint gets new output folders."""
    h = hashlib.sha256()
    with open(path, 'rb') as fh:
        for block in iter(lambda: fh.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()[:8]


def model_names(args: argparse.Namespace) -> list[str | None]:
    names = args.model or ['auto']
    if len(names) not in (1, len(args.weights)):
        raise UsageError(f'--model: give one name for all weights or one per --weights '
                         f'({len(args.weights)}), got {len(names)}')
    names = names * len(args.weights) if len(names) == 1 else names
    for n in names:
        if n != 'auto' and n not in available_models():
            raise UsageError(f'--model {n}: unknown; choose auto or one of '
                             f'{", ".join(available_models())}')
    return [None if n == 'auto' else n for n in names]


# --- Per weights: complexity, then every benchmark ----------------------------------------

@dataclass
class Result:
    benchmark: str
    images: int
    restored: int
    reused: int
    failed: int
    save_dir: str
    psnr: float | None = None
    ssim: float | None = None
    niqe: float | None = None    # no-reference means of the outputs (no ground truth)
    brisque: float | None = None
    piqe: float | None = None
    no_reference: dict = field(default_factory=dict)   # the means, with images per metric
    inputs_no_reference: dict = field(default_factory=dict)   # the same of the rainy inputs
    recipe: dict = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        """Scored against targets (PSNR/SSIM)."""
        return self.psnr is not None

    @property
    def no_reference_scored(self) -> bool:
        return bool(self.no_reference)


@dataclass
class Entry:
    label: str
    weights: str
    model_name: str
    save_dir: Path
    complexity: dict = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)


def complexity(model, bench: Benchmark, args, cache: Path) -> dict:
    """Params, GMACs, energy under the chosen convention (cached beside the outputs)."""
    conv = ENERGY_CONVENTIONS[args.energy_model]
    size = args.size or conv.size
    files = bench.inputs[:max(args.rate_images, 1)]
    key = dict(energy_model=conv.name, size=size, rate_images=[str(f) for f in files])
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get('key') == key:
            return saved['value']
    report = energy_report(model, [read_image_tensor(f) for f in files], (size, size), conv)
    value = dict(params=report.params, gmacs=report.macs / 1e9, energy_mj=report.energy_mj,
                 sops_g=report.sops / 1e9, spikes_m=report.spikes / 1e6,
                 firing_rate=report.mean_firing_rate, size=size,
                 rates_from=f'{len(files)} images of {bench.name}')
    write_text_atomic(cache, json.dumps(dict(key=key, value=value), indent=1) + '\n')
    return value


def run_benchmark(model, bench: Benchmark, save: Path, args, bar: tqdm,
                  recipe: dict | None = None, input_scores: dict | None = None) -> Result:
    """Restore (reusing complete outputs only if ``recipe`` made them) and score one benchmark;
    the bar counts images. ``input_scores`` caches the rainy inputs' no-reference means per
    benchmark (they do not depend on the weights)."""
    save.mkdir(parents=True, exist_ok=True)
    if recipe is not None:
        check_output_manifest(save, recipe, bench.inputs, args.overwrite, option='--save_root')
        write_manifest(save, recipe, overwriting=args.overwrite)
    remove_interrupted_writes(save, (p.stem for p in bench.inputs))
    restored, reused, failed = 0, 0, []
    step = args.batch_size if args.tile is None else 1
    for i in range(0, len(bench.inputs), step):
        chunk = bench.inputs[i:i + step]
        summary = restore_files(model, chunk, save, args.tile, args.tile_overlap,
                                args.batch_size, overwrite=args.overwrite, progress=False,
                                report=bar.write)
        restored += len(summary.restored)
        reused += len(summary.skipped)
        failed += [p for p, _ in summary.failed]
        bar.update(len(chunk))
    if recipe is not None and args.overwrite:
        write_manifest(save, recipe)                # every output is now this recipe's
    result = Result(bench.name, len(bench.inputs), restored, reused, len(failed), str(save),
                    recipe=recipe or {})
    if bench.target is not None:
        outputs = [output_path(save, p) for p in bench.inputs if p not in failed]
        rows = []
        for out, tgt in pair_with_targets(outputs, bench.target):
            rows.append(evaluate_pair(out, tgt))
            bar.update(1)
        bar.update(len(failed))
        if rows:
            means = mean_metrics(rows)
            result.psnr, result.ssim = means['psnr'], means['ssim']
    elif args.no_reference:
        outputs = [output_path(save, p) for p in bench.inputs if p not in failed]
        if outputs:
            _, means = evaluate_without_targets(outputs, args.no_reference, skip_small=True)
            result.no_reference = _finite(means)
            for m in args.no_reference:
                setattr(result, m, result.no_reference.get(m))
            cache = {} if input_scores is None else input_scores
            if bench.name not in cache:
                _, before = evaluate_without_targets(bench.inputs, args.no_reference,
                                                     skip_small=True)
                cache[bench.name] = _finite(before)
            result.inputs_no_reference = cache[bench.name]
        bar.update(len(bench.inputs))
    return result


def _finite(means: dict) -> dict:
    """Means as JSON holds them: a metric no image could be scored by becomes None."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in means.items()}


def _no_reference_text(means: dict, metrics: list[str]) -> str:
    return no_reference_text({k: (float('nan') if v is None else v) for k, v in means.items()},
                             metrics)


def summary_line(entry: Entry, r: Result) -> str:
    done = (f'{r.images} images ({r.restored} restored, {r.reused} reused'
            f'{f", {r.failed} FAILED" if r.failed else ""}) in {r.save_dir}')
    metrics = [m for m in LABELS if m in r.no_reference]
    score = (f'PSNR {r.psnr:.4f} dB, SSIM {r.ssim:.4f}' if r.scored else
             f'no ground truth, no-reference (lower is better): '
             f'{_no_reference_text(r.no_reference, metrics)}; rainy inputs: '
             f'{_no_reference_text(r.inputs_no_reference, metrics)}'
             if r.no_reference_scored else 'no ground truth: restored, not scored')
    return f'{r.benchmark} | {entry.label}: {score}; {done}'


# --- Tables ------------------------------------------------------------------------------------

def _scored_names(entries: list[Entry]) -> list[str]:
    names = []
    for e in entries:
        names += [r.benchmark for r in e.results if r.scored and r.benchmark not in names]
    return names


def _no_reference_names(entries: list[Entry]) -> list[str]:
    names = []
    for e in entries:
        names += [r.benchmark for r in e.results
                  if r.no_reference_scored and r.benchmark not in names]
    return names


def _metrics(entries: list[Entry]) -> list[str]:
    """The no-reference metrics the table shows, in their order."""
    found = {m for e in entries for r in e.results for m in r.no_reference}
    return [m for m in LABELS if m in found]


def _cell(e: Entry, name: str) -> tuple[str, str]:
    r = next((r for r in e.results if r.benchmark == name), None)
    if r is None or not r.scored:
        return '-', '-'
    mark = '*' if r.failed else ''
    return f'{r.psnr:.2f}{mark}', f'{r.ssim:.4f}{mark}'


def _no_reference_cells(e: Entry, name: str, metrics: list[str]) -> list[str]:
    r = next((r for r in e.results if r.benchmark == name), None)
    if r is None or not r.no_reference_scored:
        return ['-'] * len(metrics)
    mark = '*' if r.failed else ''
    return ['-' if r.no_reference.get(m) is None else f'{r.no_reference[m]:.2f}{mark}'
            for m in metrics]


def notes(entries: list[Entry], args) -> list[str]:
    conv = ENERGY_CONVENTIONS[args.energy_model]
    size = args.size or conv.size
    lines = [f'PSNR (dB) / SSIM on Y (MATLAB rgb2ycbcr, rounded), no crop: the published '
             f'protocol (utils/eval/metrics.py). GMACs and energy for one {size}x{size} forward; '
             f'{conv.formula()} (convention {conv.name!r}, utils/efficiency/energy.py; its source '
             f'is in '
             f'{TABLE_NAME}.json).']
    metrics = _metrics(entries)
    if metrics:
        lines.append(f'{"/".join(LABELS[m] for m in metrics)}: no-reference scores of the '
                     f'restored images where there is no ground truth, lower is better (NIQE: '
                     f'Mittal et al. 2013; BRISQUE: Mittal et al. 2012; PIQE: Venkatanath N et '
                     f'al. 2015). They follow people\'s judgement only loosely; read them next '
                     f'to the pictures (docs/protocol.md).')
    unscored, inputs = {}, {}
    for e in entries:
        for r in e.results:
            if not r.scored and not r.no_reference_scored:
                unscored.setdefault(r.benchmark, r.images)
            if r.no_reference_scored:
                inputs.setdefault(r.benchmark, r.inputs_no_reference)
                small = [f'{LABELS[m]} over {r.no_reference[f"{m}_images"]}' for m in metrics
                         if f'{m}_images' in r.no_reference]
                if small:
                    lines.append(f'{e.label} on {r.benchmark}: of {r.no_reference["images"]} '
                                 f'images, {", ".join(small)} (the others are too small or '
                                 f'flat for the metric).')
            if r.failed:
                lines.append(f'* {e.label} on {r.benchmark}: {r.failed} of {r.images} images '
                             f'failed to restore; the mean is over the others.')
    for name, means in inputs.items():
        lines.append(f'{name} rainy inputs: {_no_reference_text(means, metrics)}.')
    for name, n in unscored.items():
        lines.append(f'{name}: {n} images restored, not scored (no ground truth).')
    return lines


def _head(e: Entry) -> list[str]:
    c = e.complexity
    return [e.label, f'{c["params"] / 1e6:.3f}', f'{c["gmacs"]:.2f}', f'{c["energy_mj"]:.3f}']


def markdown_table(entries: list[Entry], args) -> str:
    names, blind, metrics = _scored_names(entries), _no_reference_names(entries), _metrics(entries)
    label = '/'.join(LABELS[m] for m in metrics)
    head = ['Model', 'Params (M)', 'GMACs', 'Energy (mJ)'] + [f'{n} PSNR/SSIM' for n in names] \
        + [f'{n} {label} (lower is better)' for n in blind]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for e in entries:
        cells = ['/'.join(_cell(e, n)) for n in names] + \
            ['/'.join(_no_reference_cells(e, n, metrics)) for n in blind]
        lines.append('| ' + ' | '.join(_head(e) + cells) + ' |')
    return '\n'.join(lines + [''] + notes(entries, args))


def _tex(text: str) -> str:
    return text.replace('\\', '\\textbackslash{}').replace('_', '\\_').replace('%', '\\%') \
        .replace('&', '\\&').replace('#', '\\#')


def latex_table(entries: list[Entry], args) -> str:
    """A booktabs tabular: PSNR and SSIM columns under each benchmark with targets, the
    no-reference scores under each without."""
    names, blind, metrics = _scored_names(entries), _no_reference_names(entries), _metrics(entries)
    cols = 'lrrr' + 'cc' * len(names) + 'c' * len(metrics) * len(blind)
    top = ['Model', 'Params (M)', 'GMACs', 'Energy (mJ)'] + \
        [f'\\multicolumn{{2}}{{c}}{{{_tex(n)}}}' for n in names] + \
        [f'\\multicolumn{{{len(metrics)}}}{{c}}{{{_tex(n)}}}' for n in blind]
    sub = [''] * 4 + ['PSNR', 'SSIM'] * len(names) + \
        [f'{LABELS[m]}$\\downarrow$' for m in metrics] * len(blind)
    lines = ['% ' + line for line in notes(entries, args)]
    lines += [f'\\begin{{tabular}}{{{cols}}}', '\\toprule', ' & '.join(top) + ' \\\\',
              ' & '.join(sub) + ' \\\\', '\\midrule']
    for e in entries:
        cells = [x for n in names for x in _cell(e, n)] + \
            [x for n in blind for x in _no_reference_cells(e, n, metrics)]
        lines.append(' & '.join(map(_tex, _head(e) + cells)) + ' \\\\')
    lines += ['\\bottomrule', '\\end{tabular}']
    return '\n'.join(lines)


CSV_FIELDS = ('model', 'weights', 'benchmark', 'images', 'psnr', 'ssim', 'niqe', 'brisque',
              'piqe', 'failed', 'params', 'gmacs', 'energy_mj', 'energy_model', 'size',
              'restored_dir')


def csv_table(entries: list[Entry], args) -> str:
    """One row per weights x benchmark (empty PSNR/SSIM where there is no ground truth, empty
    NIQE/BRISQUE/PIQE where there is)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(CSV_FIELDS)
    for e in entries:
        c = e.complexity
        for r in e.results:
            scores = [getattr(r, k) for k in ('psnr', 'ssim', 'niqe', 'brisque', 'piqe')]
            writer.writerow([e.label, e.weights, r.benchmark, r.images,
                             *('' if v is None else repr(v) for v in scores), r.failed,
                             c['params'],
                             repr(c['gmacs']), repr(c['energy_mj']), args.energy_model,
                             c['size'], r.save_dir])
    return buf.getvalue()


def write_tables(entries: list[Entry], args) -> dict[str, str]:
    root = Path(args.save_root)
    texts = {'md': markdown_table(entries, args) + '\n', 'csv': csv_table(entries, args),
             'latex': latex_table(entries, args) + '\n'}
    for fmt, ext in (('md', 'md'), ('csv', 'csv'), ('latex', 'tex')):
        write_text_atomic(root / f'{TABLE_NAME}.{ext}', texts[fmt])
    doc = dict(energy_model=args.energy_model,
               energy_convention=asdict(ENERGY_CONVENTIONS[args.energy_model]),
               entries=[dict(label=e.label, weights=e.weights, model=e.model_name,
                             complexity=e.complexity,
                             results=[asdict(r) for r in e.results]) for e in entries])
    write_text_atomic(root / f'{TABLE_NAME}.json', json.dumps(doc, indent=1) + '\n')
    return texts


# --- Main --------------------------------------------------------------------------------------

def load(path: Path, name: str | None, device: torch.device):
    if not path.is_file():
        raise InputError(f'--weights {path}: file not found')
    return build_from_checkpoint(path, name).to(device).eval()


def save_folder(args, label: str, weights: Path) -> Path:
    """``--save_root/<model>-<weights hash>``: retrained weights get new folders."""
    return Path(args.save_root) / f'{label.split(" ")[0].replace("/", "-")}-{file_hash(weights)}'


def recipe_for(model, weights: Path, args, device: torch.device) -> dict:
    """The recipe of this run's outputs (checked against, and recorded beside, each folder)."""
    fast = args.fast and supports_fast_path(model)
    return output_recipe(model, weights, path='fast path' if fast else 'exact path',
                         backend=device.type, tile=args.tile, tile_overlap=args.tile_overlap,
                         batch_size=args.batch_size)


def main(argv=None) -> int:
    with contextlib.ExitStack() as held:          # --save_root's lock, for the whole run
        return make_table(parse_args(argv), held)


def make_table(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    if args.tile_overlap is not None and args.tile is None:
        print(f'note: --tile_overlap {args.tile_overlap} has no effect without --tile (whole '
              f'images are restored)', file=sys.stderr)
    args.tile_overlap = 32 if args.tile_overlap is None else args.tile_overlap
    try:
        check_tiling(args.tile, args.tile_overlap)
        device = resolve_device(args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.batch_size < 1 or args.rate_images < 1:
        raise UsageError('--batch_size and --rate_images must be >= 1')
    if args.size is not None and args.size < 8:
        raise UsageError(f'--size {args.size}: must be at least 8')
    try:
        args.no_reference = parse_metrics(args.no_reference)
    except ValueError as err:
        raise UsageError(f'--no_reference {err}') from None
    names = model_names(args)
    benchmarks = find_benchmarks(args.data_root, args.datasets)
    weights = [Path(w) for w in args.weights]
    models = [load(w, n, device) for w, n in zip(weights, names)]
    labels = [m.model_name + ('/relu' if is_ann_twin(m) else '') for m in models]
    labels = [f'{lab} ({w.stem})' if labels.count(lab) > 1 else lab
              for lab, w in zip(labels, weights)]
    held.enter_context(FolderLock(args.save_root, what='paper_table.py run',
                                  option='another --save_root'))
    recipes = [recipe_for(model, w, args, device) for w, model in zip(weights, models)]
    for w, label, recipe in zip(weights, labels, recipes):      # refused before any work
        for bench in benchmarks:
            check_output_manifest(save_folder(args, label, w) / bench.name, recipe, bench.inputs,
                                  args.overwrite, option='--save_root')
    print(f'{len(weights)} weights x {len(benchmarks)} benchmarks '
          f'({", ".join(b.name for b in benchmarks)}) on {device} -> {args.save_root}')
    scores = bool(args.no_reference)
    total = sum(len(b.inputs) * (2 if b.target or scores else 1) for b in benchmarks) * \
        len(models)
    entries, status, input_scores = [], 0, {}
    with tqdm(total=total, unit='img', disable=args.no_progress, dynamic_ncols=True) as bar:
        for w, model, label, recipe in zip(weights, models, labels, recipes):
            save = save_folder(args, label, w)
            entry = Entry(label, str(w), model.model_name, save)
            bar.set_description(f'{label}: complexity')
            entry.complexity = complexity(model, benchmarks[0], args,
                                          save / f'complexity-{args.energy_model}.json')
            if args.fast and recipe['path'] != 'fast path':
                bar.write(f'note: --fast: no fast path for {label}; using the plain one')
            if recipe['path'] == 'fast path':
                model = optimize_for_inference(model)
            for bench in benchmarks:
                bar.set_description(f'{label}: {bench.name}')
                result = run_benchmark(model, bench, save / bench.name, args, bar, recipe,
                                       input_scores)
                entry.results.append(result)
                bar.write(summary_line(entry, result))
                status = 1 if result.failed else status
            entries.append(entry)
    texts = write_tables(entries, args)
    shown = ('md', 'csv', 'latex') if args.format == 'all' else (args.format,)
    for fmt in shown:
        print('\n' + texts[fmt].rstrip('\n'))
    print(f'\nwrote {args.save_root}/{TABLE_NAME}.md, .csv, .tex and .json')
    return status


if __name__ == '__main__':
    run_main(main, 'paper_table.py')
