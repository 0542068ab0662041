"""Optimisation recipe helpers: periods, epoch length, warm-up + cosine schedule."""
import pytest
import torch

from utils.train.recipe import (build_optimizer, build_scheduler, parse_period, period_to_iters,
                                steps_per_epoch)


def test_periods_in_iterations_or_epochs():
    assert parse_period('500') == (500, 'it')
    assert parse_period('500it') == (500, 'it')
    assert parse_period('2ep') == (2, 'ep')
    assert period_to_iters('2ep', 113) == 226
    assert period_to_iters('0.5ep', 10) == 5
    assert period_to_iters(0, 10) == 0
    for bad in ('-1', 'often', '1.5', '3 epochs'):
        with pytest.raises(ValueError, match='--val_every'):
            period_to_iters(bad, 10, '--val_every')


def test_steps_per_epoch_counts_short_last_batch_and_accumulation():
    assert steps_per_epoch(1800, 16, 1) == 113       # 112 full batches + 1 short
    assert steps_per_epoch(5, 2, 1) == 3
    assert steps_per_epoch(5, 2, 2) == 2             # batches [2, 2, 1] -> steps of 2 and 1


def _lrs(total, warmup, lr=1e-3, min_lr=1e-7):
    opt = build_optimizer(torch.nn.Linear(2, 2), lr)
    sched = build_scheduler(opt, total, warmup, min_lr)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    return out, opt.param_groups[0]['lr']


def test_linear_warmup_then_cosine_to_min_lr():
    lrs, final = _lrs(total=10, warmup=3)
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))        # decreasing after the peak
    mid = 1e-7 + 0.5 * (1e-3 - 1e-7) * (1 + torch.cos(torch.tensor(3.14159265 * 3 / 7)).item())
    assert lrs[6] == pytest.approx(mid, rel=1e-5)
    assert final == pytest.approx(1e-7)


def test_no_warmup_starts_at_peak_and_long_warmup_is_clamped():
    lrs, final = _lrs(total=5, warmup=0)
    assert lrs[0] == pytest.approx(1e-3) and final == pytest.approx(1e-7)
    lrs, final = _lrs(total=4, warmup=100)                      # shortened to 3 steps
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3]) and final == pytest.approx(1e-7)
