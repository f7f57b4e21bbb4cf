# varbench: `make bench` (set up + default sweep + report) and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results/default
# Every `make regress` run is appended here; `make history` finds the commits where something changed.
HISTORY ?= results/history
# torch is pinned here, to the CPU build of this exact release on the machines' disk; a looser spec would
# pull a multi-GB CUDA build. pyproject.toml declares the range the code supports.
TORCH_SPEC ?= torch==2.13.0

.PHONY: bench quick full test test-fast test-browser regress history baseline perf exact peers report list clean install

bench: $(VENV)/.installed ## default sweep (<= 10 min on 2 CPU cores) -> $(OUT)/{table.csv,report.md,*.png}
	$(BIN)/varbench run --preset default --device auto --out $(OUT)

quick: $(VENV)/.installed ## small sweep (<= 1 min) -> results/quick
	$(BIN)/varbench run --preset quick --device auto --out results/quick

full: $(VENV)/.installed ## default sweep + the larger discrete and variance-reduction grids -> results/full
	$(BIN)/varbench run --preset full --device auto --out results/full

test: $(VENV)/.installed ## the whole test suite, slow and integration tests included (what CI runs)
	$(BIN)/python -m pytest -m ""

test-fast: $(VENV)/.installed ## the developer's loop (< 2 min): the suite without the slow and integration tests
	$(BIN)/python -m pytest

test-browser: $(VENV)/.installed ## report.html in headless Chromium: installs Debian's chromium (as root or via sudo) and playwright
	@[ -x "$${VARBENCH_CHROMIUM:-/usr/bin/chromium}" ] || command -v chromium >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y chromium; } \
	  || sudo -n sh -c "apt-get update -qq && apt-get install -y chromium" \
	  || echo "varbench: could not install chromium (apt-get install chromium as root); the browser test will be skipped"
	$(BIN)/python -m pip install --quiet -e ".[browser]"
	$(BIN)/python -m pytest -m browser -rs tests/test_report_html.py

regress: $(VENV)/.installed ## re-measure the ci grid, compare with results/baseline/, append to $(HISTORY); fails on a regression (<= 3 min)
	$(BIN)/varbench regress --baseline results/baseline --out results/regress --history $(HISTORY) --no-progress

history: $(VENV)/.installed ## changes across the runs kept in $(HISTORY) -> results/history-report/{summary.md,history.md,*.png}
	$(BIN)/varbench history $(HISTORY) --out results/history-report

baseline: $(VENV)/.installed ## re-record results/baseline/ (the ci grid + speed benchmarks); commit the result
	$(BIN)/varbench baseline --out results/baseline --no-progress

perf: $(VENV)/.installed ## performance report on every available device -> results/perf/{perf.csv,perf.md}
	$(BIN)/varbench perf --device auto --out results/perf

exact: $(VENV)/.installed ## exact variance curves, no sampling (Mohamed et al.'s Figure 2) -> results/exact/
	$(BIN)/varbench exact --out results/exact

report: $(VENV)/.installed ## re-render $(OUT)/report.md from its table without re-running
	$(BIN)/varbench report $(OUT)

peers: $(VENV)/.installed ## install the [peers] extra (Pyro, Storchastic) and compare them with ours -> results/peers
	$(BIN)/python -m pip install --quiet -e ".[peers]" || echo "varbench: some peers failed to install; the report says which"
	$(BIN)/varbench run --problem seed_dependent --theta 1,3 --estimator all --n 1,10,100,1000 --out results/peers

list: $(VENV)/.installed
	$(BIN)/varbench list

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test,dask]"
	touch $@

clean: ## remove the make targets' results folders (not results/baseline/ or the kept results/history/, not folders you made) and the venv
	rm -rf results/default results/quick results/full results/regress results/perf results/exact results/peers results/latest results/history-report
	rm -rf $(VENV) .pytest_cache .benchmarks
