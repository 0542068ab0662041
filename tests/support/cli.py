"""Running the scripts and tools as a user runs them: the ``cli`` fixture (one subprocess per
command), and the warm runner of the bad-input catalogues (every command a forked child of one
warm helper process).

Starting Python with torch costs seconds on a busy 2-core machine, so the catalogues
(tests/scripts/test_robustness.py, test_robustness2.py, test_errors.py, test_faults.py) run
their cases in forked children of ONE warm process (see :func:`serve`) rather than in one
interpreter each; a crash in a case still prints its traceback into that case's stderr, as the
interpreter would.
"""
from __future__ import annotations

import gc
import hashlib
import importlib
import json
import os
import re
import runpy
import subprocess
import sys
import traceback
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from support import ROOT, TESTS

ERROR_LINE = re.compile(r'^(\S+\.py( \w+)?: )?error: ')   # argparse: 'PROG [COMMAND]: error:'


# ------------------------------------------------------------------ one subprocess per command
class Result(NamedTuple):
    code: int
    stdout: str
    stderr: str


def run_cli(script: str, *args, cwd: str | Path = ROOT, env: dict | None = None,
            timeout: float = 600) -> Result:
    """``python ROOT/SCRIPT ARGS`` (arguments as ``str``) in ``cwd`` with one OpenMP thread and
    ``env`` added to this environment; its exit code, stdout and stderr."""
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


# ------------------------------------------------------------------------ reading the results
def tree_digest(folder: Path) -> dict:
    """Path -> sha256 of every file below ``folder`` (folders included, to see new files)."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest()
                                               if p.is_file() else 'dir')
            for p in sorted(folder.rglob('*'))}


def last_line(text: str) -> str:
    """The last line a terminal shows: text after the last carriage return, blanks skipped."""
    lines = [ln.rsplit('\r', 1)[-1].strip() for ln in text.split('\n')]
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else ''


# ---------------------------------------------------------------------------- the warm runner
_SITE: list[str] = []          # sys.path of `python SCRIPT`, less the script's own folder


def _is_test_path(entry: str) -> bool:
    """'' and the folders the helper process puts first: the repository and tests/ (or below)."""
    if entry in ('', str(ROOT)):
        return True
    path = Path(entry)
    return path == TESTS or TESTS in path.parents


def warm_up() -> None:
    """Import once what every script imports, so forked children start in milliseconds."""
    torch.set_num_threads(1)      # also keeps OpenMP's thread pool unborn before fork()
    for name in ('models.spikerain', 'models.esdnet', 'utils.train.trainer', 'utils.eval.metrics',
                 'utils.inference.outputs', 'utils.data.prepare', 'utils.data.rain',
                 'utils.core.cli',
                 'skimage.data', 'torch._dynamo'):        # torch.optim imports _dynamo: 2 s
        importlib.import_module(name)
    Image.init()
    _SITE[:] = [p for p in sys.path if not _is_test_path(p)]
    # Move what is loaded now out of the collector's sight: a child's garbage collection would
    # otherwise walk (and so copy, page by page) the whole inherited heap, which can cost a
    # forked script more than it runs (0.2 s of 0.3 s, depending on where the parent's counters
    # stood at fork()).
    gc.collect()
    gc.freeze()


def fork_script(argv: list[str], cwd: str, stdout: str, stderr: str) -> int:
    """Start ``python ROOT/argv[0] argv[1:]`` as a forked child of this warm process; its pid.

    The child runs the script's ``__main__`` code with its output in the given files and exits
    as the interpreter would: SystemExit's code, or the traceback and 1 for an exception.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1                                          # the child: never returns
    try:
        os.chdir(cwd)
        for fd, name in ((1, stdout), (2, stderr)):
            os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        script = str(ROOT / argv[0])
        sys.argv = [script, *argv[1:]]
        sys.path[:] = [os.path.dirname(script), *_SITE]
        try:
            runpy.run_path(script, run_name='__main__')
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
        except BaseException:                         # noqa: BLE001 - report it like Python
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def serve(jobs_file: str, results_file: str) -> None:
    """Run every job, one after the other, each in a forked child of this warm process."""
    warm_up()
    results = {}
    for job in json.loads(Path(jobs_file).read_text()):
        pid = fork_script(job['argv'], job['cwd'], job['stdout'], job['stderr'])
        _, status = os.waitpid(pid, 0)
        results[job['id']] = dict(code=os.waitstatus_to_exitcode(status),
                                  stdout=Path(job['stdout']).read_text(errors='replace'),
                                  stderr=Path(job['stderr']).read_text(errors='replace'))
    Path(results_file).write_text(json.dumps(results))


def run_helper(call: str, timeout: int = 600, path: tuple[str | Path, ...] = ()) -> None:
    """``python -c 'CALL'`` with one thread, the repository, tests/ (``from support import
    cli``) and the folders in ``path`` (a test module's own, to import it) first on sys.path;
    fails on an error."""
    paths = [str(ROOT), str(TESTS), *map(str, path)]
    code = f'import sys; sys.path[:0] = {paths!r}; {call}'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    env.pop('SPIKEDERAIN_DEBUG', None)
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]

