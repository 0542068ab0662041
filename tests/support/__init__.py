"""Helpers shared by tests, not tests themselves (importable as ``support``: pyproject.toml's
pytest ``pythonpath`` puts tests/ on sys.path).

``support.golden`` the golden tensors of tests/fixtures; ``support.images`` paired image folders;
``support.weights`` tiny model weights; ``support.cli`` running the scripts and tools (one
subprocess each, or forked from one warm process); ``support.spike_fidelity`` spike agreement of
paths that change rounding; ``support/ddp_worker.py`` the process torchrun starts twice.
tests/conftest.py turns the first four into the fixtures ``golden``, ``paired_folder``,
``tiny_weights`` and ``cli``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / 'tests'


def load_tool(name: str) -> ModuleType:
    """tools/<name>.py as a module, loaded from its file (tools/ holds scripts, not a package).

    Registered in ``sys.modules`` under ``name`` before it runs (dataclasses and pickling look
    their module up there); a second call returns the module already loaded.
    """
    if name in sys.modules:
        return sys.modules[name]
    path = ROOT / 'tools' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f'cannot load {path}')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
