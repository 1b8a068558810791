# make run   : set up .venv if needed, then the main job (vmsim demo enomem)
# make test  : set up .venv if needed, then lint, type-check and every test
# make bench : benchmarks side by side with the live kernel
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint typecheck unit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/vmsim demo enomem

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -n 2 --timeout=900 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/replay_bench.py
	$(BIN)/python benchmarks/fastlane_scan_bench.py
	$(BIN)/python benchmarks/fastlane_vmas_bench.py
	$(BIN)/python benchmarks/translate_bench.py
	$(BIN)/python benchmarks/pressure_bench.py
	$(BIN)/python benchmarks/exporter_bench.py
	$(BIN)/python benchmarks/memtrace_read_bench.py
	$(BIN)/python benchmarks/memtrace_engine_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
