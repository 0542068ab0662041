"""Which code made a result: the package version, plus ``git describe`` in a clone.

Outputs are only reusable by a run of the same code (a changed forward changes the pixels), so
the recipe recorded beside restored images names the code version (utils/inference/outputs.py).
"""
from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``spikederain 0.1.0`` and, in a git clone, ``(git 900747b-dirty)``."""
    try:
        version = f'spikederain {metadata.version("spikederain")}'
    except metadata.PackageNotFoundError:
        version = 'spikederain (not installed)'
    if (ROOT / '.git').exists():
        try:
            proc = subprocess.run(['git', 'describe', '--always', '--dirty', '--tags'], cwd=ROOT,
                                  capture_output=True, text=True, timeout=10)
            if proc.returncode == 0 and proc.stdout.strip():
                version += f' (git {proc.stdout.strip()})'
        except (OSError, subprocess.SubprocessError):
            pass
    return version
