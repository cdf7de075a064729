# make demo: set everything up, run the main job on Dask (the default scheduler), print the report.
# make test: set everything up and run the test suite (what CI runs), the library's doctests
# included (pyproject: testpaths and --doctest-modules), and the documentation site's build
# and examples (tests/test_docs.py).
# make docs: build the documentation site into docs/_build/html (warnings are errors).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test docs wheel-smoke lint bench clean

# One venv: the demo installs what it (and the README's tour) needs, .[sklearn,plot];
# make test adds the test, benchmark and docs tools on top.
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(BIN)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[sklearn,plot]"
	touch $@

$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[sklearn,plot,test,bench,docs]"
	touch $@

venv: $(BIN)/.installed

demo: $(BIN)/.demo-installed
	$(BIN)/python scripts/demo_data.py demo-data
	mkdir -p demo-out
	$(BIN)/ddrp run --x demo-data/digits.parquet --w demo-data/weights.npy -k 16 \
		--out demo-out/sketches.zarr --overwrite --report demo-out/report.json
	@echo "demo-out/sketches.zarr holds the sketches x (1797 x 16) and w (200 x 16) and the"
	@echo "model; demo-out/report.json the report above. Check the sketches against exact x.w:"
	@echo "  $(BIN)/ddrp evaluate --model demo-out/sketches.zarr/model \\"
	@echo "      --x demo-data/digits.parquet --w demo-data/weights.npy --top 10"

test: venv
	$(BIN)/ruff check ddrp_dask cli tests benchmarks scripts deploy
	$(BIN)/mypy ddrp_dask
	$(BIN)/python -m pytest

# A non-editable install in a venv of its own, then one small job through its console script.
wheel-smoke: venv
	rm -rf .venv-wheel
	$(PY) -m venv .venv-wheel
	.venv-wheel/bin/python -m pip install -q ".[s3]"
	$(BIN)/python -c "import numpy as np; r = np.random.default_rng(0); \
		np.save('/tmp/ddrp-smoke-x.npy', r.standard_normal((5000, 16)).astype('f4')); \
		np.save('/tmp/ddrp-smoke-w.npy', r.standard_normal((300, 16)).astype('f4'))"
	cd /tmp && $(CURDIR)/.venv-wheel/bin/ddrp run --x /tmp/ddrp-smoke-x.npy \
		--w /tmp/ddrp-smoke-w.npy -k 8 --out /tmp/ddrp-smoke.zarr --overwrite --scheduler threads
	rm -rf .venv-wheel

docs: venv
	rm -rf docs/generated
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html
	@echo "the site: docs/_build/html/index.html"

lint: venv
	$(BIN)/ruff check ddrp_dask cli tests benchmarks scripts deploy
	$(BIN)/mypy ddrp_dask

bench: venv
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/memory.py

clean:
	rm -rf $(VENV) demo-data demo-out bench-out tour docs/_build docs/generated .pytest_cache \
		.hypothesis
