"""Turn a training checkpoint into a small weights-only file for sharing or shipping.

``model_last.pth`` carries optimizer and RNG state (about 3x the weights); this writes only the
weights, the model's name and config (so ``test.py --weights`` needs no ``--model``), and
optionally stores them in fp16 (loading casts back to fp32).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from models import build_from_checkpoint, save_weights
from utils.core.cli import ArgumentParser, run_main
from utils.core.paths import check_writes


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--checkpoint', required=True, help='model_best.pth or model_last.pth of a run')
    p.add_argument('--out', required=True, help='weights file to write (e.g. pretrained_models/'
                                                'spikerain-s_demo.pth)')
    p.add_argument('--model', default=None,
                   help='model name, for checkpoints that do not record it')
    p.add_argument('--half', action='store_true', help='store floating tensors as fp16')
    p.add_argument('--note', default='', help='free text stored in the file (e.g. the recipe)')
    args = p.parse_args(argv)
    check_writes([], [('--checkpoint', args.checkpoint)], files=[('--out', args.out)])
    model = build_from_checkpoint(args.checkpoint, args.model)
    save_weights(model, args.out, half=args.half, note=args.note)
    n = sum(p.numel() for p in model.parameters())
    print(f'wrote {args.out}: {model.model_name} {model.config}, {n:,} parameters, '
          f'{Path(args.out).stat().st_size / 1e6:.2f} MB')
    return 0


if __name__ == '__main__':
    run_main(main, 'export_weights.py')
