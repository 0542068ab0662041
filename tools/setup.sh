#!/usr/bin/env bash
# Create .venv/ (if missing), install the project's dependencies into it, then the project itself
# (pyproject.toml: the packages models/ and utils/), editable and without dependencies, so tools/
# and tests import them from this checkout without touching sys.path.
# Idempotent: when requirements*.txt and pyproject.toml have not changed since the last successful
# run it returns at once.
# Offline: every install goes through pip's configured indexes/find-links; the editable install
# builds with the venv's own setuptools (--no-build-isolation), so it downloads nothing once
# setuptools >= 70.1 is there (older ones also need `wheel` for PEP 660 editable installs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${SPIKEDERAIN_BORROWED_VENV:-}" ]; then
  # tools/test_isolated.sh: .venv is a link to the original checkout's venv, which that
  # checkout's setup owns. Installing here would point its editable install at this temp copy.
  exit 0
fi
root=$(pwd)
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version 2>&1)"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-nodeps.txt requirements-deploy.txt pyproject.toml |
  sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
echo "[setup] installing requirements into .venv (first run takes a few minutes)"
"${pip[@]}" -r requirements.txt
"${pip[@]}" --no-deps -r requirements-nodeps.txt
# ONNX export and ONNX Runtime / OpenVINO (~96 MB of wheels): the tests of the export need them.
"${pip[@]}" -r requirements-deploy.txt
if ! .venv/bin/python -c "import setuptools, sys; v = tuple(int(p) for p in setuptools.__version__.split('.')[:2]); sys.exit(v < (70, 1))" 2>/dev/null; then
  "${pip[@]}" "setuptools>=70.1"
fi
"${pip[@]}" --no-deps --no-build-isolation -e .
# From another folder, so the import goes through the install, not the current directory.
check="import torch, spikingjelly.activation_based.neuron, models, utils.core.errors, onnxruntime"
(cd / && "$root/.venv/bin/python" -c "$check") >/dev/null
echo "$want" > "$stamp"
# The native neuron kernels (models/native_lif.py), compiled into the user's cache once per
# machine here rather than in the first forward (under a second; quiet where there is no cc).
.venv/bin/python -c "from models.native_lif import build; build(quiet=True)" || true
echo "[setup] done"
