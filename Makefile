# Balanced Multimodal Learning, executable — build, test and clean.
#   make book    execute every chapter (profile $(MMLAB_PROFILE)) and build the HTML into _build/html
#   make test    the test suite, every notebook included, in the smoke profile
# Run `make help` for the list.

SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT   := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Profile of `make book` (smoke | quick | full); CI sets smoke.
MMLAB_PROFILE ?= quick
export MMLAB_PROFILE

# Development and CI data live next to the repository; elsewhere mmlab downloads to ~/.cache/mmlab.
ifeq ($(origin MMLAB_DATA),undefined)
  ifneq ($(wildcard $(ROOT)/../shared/data),)
    MMLAB_DATA := $(abspath $(ROOT)/../shared/data)
    export MMLAB_DATA
  endif
endif

# No display: scripts and tests draw with Agg (scripts/build_book.py gives its kernels the inline backend).
MPLBACKEND ?= Agg
export MPLBACKEND

# Extra arguments: make test PYTEST_ARGS="-k notebooks -x"; make book BOOK_ARGS="--only 01_modality_imbalance"
PYTEST_ARGS ?=
BOOK_ARGS   ?=
# Extra pip options for `make venv`, e.g. PyTorch's CPU wheels on a machine without a GPU:
#   make venv PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS    ?=

.PHONY: help venv book test clean

help:
	@echo "make venv    create .venv and install mmlab with its [book,test] extras (once per pyproject.toml change); PIP_ARGS=... passes options"
	@echo "make book    execute every chapter (MMLAB_PROFILE=$(MMLAB_PROFILE)) and build _build/html; BOOK_ARGS=... passes options"
	@echo "make test    run tests/ and every notebook (nbval) in the smoke profile; PYTEST_ARGS=... passes options"
	@echo "make clean   remove _build and the local smoke/quick results"
	@echo "MMLAB_DATA=$(MMLAB_DATA)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# (the machine's pip configuration names local indexes that may be absent: drop pip's notes about them)
	set -o pipefail; $(PY) -m pip install --quiet --disable-pip-version-check $(PIP_ARGS) -e ".[book,test]" 2>&1 \
	  | { grep -v "^WARNING: Location 'file://" || true; }
	@touch $@

book: venv
	$(PY) scripts/build_book.py $(BOOK_ARGS)

test: venv
	MMLAB_PROFILE=smoke $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env $(PYTEST_ARGS)

clean:
	rm -rf _build results/smoke results/quick
