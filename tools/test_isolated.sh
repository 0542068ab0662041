#!/usr/bin/env bash
# Run the test suite from a clone of the committed tree, alone in an empty temp folder, so a
# test that reads anything outside the repository (a sibling folder) fails here. The clone
# borrows this checkout's .venv (a symlink), so nothing is installed twice.
#
# That venv holds this checkout's editable install (tools/setup.sh), which maps `models` and
# `utils` to THIS tree. So that the clone tests its own code: PYTHONPATH puts the clone first
# (it is searched before the install's import hook, in every process the tests start), and
# SPIKEDERAIN_BORROWED_VENV keeps the clone's `make test` -> setup.sh from reinstalling into the
# borrowed venv (which would re-point the install at this temp folder). A check below fails the
# run if `models` or `utils` would still come from elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$root" "$tmp/repo"
ln -s "$root/.venv" "$tmp/repo/.venv"
cd "$tmp/repo"
export PYTHONPATH="$tmp/repo${PYTHONPATH:+:$PYTHONPATH}"
export SPIKEDERAIN_BORROWED_VENV=1
(cd / && "$tmp/repo/.venv/bin/python" - "$tmp/repo" <<'PY'
import importlib.util
import sys
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
for name in ('models', 'utils'):
    origin = Path(importlib.util.find_spec(name).origin).resolve()
    if repo not in origin.parents:
        sys.exit(f'[test-isolated] {name} would be imported from {origin}, not from {repo}')
PY
)
echo "[test-isolated] running the suite in $tmp/repo ($(git log -1 --format=%h))"
make test
