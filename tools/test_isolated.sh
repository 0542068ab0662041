#!/usr/bin/env bash
# Run the test suite from a clone of the committed tree, alone in an empty temp folder, so a
# test that reads anything outside the repository (a sibling folder) fails here. The clone
# borrows this checkout's .venv (a symlink), so nothing is installed twice.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$root" "$tmp/repo"
ln -s "$root/.venv" "$tmp/repo/.venv"
cd "$tmp/repo"
echo "[test-isolated] running the suite in $tmp/repo ($(git log -1 --format=%h))"
make test
