"""The house plan holds: the import rules between utils' groups and models/, and the README's
Layout names every module (and only modules that exist)."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ('core', 'data', 'inference', 'eval', 'efficiency', 'train')
# importer group -> the groups it may import (besides itself)
ALLOWED = {
    'core': set(),
    'models': {'core'},
    'data': {'core'},
    'inference': {'core', 'data'},
    'eval': {'core', 'data', 'inference'},
    'efficiency': {'core', 'data', 'models'},
    'train': {'core', 'data', 'inference', 'eval', 'efficiency', 'models'},
}
# single module-level allowances, each with its reason in utils/__init__.py
EXCEPTIONS = {('utils.efficiency.benchmark', 'utils.train.config')}
SCRIPTS = ('train', 'test', 'evaluation', 'dataset_load', 'tools', 'tests')


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def group_of(module: str) -> str | None:
    """'utils.data.rain' -> 'data'; 'models.weights' -> 'models'; a script -> 'script'."""
    parts = module.split('.')
    if parts[0] == 'models':
        return 'models'
    if parts[0] == 'utils':
        return parts[1] if len(parts) > 1 else 'utils'
    if parts[0] in SCRIPTS:
        return 'script'
    return None


def imports_of(path: Path, root: Path) -> list[tuple[str, int]]:
    """Every project module ``path`` imports (also inside functions), with the line."""
    here = module_name(path, root).split('.')
    package = here if path.name == '__init__.py' else here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found.append((base, node.lineno))
            # `from utils import data` names a sub-package: count it too
            found += [(f'{base}.{a.name}', node.lineno) for a in node.names
                      if base in ('utils', 'models')]
    return [(m, line) for m, line in found if group_of(m) is not None]


def violations(root: Path) -> list[str]:
    bad = []
    for path in sorted([*root.glob('models/**/*.py'), *root.glob('utils/**/*.py')]):
        me = module_name(path, root)
        mine = group_of(me)
        for target, line in imports_of(path, root):
            theirs = group_of(target)
            if theirs in (mine, 'utils') and not (theirs == 'utils' and mine != 'utils'):
                continue
            if (me, target) in EXCEPTIONS:
                continue
            if mine == 'utils' or theirs not in ALLOWED.get(mine, set()):
                bad.append(f'{path.relative_to(root)}:{line}: {mine} may not import {target} '
                           f'({theirs})')
    return bad


def test_no_import_breaks_a_rule():
    assert violations(ROOT) == []


def test_the_rule_check_catches_a_bad_import(tmp_path):
    """The checker itself: a model importing training code, core importing data, a utils
    module importing a script, and utils/ modules outside a group are all caught."""
    (tmp_path / 'models').mkdir()
    (tmp_path / 'models' / 'net.py').write_text('from utils.core.errors import X\n'
                                                'from utils.train import trainer\n')
    for group in ('core', 'data'):
        (tmp_path / 'utils' / group).mkdir(parents=True)
    (tmp_path / 'utils' / 'core' / 'paths.py').write_text('def f():\n'
                                                         '    from utils.data import rain\n')
    (tmp_path / 'utils' / 'data' / 'rain.py').write_text('import train\nfrom . import image_io\n')
    found = violations(tmp_path)
    assert len(found) == 3, found
    assert any('models/net.py:2' in v for v in found)
    assert any('utils/core/paths.py:2' in v for v in found)
    assert any('utils/data/rain.py:1' in v for v in found)


def test_utils_has_no_module_outside_a_group():
    loose = [p.name for p in (ROOT / 'utils').glob('*.py') if p.name != '__init__.py']
    assert loose == []
    assert sorted(p.name for p in (ROOT / 'utils').iterdir()
                  if p.is_dir() and (p / '__init__.py').is_file()) == sorted(GROUPS)


def _layout_block() -> str:
    text = (ROOT / 'README.md').read_text()
    return re.search(r'## Layout\n\n```\n(.*?)```', text, re.S).group(1)


def test_readme_layout_names_every_module_and_only_real_files():
    block = _layout_block()
    named = set(re.findall(r'[\w.-]+\.(?:py|sh|md)\b', block))
    # group headings (core/, data/, ...) set where the names below them live
    modules = {p for p in [*ROOT.glob('models/*.py'), *ROOT.glob('utils/*/*.py')]
               if p.name != '__init__.py'}
    missing = sorted(str(p.relative_to(ROOT)) for p in modules if p.name not in named)
    assert missing == [], f'README Layout does not name: {missing}'
    for group in GROUPS:
        assert re.search(rf'^\s+{group}/', block, re.M), f'README Layout lacks utils/{group}/'
    existing = {p.name for p in ROOT.rglob('*') if p.is_file() and '.venv' not in p.parts}
    ghosts = sorted(n for n in named if n not in existing)
    assert ghosts == [], f'README Layout names files that do not exist: {ghosts}'


@pytest.mark.parametrize('group', GROUPS)
def test_each_group_says_what_it_holds(group):
    init = ROOT / 'utils' / group / '__init__.py'
    assert ast.get_docstring(ast.parse(init.read_text()))
