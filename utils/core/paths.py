"""What a command writes may never be what it reads: one check every script runs before any work.

A restored image written over a clean target would then score PSNR = inf; a checkpoint written
into a dataset folder mixes a run with its data. Each script lists the folders and files it
reads (inputs, targets -- folder or file --, a benchmark split's ``target/`` even when no
``--target_path`` is given, training and validation folders) and the folders and files it
writes, and :func:`check_writes` refuses, with one line naming both, any output that

* is a file it reads, or the same file under another name (symlink, hard link);
* is a folder it reads, or lies inside one (``--save_path Rain200L/test/target/out``);
* is the same file as another output of the same command (``--json r.json --csv r.json``).

A folder that is read may lie inside an output folder (``--save_path`` the split itself writes
``<stem>.png`` next to ``input/`` and ``target/``, not into them).
"""
from __future__ import annotations

import os
from pathlib import Path

from utils.core.atomic import check_output_file
from utils.core.errors import UsageError

# (option or role, path): e.g. ('--save_path', Path('results/x')) or ('input folder', ...).
Named = tuple[str, 'str | os.PathLike']


class PathConflictError(UsageError):
    """An output path that is, or lies inside, something the command reads."""


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def split_folders(folder: str | os.PathLike) -> list[Path]:
    """A benchmark split's ``input/`` and ``target/`` for any folder of it (or ``[]``).

    ``Rain200L/test``, ``Rain200L/test/input`` and ``Rain200L/test/target`` all give both, so
    a command reading the inputs also protects the targets beside them.
    """
    folder = Path(folder)
    for root in (folder, folder.parent):
        if (root / 'input').is_dir() and (root / 'target').is_dir() and \
                (root == folder or folder.name in ('input', 'target')):
            return [root / 'input', root / 'target']
    return []


def check_writes(outputs: list[Named], reads: list[Named], *,
                 files: list[Named] = ()) -> None:
    """Refuse outputs that are, or are inside, anything in ``reads``; one line naming both.

    ``outputs``: folders the command writes into. ``files``: single files it writes. ``reads``:
    files and folders it reads (missing ones are fine: nothing to protect yet).
    """
    reads_real = [(name, Path(p), _real(p)) for name, p in reads if p is not None]
    for name, p in [*outputs, *files]:
        if p is None:
            continue
        out = _real(p)
        for rname, rpath, rreal in reads_real:
            same = _same_file(out, rreal)
            if same or _inside(out, rreal):
                what = 'is' if same or out == rreal else 'lies inside'
                raise PathConflictError(
                    f'{name} {p}: {what} the {rname} {rpath}; refusing to write there '
                    f'(outputs never go where the command reads)')
    seen: dict = {}
    writable: set = set()
    for name, p in files:
        if p is None:
            continue
        check_output_file(name, p, writable)       # a folder, or an unwritable one: now
        real = _real(p)
        try:
            st = os.stat(real)
            keys = [real, (st.st_dev, st.st_ino)]
        except OSError:
            keys = [real]
        for key in keys:
            if key in seen:
                other_name, other = seen[key]
                raise PathConflictError(f'{other_name} {other} and {name} {p}: the same file; '
                                        f'give each output its own path')
        for key in keys:
            seen[key] = (name, p)
