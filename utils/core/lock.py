"""One writer per folder: an exclusive lock held for a whole run, naming its holder.

Two runs writing into one folder mix their files silently (two models' outputs in one results
folder, two trainings in one run folder). :class:`FolderLock` takes an exclusive ``fcntl.flock``
on ``<folder>/<lock name>`` from :meth:`~FolderLock.acquire` to :meth:`~FolderLock.release`; the
file records the holder (PID, host, command line), so a second run is refused in one line naming
it. The kernel drops the lock when the holder dies, even by SIGKILL, so a crashed run never
blocks the next one; its lock *file* stays behind (a clean end removes it), and the next run
says in one ``note:`` line that it took over the lock of a run that ended without releasing it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from utils.core.errors import SpikeDerainError

OUTPUTS_LOCK_NAME = '.spikederain.lock'


class FolderBusy(SpikeDerainError, RuntimeError):
    """Another process holds the folder's lock (exit 1)."""


def _stderr_note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _holder_text(fields: list[str]) -> str:
    """``PID 12 on host: python test.py ...`` from the lock file's lines (PID, host, command)."""
    pid = fields[0] if fields and fields[0] else 'unknown'
    text = f'PID {pid}'
    if len(fields) > 1 and fields[1]:
        text += f' on {fields[1]}'
    if len(fields) > 2 and fields[2]:
        command = fields[2] if len(fields[2]) <= 160 else fields[2][:157] + '...'
        text += f': {command}'
    return text


def _running_here(fields: list[str]) -> bool | None:
    """Whether the recorded PID runs on this host (``None``: cannot tell)."""
    if len(fields) < 2 or fields[1] != socket.gethostname() or not fields[0].isdigit():
        return None
    try:
        os.kill(int(fields[0]), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True                       # exists, owned by someone else
    return True


class FolderLock:
    """Exclusive lock on ``folder`` (created if missing), held from :meth:`acquire` to
    :meth:`release`; also a context manager.

    ``what`` names the holder's kind in the refusal (``test.py run``), ``option`` the option that
    chose the folder (the refusal suggests another). The lock file is removed on release (while
    still locked: a process that locked the old file sees it is gone and retries), and a folder
    that acquire() had to create is removed again if the run left it empty.
    """

    def __init__(self, folder: str | os.PathLike, *, name: str = OUTPUTS_LOCK_NAME,
                 what: str = 'run', option: str = 'another output folder',
                 note: Callable[[str], None] | None = None,
                 busy: type[FolderBusy] = FolderBusy):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what, self.option, self.busy = what, option, busy
        self.note = note or _stderr_note
        self.fd: int | None = None
        self._created_dir = False

    @property
    def held(self) -> bool:
        return self.fd is not None

    def _read(self, fd: int) -> list[str]:
        return os.pread(fd, 4096, 0).decode(errors='replace').strip().split('\n')

    def acquire(self) -> FolderLock:
        if self.fd is not None:
            return self
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._created_dir = True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                try:
                    holder = _holder_text(self._read(fd))
                finally:
                    os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OSError(err.errno, err.strerror, str(self.path)) from None
                raise self.busy(f'{self.folder}: in use by another {self.what} ({holder}; lock '
                                f'{self.path}); wait for it to end, or choose {self.option}') \
                    from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)                 # its holder removed it as we locked it: try again
        left = [f for f in self._read(fd) if f]
        if left:                          # a clean end removes the file: its holder died
            running = _running_here(left)
            state = {False: 'no longer running', True: 'running but no longer holding it',
                     None: 'not holding it'}[running]
            self.note(f'note: {self.folder}: took over the lock left by {_holder_text(left)} '
                      f'({state}: it ended without releasing the lock, e.g. killed); files '
                      f'it was writing are checked as usual')
        try:
            os.ftruncate(fd, 0)
            command = shlex.join(sys.argv) if sys.argv and sys.argv[0] else ''
            os.pwrite(fd, f'{os.getpid()}\n{socket.gethostname()}\n{command}\n'.encode(), 0)
        except OSError:
            pass                         # a full disk: the lock holds, only the holder is unknown
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)      # while still locked: see the class docstring
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
            if self._created_dir:
                self._created_dir = False
                with contextlib.suppress(OSError):
                    self.folder.rmdir()       # only if the failed run left it empty

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
