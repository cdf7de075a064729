# make demo: set everything up, run the main job on a local Dask cluster, print the report.
# make test: set everything up and run the test suite (what CI runs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/python scripts/demo_data.py demo-data
	mkdir -p demo-out
	$(BIN)/ddrp run --x demo-data/digits.parquet --w demo-data/weights.npy -k 16 \
		--out demo-out/sketches.zarr --overwrite

test: venv
	$(BIN)/ruff check ddrp_dask cli tests benchmarks scripts
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check ddrp_dask cli tests benchmarks scripts
	$(BIN)/mypy ddrp_dask

bench: venv
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/memory.py

clean:
	rm -rf $(VENV) demo-data demo-out bench-out .pytest_cache .hypothesis
