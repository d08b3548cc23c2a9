# cpc_lightning: `make train` and `make test` set everything up on a fresh machine, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the package with its dev extras

train: $(STAMP) ## Run the default pipeline (synthetic speech, CPU) and print the probe table; ARGS=overrides
	$(PY) -m cpc_lightning.train $(ARGS)

test: $(STAMP) ## Run the default test suite (slow tests excluded)
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-all: $(STAMP) ## Run every test, slow ones (DDP, sweeps, kill/resume) included
	$(PY) -m pytest -q $(ARGS)

bench: $(STAMP) ## Benchmarks: training step (32-true vs bf16-mixed), InfoNCE vs. reference, logging overhead, data loading (files vs shards), ABX
	$(PY) benchmarks/step.py $(ARGS)
	$(PY) benchmarks/image_step.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/data_streaming.py
	$(PY) benchmarks/abx.py

probes: $(STAMP) ## experiment=cpc_audio_cpu with 3 seeds scored on TIMIT, speechocean762, FSDD, Speech Commands vs. MFCC and random init; PART=images: experiment=cpc_images_cpu on CIFAR-10 vs. random init and pixels (DATA=../shared/data)
	DATA=$${DATA:-../shared/data} bash benchmarks/real_data_probes.sh $(ARGS)

lint: $(STAMP) ## ruff check + format check
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: $(STAMP) ## ruff format + autofix
	$(PY) -m ruff format src tests benchmarks
	$(PY) -m ruff check --fix src tests benchmarks

clean: ## Remove caches and outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache outputs multirun runs

.PHONY: help setup train test test-all bench probes lint format clean
