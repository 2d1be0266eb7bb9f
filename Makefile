# Two entry points (see README): `make demo` runs the main job, `make test` the tests.
# Both create .venv on first use. torch is pinned to the release this project is tested with; any torch
# 2.11-2.14 works (pyproject.toml), set TORCH_SPEC to change it.
PYTHON ?= python3
VENV := .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q $(TORCH_SPEC) -e '.[test]'
	touch $@

.PHONY: setup demo test lint
setup: $(VENV)/.installed

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/lfi demo --out runs/demo

test: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/ruff check lfi tests benchmarks
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check lfi tests benchmarks
	$(VENV)/bin/ruff format --check lfi tests benchmarks
