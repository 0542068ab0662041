"""The project's expected errors: one base class, and the exit code each kind ends a script with.

An expected error is one a user can cause and fix (a bad option, a missing or corrupt file, a
full disk); its message is one line naming the option or file. Scripts only raise them;
:func:`utils.core.cli.run_main` prints ``PROG: error: MESSAGE`` and exits with the error's
``exit_code``: 2 when the command line itself is wrong (:class:`UsageError`: an option's value
or combination, a config file's content, output paths that collide with inputs), 1 for what is
found while working (files, weights, devices' state, the disk). Anything else is a bug and
keeps its traceback.

This module imports nothing of the project (models/ import it), so it can never form a cycle.
Classes keep ``ValueError``/``RuntimeError`` as a second base where callers catch them so.
"""
from __future__ import annotations

USAGE = 2        # the command line is wrong: fix the options
RUNTIME = 1      # the command was fine; a file, the weights or the machine was not


class SpikeDerainError(Exception):
    """Base of every expected error: one line that names the file or option."""
    exit_code = RUNTIME


class UsageError(SpikeDerainError, ValueError):
    """A bad option, option combination or config-file setting (exit 2)."""
    exit_code = USAGE


class InputError(SpikeDerainError, ValueError):
    """An input file or folder that is missing or cannot be used (exit 1)."""
