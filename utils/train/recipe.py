"""The papers' optimisation recipe, and the periods the training loop counts in.

AdamW with a linear warm-up followed by cosine decay to ``min_lr``, stepped once per optimizer
step (so the schedule is the same whether a run is given in epochs or iterations, and a resumed
run continues it exactly). Periods such as "validate every" are written ``500`` (iterations) or
``2ep`` (epochs) and converted to iterations once the epoch length is known.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LinearLR, SequentialLR

_PERIOD = re.compile(r'^\s*(?P<n>[0-9]*\.?[0-9]+)\s*(?P<unit>ep|it)?\s*$')


def parse_period(text, option: str = 'period') -> tuple[float, str]:
    """``'500'``/``'500it'`` -> (500, 'it'); ``'2ep'`` -> (2, 'ep'); negative is an error."""
    match = _PERIOD.match(str(text))
    if match is None:
        raise ValueError(f'{option}: expected N (iterations) or Nep (epochs), got {text!r}')
    n = float(match['n'])
    unit = match['unit'] or 'it'
    if unit == 'it' and n != int(n):
        raise ValueError(f'{option}: a number of iterations must be whole, got {text!r}')
    return n, unit


def period_to_iters(text, steps_per_epoch: int, option: str = 'period') -> int:
    """A period in iterations (epochs are multiplied by the epoch length, rounded)."""
    n, unit = parse_period(text, option)
    return int(round(n * steps_per_epoch)) if unit == 'ep' else int(n)


def steps_per_epoch(samples_per_rank: int, batch_size: int, accum_steps: int) -> int:
    """Optimizer steps in one epoch: batches (the last may be short), grouped by accumulation."""
    batches = math.ceil(samples_per_rank / batch_size)
    return math.ceil(batches / accum_steps)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01
                    ) -> torch.optim.AdamW:
    """AdamW as the official scripts create it (betas 0.9/0.999, eps 1e-8)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, total_iters: int, warmup_iters: int,
                    min_lr: float):
    """Linear warm-up over ``warmup_iters`` steps, then cosine decay to ``min_lr`` at the end.

    Warm-up starts at lr/(warmup+1) and reaches lr at step ``warmup_iters``. It is shortened
    to leave at least one cosine step when the run is shorter than the warm-up.
    """
    warmup_iters = max(0, min(int(warmup_iters), int(total_iters) - 1))
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_iters - warmup_iters),
                               eta_min=min_lr)
    if warmup_iters == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1.0 / (warmup_iters + 1), end_factor=1.0,
                      total_iters=warmup_iters)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_iters])


def planned_lr(iteration: int, total_iters: int, warmup_iters: int, lr: float,
               min_lr: float) -> float:
    """The learning rate :func:`build_scheduler`'s cosine gives at ``iteration`` of a run planned
    for ``total_iters`` (after the warm-up): where a longer run would be when a finished one is
    extended."""
    span = max(1, int(total_iters) - int(warmup_iters))
    progress = min(max(int(iteration) - int(warmup_iters), 0), span) / span
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_extension_scheduler(optimizer: torch.optim.Optimizer, start_iteration: int,
                              start_lr: float, total_iters: int, min_lr: float) -> LambdaLR:
    """The schedule of a run extended at ``start_iteration`` (``train.py --extend``): cosine
    from the learning rate it had there down to ``min_lr`` at the new ``total_iters``.

    The earlier part of the run keeps the schedule it was trained with; only the remaining
    steps change, so the weights at the extension point are exactly those of the saved run.
    Built on a fresh optimizer position (its step 0 is ``start_iteration``), then loaded with
    the saved scheduler state when a run extended earlier is resumed.
    """
    span = max(1, int(total_iters) - int(start_iteration))

    def factor(base_lr: float):
        def at(step: int) -> float:
            progress = min(step, span) / span
            lr = min_lr + (start_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
            return lr / base_lr
        return at

    for group in optimizer.param_groups:
        group.setdefault('initial_lr', group['lr'])
    return LambdaLR(optimizer, [factor(g['initial_lr']) for g in optimizer.param_groups])
