"""Numeric settings, checked in one place: environment variables and command-line numbers.

``int(float('inf'))`` raises ``OverflowError`` and ``float('nan')`` passes every comparison, so
a number read without care becomes a traceback deep in a run, or a silent nonsense value. Here
every environment variable the project reads as a number (:data:`NUMERIC_ENV`) is parsed by
:func:`env_int`, and :func:`check_environment` (run by ``run_main`` before any script starts)
checks them all, so a bad value is one line naming the variable. :func:`cli_int` and
:func:`cli_float` are the argparse types ``utils.core.cli.ArgumentParser`` gives every ``int``
and ``float`` option: integers from 0 to :data:`INT_LIMIT`, finite floats.
"""
from __future__ import annotations

import argparse
import math
import os

from utils.core.errors import UsageError

INT_LIMIT = 2**31 - 1        # sizes, counts, seeds: anything above is a typo (or an overflow)
MAX_PIXELS_ENV = 'SPIKEDERAIN_MAX_PIXELS'
# Numeric environment variables the project reads: name -> (smallest value, what it means).
NUMERIC_ENV = {
    MAX_PIXELS_ENV: (0, 'the largest image in pixels, 0: no limit'),
    'WORLD_SIZE': (1, 'number of processes, set by torchrun'),
    'RANK': (0, 'process rank, set by torchrun'),
    'LOCAL_RANK': (0, 'rank on this node, set by torchrun'),
    'LOCAL_WORLD_SIZE': (1, 'processes on this node, set by torchrun'),
}


class SettingError(UsageError):
    """An environment variable or option whose number cannot be used (exit 2)."""


def parse_int(text: str, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number written as ``12``, ``1e6`` or ``1_000``, within [minimum, maximum];
    ``ValueError`` (with the reason) for anything else: nan, inf, 1e400, 1.5, -1, words."""
    text = str(text).strip()
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            raise ValueError('not a number') from None
        if not math.isfinite(number):
            raise ValueError('not a finite number') from None
        if number != int(number):
            raise ValueError('not a whole number') from None
        value = int(number)
    if value < minimum:
        raise ValueError(f'must be >= {minimum}')
    if maximum is not None and value > maximum:
        raise ValueError(f'must be <= {maximum:,}')
    return value


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    """The environment variable ``name`` as a checked integer (``default`` if unset or blank);
    a bad value is a :class:`SettingError` naming the variable."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    low = NUMERIC_ENV.get(name, (0, ''))[0] if minimum is None else minimum
    try:
        return parse_int(text, low, 2**63 - 1)
    except ValueError as err:
        meaning = NUMERIC_ENV.get(name, (0, ''))[1]
        raise SettingError(f'environment variable {name}={text!r}: {err}'
                           f'{f" ({meaning})" if meaning else ""}') from None


def check_environment() -> None:
    """Every numeric environment variable the project reads, checked before a script starts."""
    for name in NUMERIC_ENV:
        env_int(name, 0)


class NumberTypeError(argparse.ArgumentTypeError, ValueError):
    """The reason a number is refused (``must be >= 0``); ``ArgumentParser`` words it as
    ``--tile -5: must be >= 0``, config files catch it as a ValueError."""


def cli_int(text) -> int:
    """argparse type of every ``int`` option: 0 to :data:`INT_LIMIT` (negative sizes, counts
    and seeds mean nothing here)."""
    if isinstance(text, bool):
        raise NumberTypeError('expected a whole number')
    try:
        return parse_int(text, 0, INT_LIMIT)
    except ValueError as err:
        if str(err) == 'not a number':
            raise      # argparse's own words: invalid int value: 'many'
        raise NumberTypeError(str(err)) from None


cli_int.__name__ = 'int'


def cli_float(text) -> float:
    """argparse type of every ``float`` option: a finite number (nan and inf are refused)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError('not a number') from None      # argparse: invalid float value: 'x'
    if not math.isfinite(value):
        raise NumberTypeError('not a finite number')
    return value


cli_float.__name__ = 'float'
