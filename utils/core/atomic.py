"""The one way this project writes a file: all of it, or none of it.

Every output (restored images, checkpoints, weights, reports, config.yaml, manifests) is written
to a temp file beside its destination with normal permissions (0666 minus the umask: outputs are
meant to be shared), flushed and fsync'ed, then renamed over the destination. A crash at any
moment leaves the old file or the new one, never a partial file; a failed write removes its temp
file and raises an ``OSError`` that names the destination.

Temp files are named ``.<name>.<8 random hex characters>.tmp``; a process killed outright cannot
remove its temp, so :func:`remove_stale_temps` lets the next run of the same job clean up.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import IO
from collections.abc import Iterable, Iterator

_TEMP_NAME = re.compile(r'\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp')


def _create_temp(folder: Path, name: str) -> tuple[int, str]:
    """A new, exclusive ``.<name>.<8 hex characters>.tmp`` in ``folder``, opened for writing.

    Created with mode 0666 so the kernel applies the umask: normal permissions without reading
    the umask, which only ``os.umask`` can do, by changing it for every thread of the process.
    The name comes from ``secrets``, so writing never touches the ``random`` state a training
    run saves and restores.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_CLOEXEC', 0)
    for _ in range(100):
        tmp = os.path.join(folder, f'.{name}.{secrets.token_hex(4)}.tmp')
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, 'no unused temp file name', os.path.join(folder, name))


def _named(err: OSError, path: Path) -> OSError:
    """The same error, naming the destination and saying whether an older file survives."""
    code = err.errno if err.errno is not None else errno.EIO
    kept = ' (the previous file is intact)' if path.exists() else ''
    return OSError(code, f'{err.strerror or os.strerror(code)}; not written{kept}', str(path))


def _about(err: OSError, tmp: str | None, path: Path) -> bool:
    """Whether ``err`` concerns our temp/destination (not another file used inside the block)."""
    if err.filename is None:
        return True
    try:
        name = os.path.basename(os.fsdecode(err.filename))
    except TypeError:                       # a file descriptor number, not a path
        return True
    return name == os.path.basename(tmp or '') or name.startswith(f'.{path.name}.')


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = 'wb', encoding: str | None = None
                ) -> Iterator[IO]:
    """``with atomic_open(path, 'w') as fh: ...`` -- ``path`` appears only if the block ends
    without an exception, complete and fsync'ed; otherwise nothing changes at ``path``."""
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_open: mode must be "w" or "wb", got {mode!r}')
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path.parent, path.name)
        text = mode == 'w'
        try:
            fh = os.fdopen(fd, mode, **(dict(encoding=encoding or 'utf-8', newline='')
                                        if text else {}))
        except BaseException:
            os.close(fd)
            raise
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        if not _about(err, tmp, path):
            raise                     # an error about another file, raised inside the block
        raise _named(err, path) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, 'wb') as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines as given); returns the path."""
    with atomic_open(path, 'w') as fh:
        fh.write(text)
    return Path(path)


def remove_stale_temps(folder: str | os.PathLike, names: Iterable[str] | None = None
                       ) -> list[Path]:
    """Delete temp files left in ``folder`` by writes killed before their rename.

    Only temps of the given destination file names are touched (all of this module's temps
    when ``names`` is None). Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    wanted = None if names is None else set(names)
    removed = []
    for path in folder.iterdir():
        match = _TEMP_NAME.fullmatch(path.name)
        if match and (wanted is None or match['name'] in wanted) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_writable(folder: str | os.PathLike) -> None:
    """Create and delete a small file in ``folder``: a full or read-only disk is found before
    any work starts. An ``OSError`` naming the folder if that fails."""
    folder = Path(folder)
    try:
        with tempfile.TemporaryFile(prefix='.write-check.', dir=folder) as fh:
            fh.write(b'x')
            fh.flush()
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(folder)) from None


def check_output_file(option: str, path: str | os.PathLike | None,
                      checked: set | None = None) -> None:
    """Before any work: ``path`` can be written (not a folder; its nearest existing folder is
    writable), so a run never ends by failing to save what it computed. One line naming
    ``option`` otherwise. ``checked``: folders already found writable (skipped)."""
    checked = set() if checked is None else checked
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f'{option}: is a folder, expected a file path',
                                str(path))
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f'{option}: {folder} is a file, not a folder',
                                 str(path))
    if folder not in checked:
        check_writable(folder)
        checked.add(folder)
