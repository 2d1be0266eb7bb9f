# Two entry points (see README): `make demo` runs the main job, `make test` the tests.
# Both create .venv on first use. Installs are reproducible: every dependency, transitive included, is pinned
# by constraints.txt (`pip install -c`), which is what `make test`, `make demo` and CI (.ci/run) use; the
# loose ranges in pyproject.toml stay for library users. torch is pinned there to the release on this
# machine's disk; any torch 2.11-2.14 works (pyproject.toml): set TORCH_SPEC and CONSTRAINTS= to change it.
# `make drift` (scripts/check_drift.sh) installs the NEWEST releases pyproject.toml allows into a throwaway
# venv, lists the pins that moved, and runs the quick tests there: run it before refreshing constraints.txt
# (see its header) to catch a new release that changes a result.
PYTHON ?= python3
VENV := .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
CONSTRAINTS ?= constraints.txt
PYTEST_ARGS ?=

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) $(TORCH_SPEC) -e '.[test]'
	touch $@

.PHONY: setup demo test lint drift
setup: $(VENV)/.installed

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/lfi demo --out runs/demo

test: lint
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check lfi tests benchmarks scripts
	$(VENV)/bin/ruff format --check lfi tests benchmarks scripts

drift:
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" scripts/check_drift.sh $(PYTEST_ARGS)
