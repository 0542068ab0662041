"""The README's main command: the whole pipeline on a built-in demo, on the CPU, in minutes.

1. synthesize the demo data set (scikit-image photos + synthetic rain) unless it is there;
2. restore its test split with every shipped model in ``pretrained_models/*_synthetic.pth``,
   and restore the clean targets too: a derainer must leave a clean photo (almost) unchanged;
3. score rainy inputs and restorations with the published protocol (PSNR/SSIM on Y);
4. write a comparison grid and the energy table of each shipped model;
5. write the report to look at (``tools/report.py``): one self-contained HTML page with a
   before/after slider per image and model, zoom, scores, energy and the commands.

Each step runs the same command a user would type (printed before it runs), so the demo is
also a check that the scripts work together. Outputs go to ``demo_output/``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from utils.core.cli import ArgumentParser, run_main
from utils.core.errors import InputError, SpikeDerainError
from utils.core.lock import FolderLock

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = '_synthetic.pth'    # shipped weights: pretrained_models/<registry name>_synthetic.pth


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', default='data/demo', help='demo data folder (made if missing)')
    p.add_argument('--weights_dir', default='pretrained_models',
                   help='folder of shipped *_synthetic.pth weights')
    p.add_argument('--out', default='demo_output', help='folder for every demo output')
    p.add_argument('--device', default='auto', help='auto, cpu or cuda')
    return p.parse_args(argv)


def run(cmd: list[str], quiet: bool = False) -> None:
    """Run one project command from the repository root; stop the demo if it fails."""
    shown = ' '.join(shlex.quote(c) for c in cmd[1:])
    print(f'\n$ python {shown}', flush=True)
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    res = subprocess.run(cmd, cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL if quiet else None)
    if res.returncode != 0:
        raise SpikeDerainError(f'step failed (exit {res.returncode}): python {shown}')


def rel(path: Path) -> str:
    """A path as the user would type it: relative to the repository root when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def means(json_path: Path) -> dict:
    return json.loads(json_path.read_text())['means']


def main(argv=None) -> int:
    args = parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    weights = sorted((ROOT / args.weights_dir).glob(f'*{SUFFIX}'))
    if not weights:
        raise InputError(f'no shipped weights (*{SUFFIX}) in {args.weights_dir}/')
    with FolderLock(out, what='demo.py run', option='another --out'):
        return demo(args, data, out, weights)


def demo(args: argparse.Namespace, data: Path, out: Path, weights: list[Path]) -> int:
    """Every step of the demo, while holding ``out``'s lock."""
    py = sys.executable
    test_in, test_gt = data / 'test' / 'input', data / 'test' / 'target'
    t_start = time.perf_counter()

    run([py, 'tools/make_demo_data.py', '--out', str(data)])
    run([py, 'evaluation.py', '--restored', str(test_in), '--target_path', str(test_gt),
         '--json', str(out / 'rainy_input.json'), '--quiet'], quiet=True)
    table = [('rainy input', means(out / 'rainy_input.json'), None)]

    restored_dirs, labels, clean_rows, energy_files = [], [], [], []
    for w in weights:
        name = w.name[:-len(SUFFIX)]
        restored = out / name
        run([py, 'test.py', '--weights', rel(w), '--data_path', str(test_in),
             '--save_path', str(restored), '--device', args.device, '--overwrite'])
        run([py, 'evaluation.py', '--restored', str(restored), '--target_path', str(test_gt),
             '--json', str(out / f'{name}.json'), '--quiet'], quiet=True)
        run([py, 'tools/complexity.py', '--model', name, '--weights', rel(w),
             '--images', str(test_in), '--json', str(out / f'{name}_energy.json')])
        table.append((f'{name} (shipped weights)', means(out / f'{name}.json'), w))
        # Do no harm: the clean targets in, each output scored against its own input.
        clean_out = out / f'{name}_on_clean'
        run([py, 'test.py', '--weights', rel(w), '--data_path', str(test_gt),
             '--save_path', str(clean_out), '--device', args.device, '--overwrite',
             '--no_progress'], quiet=True)
        run([py, 'evaluation.py', '--restored', str(clean_out), '--target_path', str(test_gt),
             '--json', str(out / f'{name}_on_clean.json'), '--quiet'], quiet=True)
        clean_rows.append((f'{name}: clean image in', means(out / f'{name}_on_clean.json')))
        restored_dirs.append(str(restored))
        labels.append(name)
        energy_files.append(str(out / f'{name}_energy.json'))

    grid = out / 'comparison_grid.png'
    run([py, 'tools/compare_grid.py', '--rainy', str(test_in), *sum(
        (['--restored', d] for d in restored_dirs), []), '--labels', *labels,
        '--target', str(test_gt), '--out', str(grid)], quiet=True)
    report = out / 'report.html'
    t_report = time.perf_counter()
    run([py, 'tools/report.py', '--input', str(data / 'test'), '--restored', *restored_dirs,
         '--labels', *labels, '--complexity', *energy_files, '--out', str(report)], quiet=True)
    t_report = time.perf_counter() - t_report

    print(f'\nDemo test split: {len(list(test_in.iterdir()))} images, '
          f'PSNR/SSIM on Y (published protocol)')
    print(f'{"":<38}{"PSNR (dB)":>10}{"SSIM":>9}')
    for label, m, _ in table:
        print(f'{label:<38}{m["psnr"]:>10.2f}{m["ssim"]:>9.4f}')
    for label, m in clean_rows:
        print(f'{label:<38}{m["psnr"]:>10.2f}{m["ssim"]:>9.4f}')
    for row in table[1:]:
        gain = row[1]['psnr'] - table[0][1]['psnr']
        print(f'PSNR gain of {row[0].split()[0]} over the rainy input: {gain:+.2f} dB')
    print('("clean image in": the clean targets restored and scored against themselves; a '
          'derainer should leave them almost unchanged, >= 40 dB)')
    print(f'Outputs in {out}/: restored images, metrics JSON, energy JSON, {grid.name}')
    print(f'Report to look at (sliders, zoom, scores, energy; works offline): {report} '
          f'(written in {t_report:.1f} s); open it in a browser')
    print(f'Demo finished in {time.perf_counter() - t_start:.0f} s')
    return 0


if __name__ == '__main__':
    run_main(main, 'demo.py')
