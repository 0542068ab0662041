# Entry points. Every target sets up .venv/ itself (idempotent, fast when already done).
PY := .venv/bin/python

.PHONY: setup demo demo-data photos test lint test-isolated clean-demo

setup:
	@bash tools/setup.sh

demo: setup
	@$(PY) tools/demo.py

demo-data: setup
	@$(PY) tools/make_demo_data.py

photos: setup
	@bash tools/get_photos.sh

# The whole suite. The quick loop while working leaves out the tests marked slow (scripts and
# tools in subprocesses, > ~5 s): .venv/bin/python -m pytest -m "not slow" tests
test: setup
	@$(PY) -m pytest -q --durations=15 tests

lint: setup
	@.venv/bin/ruff check .

# The suite from a copy of the committed tree alone in a temp folder (nothing beside it, so no
# test can lean on files outside the repository); reuses this checkout's .venv.
test-isolated: setup
	@bash tools/test_isolated.sh

clean-demo:
	rm -rf data/demo demo_output
