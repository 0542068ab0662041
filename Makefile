# Entry points. Every target sets up .venv/ itself (idempotent, fast when already done).
PY := .venv/bin/python

.PHONY: setup demo test clean-demo

setup:
	@bash tools/setup.sh

demo: setup
	@$(PY) tools/demo.py

test: setup
	@$(PY) -m pytest -q tests

clean-demo:
	rm -rf data/demo demo_output
