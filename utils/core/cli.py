"""How the command-line scripts end: one line on stderr and the right exit code, never a traceback.

Researchers run long jobs unattended; the end of the log must say what went wrong and where
(the file or the option), not a stack of frames from deep inside torch. Scripts only *raise*
(:mod:`utils.core.errors`); :func:`run_main`, around every script's ``main()``, is the one place
that prints ``PROG: error: MESSAGE`` and picks the exit code: 2 for a bad option (argparse, through
:class:`ArgumentParser`, and every :class:`~utils.core.errors.UsageError` such as a config error), 1
for a runtime error (a :class:`~utils.core.errors.SpikeDerainError`, or an
``OSError``/``ValueError`` raised by library code), 130 for Ctrl-C, 143 for SIGTERM. Anything
else is a bug and keeps its traceback. Set ``SPIKEDERAIN_DEBUG=1`` to get the traceback of an
expected error too.

Signals: :func:`run_main` makes SIGINT (Ctrl-C, ``kill -INT``) and SIGTERM (``kill``, what
schedulers such as Slurm send before killing a job) end a script the same clean way: one line
on stderr, files written so far complete (train.py: ``model_last.pth`` is the last complete
checkpoint), exit code 130 for SIGINT and 143 for SIGTERM (128 + the signal number, what a shell
reports for a job killed by it). A job started in the background by a script (``train.py &``)
inherits an *ignored* SIGINT from the shell, and Python then never raises KeyboardInterrupt:
``kill -INT`` did nothing. The scripts restore the handler, so ``kill -INT PID`` always works.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import NoReturn
from collections.abc import Callable

from tqdm import tqdm

from utils.core.errors import RUNTIME, SpikeDerainError, UsageError
from utils.core.settings import NumberTypeError, check_environment, cli_float, cli_int

# Ours, and what library code (ours and others') raises for bad values and files.
EXPECTED_ERRORS = (SpikeDerainError, ValueError, OSError)
_CHECKED_TYPES = {int: cli_int, float: cli_float}
INTERRUPTED = 130          # what shells report for a job stopped by Ctrl-C (128 + SIGINT)
TERMINATED = 143           # ... and for one stopped by SIGTERM (128 + 15)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds exactly like Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


def install_signal_handlers() -> None:
    """SIGINT -> KeyboardInterrupt (even if inherited as ignored), SIGTERM -> :class:`Terminated`.

    Only in the main thread of the main process; safe to call more than once.
    """
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:          # not the main thread
        pass


def exit_code(stop: BaseException) -> int:
    """130 for Ctrl-C / SIGINT, 143 for SIGTERM."""
    return TERMINATED if isinstance(stop, Terminated) else INTERRUPTED


def interruption(stop: BaseException) -> str:
    """``terminated (SIGTERM)`` or ``interrupted``, for the one line a script ends with."""
    return 'terminated (SIGTERM)' if isinstance(stop, Terminated) else 'interrupted'


def close_progress_bars() -> None:
    """Close bars an exception left open, so the error starts on a line of its own."""
    for bar in list(getattr(tqdm, '_instances', ())):
        bar.close()


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are a :class:`UsageError`: one line from :func:`run_main`, exit 2,
    instead of the usage dump (subcommand parsers inherit the class). Every ``int`` option takes
    0 to 2**31-1 and every ``float`` option a finite number (:mod:`utils.core.settings`), so nan,
    inf, 1e400 and negative counts are refused naming the option."""

    def add_argument(self, *args, **kwargs):
        kwargs['type'] = _CHECKED_TYPES.get(kwargs.get('type'), kwargs.get('type'))
        if kwargs['type'] is None:
            del kwargs['type']
        return super().add_argument(*args, **kwargs)

    def _get_value(self, action, arg_string):
        """A refused number reads ``--tile -5: must be >= 0``: the option, the value, why."""
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as err:
            if not isinstance(err.__context__, NumberTypeError):
                raise
            name = '/'.join(action.option_strings) or action.dest
            raise UsageError(f'{name} {arg_string}: {err.__context__} (see --help)') from None

    def error(self, message):
        raise UsageError(f'{message} (see --help)')


def describe(err: BaseException) -> str:
    """The error as one line; an OSError names its file (``PATH: Permission denied``); an error
    re-raised from a DataLoader worker keeps its last line (the worker's own message)."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        where = err.filename if err.filename2 is None else f'{err.filename} -> {err.filename2}'
        return f'{where}: {err.strerror}'
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    if any('Original Traceback' in ln for ln in lines):
        return lines[-1].split(': ', 1)[-1]
    return lines[0]


def print_error(message: str, prog: str | None = None) -> None:
    """``PROG: error: MESSAGE`` (or ``error: MESSAGE``) on stderr, after closing progress bars."""
    close_progress_bars()
    prefix = f'{prog}: error' if prog else 'error'
    print(f'{prefix}: {message}', file=sys.stderr, flush=True)


def error_exit_code(err: BaseException) -> int:
    """2 for a :class:`UsageError`, 1 for any other expected error."""
    return getattr(err, 'exit_code', RUNTIME) if isinstance(err, SpikeDerainError) else RUNTIME


def run_main(main: Callable[[], int | None], prog: str) -> NoReturn:
    """Exit with ``main()``'s code; an expected error, Ctrl-C or SIGTERM that escapes it becomes
    one line and its exit code.

    A script may set ``detail`` on the KeyboardInterrupt it re-raises to say what was kept
    (default: files written so far are complete).
    """
    install_signal_handlers()
    try:
        check_environment()               # a bad SPIKEDERAIN_MAX_PIXELS etc.: one line, first
        code = main()
    except KeyboardInterrupt as stop:
        close_progress_bars()
        kept = getattr(stop, 'detail', None) or 'files written so far are complete'
        print(f'{prog}: {interruption(stop)}; {kept}', file=sys.stderr, flush=True)
        code = exit_code(stop)
    except EXPECTED_ERRORS as err:
        if os.environ.get('SPIKEDERAIN_DEBUG'):
            raise
        print_error(describe(err), prog)
        code = error_exit_code(err)
    sys.exit(code or 0)
