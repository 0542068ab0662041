# Entry points. Every target sets up .venv/ itself (idempotent, fast when already done).
PY := .venv/bin/python

.PHONY: setup demo demo-data photos test clean-demo

setup:
	@bash tools/setup.sh

demo: setup
	@$(PY) tools/demo.py

demo-data: setup
	@$(PY) tools/make_demo_data.py

photos: setup
	@bash tools/get_photos.sh

test: setup
	@$(PY) -m pytest -q tests

clean-demo:
	rm -rf data/demo demo_output
