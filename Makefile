# digitflow: every target creates the virtual environment it needs (.venv) when it is missing.
#   make train      the main job: the whole training pipeline, ending in a published version
#   make test       the fast tests (with CI=true, the slow full-MNIST tests too)
#   make test-all   every test, slow ones included
#   make lint       ruff check + ruff format --check
#   make bench      benchmarks against the peers (PyTorch CPU, raw Pillow decode)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Where tests and benchmarks read the real MNIST Parquet files from (the product's default stays the Hub).
MNIST_LOCAL ?= $(abspath ../shared/data/mnist)

ifeq ($(CI),true)
PYTEST_SELECT :=
else
PYTEST_SELECT := -m "not slow"
endif

.PHONY: venv train test test-all lint format bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

train: venv
	$(BIN)/digitflow train $(ARGS)

test: venv
	DIGITFLOW_MNIST_SOURCE=$${DIGITFLOW_MNIST_SOURCE:-$(MNIST_LOCAL)} $(BIN)/pytest $(PYTEST_SELECT) $(ARGS)

test-all: venv
	DIGITFLOW_MNIST_SOURCE=$${DIGITFLOW_MNIST_SOURCE:-$(MNIST_LOCAL)} $(BIN)/pytest $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

# The benchmarks unset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in their own command: they slow numpy here.
BENCHMARKS ?= train_speed predict_speed predict_memory
bench: $(VENV)/.bench-installed
	for b in $(BENCHMARKS); do \
		env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
			DIGITFLOW_MNIST_SOURCE=$${DIGITFLOW_MNIST_SOURCE:-$(MNIST_LOCAL)} \
			$(BIN)/python -m bench.$$b || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
