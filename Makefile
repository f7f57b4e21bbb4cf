# varbench: `make bench` (set up + default sweep + report) and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results/default
# torch is pinned here, to the CPU build of this exact release on the machines' disk; a looser spec would
# pull a multi-GB CUDA build. pyproject.toml declares the range the code supports.
TORCH_SPEC ?= torch==2.13.0

.PHONY: bench quick full test report list clean install

bench: $(VENV)/.installed ## default sweep (<= 10 min on 2 CPU cores) -> $(OUT)/{table.csv,report.md,*.png}
	$(BIN)/varbench run --preset default --device auto --out $(OUT)

quick: $(VENV)/.installed ## small sweep (<= 1 min) -> results/quick
	$(BIN)/varbench run --preset quick --device auto --out results/quick

full: $(VENV)/.installed ## default sweep + the larger variance-reduction grid -> results/full
	$(BIN)/varbench run --preset full --device auto --out results/full

test: $(VENV)/.installed ## the test suite (what CI runs)
	$(BIN)/python -m pytest

report: $(VENV)/.installed ## re-render $(OUT)/report.md from its table without re-running
	$(BIN)/varbench report $(OUT)

list: $(VENV)/.installed
	$(BIN)/varbench list

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

clean: ## remove generated results (keeps results/README.md and results/baseline/) and the venv
	find results -mindepth 1 -maxdepth 1 ! -name README.md ! -name baseline -exec rm -rf {} +
	rm -rf $(VENV) .pytest_cache .benchmarks
