"""The one way this project writes a file: all of it, or none of it.

Every output (restored images, checkpoints, weights, reports, config.yaml, manifests) is written
to a temp file beside its destination, flushed and fsync'ed, given normal permissions (mkstemp
makes 0600; outputs are meant to be shared, so 0666 minus the umask), then renamed over the
destination. A crash at any moment leaves the old file or the new one, never a partial file; a
failed write removes its temp file and raises an ``OSError`` that names the destination.

Temp files are named ``.<name>.<8 random characters>.tmp``; a process killed outright cannot
remove its temp, so :func:`remove_stale_temps` lets the next run of the same job clean up.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

_TEMP_NAME = re.compile(r'\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp')


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _named(err: OSError, path: Path) -> OSError:
    """The same error, naming the destination and saying whether an older file survives."""
    errno = err.errno if err.errno is not None else 5
    kept = ' (the previous file is intact)' if path.exists() else ''
    return OSError(errno, f'{err.strerror or os.strerror(errno)}; not written{kept}', str(path))


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
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
        text = mode == 'w'
        with os.fdopen(fd, mode, **(dict(encoding=encoding or 'utf-8', newline='')
                                    if text else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        ours = (err.filename is None or os.fspath(err.filename) == tmp
                or os.path.basename(os.fspath(err.filename)).startswith(f'.{path.name}.'))
        if not ours:
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
