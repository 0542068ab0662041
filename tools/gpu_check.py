"""One command that checks training and inference numerics and speed, CPU part first (issue 16).

    python tools/gpu_check.py --out results/gpu_check          # writes report.json + report.md

The CPU part always runs (seconds, on the tiny models): a few training steps of each model in
float32 and under bf16 autocast, the two compared (loss, output PSNR, spike agreement of every
LIF layer), and test.py on random weights whole-image and tiled. With a CUDA GPU the report adds
GPU vs CPU (spike agreement and PSNR with TF32 off), the speed of an AMP (fp16) training step
against float32 (timed with synchronisation), and a state trained on the GPU resumed on the CPU.

This is a skeleton: the CUDA part has never run (no GPU was available when it was written), and
the 2-process torchrun and the full-size models are not in it yet; ``--cpu_only`` skips the
CUDA part even where a GPU exists.
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models import available_models, build_model
from models.acceleration import record_spikes
from models.spiking import reset_spiking_state
from utils.core.atomic import write_text_atomic
from utils.core.cli import ArgumentParser, run_main
from utils.core.device import configure_numerics
from utils.core.errors import UsageError
from utils.core.device import lif_kernel_report
from utils.train.losses import build_loss

ROOT = Path(__file__).resolve().parents[1]
MODELS = ('spikerain-tiny', 'esdnet-tiny', 'vlif-net-tiny')


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double().cpu() - b.double().cpu()) ** 2).item()
    return float('inf') if mse == 0 else 10 * math.log10(1.0 / mse)


def _agreement(a: dict, b: dict) -> float:
    """Share of equal spikes over every recorded LIF layer."""
    same = total = 0
    for name in a:
        x, y = a[name].float().cpu(), b[name].float().cpu()
        same += (x == y).sum().item()
        total += x.numel()
    return same / max(total, 1)


def _batch(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tgt = torch.rand(2, 3, size, size, generator=g)
    return (tgt + 0.3 * torch.rand(tgt.shape, generator=g)).clamp(0, 1), tgt


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def train_steps(name: str, device: torch.device, steps: int, size: int,
                autocast_dtype: torch.dtype | None = None) -> dict:
    """``steps`` AdamW steps of 1-SSIM from the seeded initialisation; losses, mean step time,
    then the trained model's output and spikes on a fixed image."""
    torch.manual_seed(0)
    model = build_model(name).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler('cuda', enabled=autocast_dtype is torch.float16)
    loss_fn = build_loss('ssim')
    losses, times = [], []
    for step in range(steps):
        inp, tgt = (t.to(device) for t in _batch(size, seed=step))
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            out = model(inp)
        loss = loss_fn(out.float(), tgt)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    model.eval()
    probe = _batch(size, seed=99)[0].to(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                         enabled=autocast_dtype is not None):
        spikes, out = record_spikes(model, probe)
    reset_spiking_state(model)
    return dict(losses=losses, step_s=float(np.mean(times[1:] or times)), output=out.float(),
                spikes=spikes, state={k: v.detach().cpu() for k, v in model.state_dict().items()})


def cpu_part(models, steps: int, size: int) -> dict:
    cpu = torch.device('cpu')
    configure_numerics(cpu)
    out = {}
    for name in models:
        fp32 = train_steps(name, cpu, steps, size)
        bf16 = train_steps(name, cpu, steps, size, torch.bfloat16)
        out[name] = dict(
            fp32_losses=fp32['losses'], bf16_losses=bf16['losses'],
            fp32_step_s=fp32['step_s'], bf16_step_s=bf16['step_s'],
            bf16_vs_fp32_output_psnr=_psnr(fp32['output'], bf16['output']),
            bf16_vs_fp32_spike_agreement=_agreement(fp32['spikes'], bf16['spikes']),
            finite=all(math.isfinite(v) for v in fp32['losses'] + bf16['losses']))
    return out


def test_script_part(size: int) -> dict:
    """test.py on random weights, whole images and tiled, in this process."""
    from PIL import Image
    spec = importlib.util.spec_from_file_location('derain_test_script', ROOT / 'test.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / 'in').mkdir()
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(
            tmp / 'in' / 'a.png')
        result = {}
        for label, extra in (('plain', []), ('tiled', ['--tile', str(size // 2),
                                                       '--tile_overlap', '8'])):
            t0 = time.perf_counter()
            code = script.main(['--model', 'spikerain-tiny', '--random_weights', '--device',
                                'cpu', '--data_path', str(tmp / 'in'), '--save_path',
                                str(tmp / label), '--no_progress', '--exact', *extra])
            result[label] = dict(exit_code=code, seconds=time.perf_counter() - t0,
                                 written=(tmp / label / 'a.png').is_file())
        if all(r['written'] for r in result.values()):
            a, b = (torch.from_numpy(np.asarray(Image.open(tmp / k / 'a.png'), dtype=np.float32)
                                     / 255) for k in ('plain', 'tiled'))
            result['tiled_vs_plain_psnr'] = _psnr(a, b)
    return result


def cuda_part(models, steps: int, size: int) -> dict:
    """GPU vs CPU with TF32 off, AMP step speed, GPU-trained state resumed on the CPU.
    Never run yet (written without a GPU)."""
    gpu = torch.device('cuda', 0)
    configure_numerics(gpu, tf32=False)
    out = dict(device=torch.cuda.get_device_name(0), lif_kernel=lif_kernel_report(gpu))
    for name in models:
        fp32 = train_steps(name, gpu, steps, size)
        amp = train_steps(name, gpu, steps, size, torch.float16)
        # the GPU-trained weights on the CPU: same outputs and spikes (resume across devices)
        torch.manual_seed(0)
        on_cpu = build_model(name).eval()
        on_cpu.load_state_dict(fp32['state'])
        probe = _batch(size, seed=99)[0]
        with torch.no_grad():
            spikes, cpu_out = record_spikes(on_cpu, probe)
        out[name] = dict(
            fp32_step_s=fp32['step_s'], amp_step_s=amp['step_s'],
            amp_speedup=fp32['step_s'] / max(amp['step_s'], 1e-12),
            gpu_vs_cpu_spike_agreement=_agreement(fp32['spikes'], spikes),
            gpu_vs_cpu_output_psnr=_psnr(fp32['output'], cpu_out),
            amp_vs_fp32_output_psnr=_psnr(fp32['output'], amp['output']),
            finite=all(math.isfinite(v) for v in fp32['losses'] + amp['losses']))
    return out


def markdown(report: dict) -> str:
    lines = ['# gpu_check report', '', f"- command: `{report['command']}`",
             f"- date: {report['date']}", f"- torch {report['torch']}, "
             f"CUDA available: {report['cuda_available']}", '']
    lines += ['## CPU: float32 vs bf16 autocast (tiny models)', '',
              '| model | fp32 loss (last) | bf16 loss (last) | output PSNR bf16 vs fp32 (dB) | '
              'spike agreement | fp32 s/step | bf16 s/step |', '|---|---|---|---|---|---|---|']
    for name, r in report['cpu'].items():
        lines.append(f"| {name} | {r['fp32_losses'][-1]:.4f} | {r['bf16_losses'][-1]:.4f} | "
                     f"{r['bf16_vs_fp32_output_psnr']:.1f} | "
                     f"{100 * r['bf16_vs_fp32_spike_agreement']:.2f} % | "
                     f"{r['fp32_step_s']:.3f} | {r['bf16_step_s']:.3f} |")
    t = report['test_script']
    lines += ['', '## test.py (random weights, spikerain-tiny)', '',
              f"- plain: exit {t['plain']['exit_code']}, {t['plain']['seconds']:.1f} s; "
              f"tiled: exit {t['tiled']['exit_code']}, {t['tiled']['seconds']:.1f} s; "
              f"tiled vs plain PSNR {t.get('tiled_vs_plain_psnr', float('nan')):.1f} dB", '']
    if report.get('cuda'):
        c = report['cuda']
        lines += [f"## CUDA: {c['device']}", '', f"- {c['lif_kernel']}", '',
                  '| model | GPU vs CPU spike agreement | GPU vs CPU PSNR (dB) | AMP speed-up | '
                  'AMP vs fp32 PSNR (dB) |', '|---|---|---|---|---|']
        for name, r in c.items():
            if isinstance(r, dict):
                lines.append(f"| {name} | {100 * r['gpu_vs_cpu_spike_agreement']:.3f} % | "
                             f"{r['gpu_vs_cpu_output_psnr']:.1f} | {r['amp_speedup']:.2f}x | "
                             f"{r['amp_vs_fp32_output_psnr']:.1f} |")
        lines += ['', 'Targets (issue 16): AMP step >= 1.5x faster than float32 for every '
                  'model; GPU vs CPU >= 99.9 % spike agreement with TF32 off.']
    else:
        lines += ['## CUDA', '', 'Not run: ' + report.get('cuda_skipped', 'no CUDA GPU'), '']
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='results/gpu_check', help='folder for report.json/.md')
    p.add_argument('--steps', type=int, default=3, help='training steps per model and mode')
    p.add_argument('--size', type=int, default=32, help='image side in pixels')
    p.add_argument('--models', default=','.join(MODELS), help='comma-separated model names')
    p.add_argument('--cpu_only', action='store_true', help='skip the CUDA part')
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(',') if m.strip()]
    unknown = [m for m in models if m not in available_models()]
    if not models or unknown:
        raise UsageError(f'--models {args.models!r}: unknown {", ".join(unknown) or "(none given)"}'
                         f'; choose from {", ".join(available_models())}')
    if args.steps < 1 or args.size < 16:
        raise UsageError(f'--steps {args.steps} / --size {args.size}: need --steps >= 1 and '
                         f'--size >= 16')
    torch.set_num_threads(1)
    report = dict(command=' '.join(['python tools/gpu_check.py', *(argv or sys.argv[1:])]),
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                  torch=torch.__version__, python=platform.python_version(),
                  cuda_available=torch.cuda.is_available())
    report['cpu'] = cpu_part(models, args.steps, args.size)
    report['test_script'] = test_script_part(args.size)
    if args.cpu_only or not torch.cuda.is_available():
        report['cuda_skipped'] = '--cpu_only' if args.cpu_only else 'no CUDA GPU on this machine'
    else:
        report['cuda'] = cuda_part(models, args.steps, args.size)
    out = Path(args.out)
    write_text_atomic(out / 'report.json', json.dumps(report, indent=2, default=str) + '\n')
    write_text_atomic(out / 'report.md', markdown(report))
    print(f'gpu_check: report in {out / "report.md"} and {out / "report.json"}')
    return 0


if __name__ == '__main__':
    run_main(main, 'gpu_check.py')
