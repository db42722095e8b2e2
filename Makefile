# digitflow: every target creates the virtual environment it needs (.venv) when it is missing.
#   make train      the main job: the whole training pipeline, ending in a published version
#   make test       the fast tests (with CI=true, the slow full-MNIST tests too)
#   make test-all   every test, slow ones included
#   make lint       ruff check + ruff format --check
#   make bench      benchmarks against the peers (PyTorch CPU, raw Pillow decode)
#   make server     a local Prefect server (SQLite, 127.0.0.1:4200), needed for schedules
#   make serve      `digitflow serve` against it: training on a schedule (ARGS="--cron ...")
#   make docker-build / docker-train / docker-predict IN=... OUT=...   the same jobs in containers
#   make up / down  the compose stack: PostgreSQL, Prefect server, scheduler
#   make dask-up WORKERS=N / dask-down   a Dask scheduler and N workers (compose profile dask)
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
.PHONY: server serve docker-build docker-train docker-predict up down dask-up dask-down

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

train: venv
	$(BIN)/digitflow train $(ARGS)

# One BLAS thread, as `digitflow` uses by default: two collapse when other work shares the cores.
TEST_ENV = DIGITFLOW_MNIST_SOURCE=$${DIGITFLOW_MNIST_SOURCE:-$(MNIST_LOCAL)} \
	OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1}

test: venv
	$(TEST_ENV) $(BIN)/pytest $(PYTEST_SELECT) $(ARGS)

test-all: venv
	$(TEST_ENV) $(BIN)/pytest $(ARGS)

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
BENCHMARKS ?= train_speed cnn_speed predict_speed predict_memory small_jobs
bench: $(VENV)/.bench-installed
	for b in $(BENCHMARKS); do \
		env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
			DIGITFLOW_MNIST_SOURCE=$${DIGITFLOW_MNIST_SOURCE:-$(MNIST_LOCAL)} \
			$(BIN)/python -m bench.$$b $(ARGS) || exit 1; \
	done

# Scheduling needs a Prefect server (the embedded one cannot schedule): SQLite in Prefect's home.
PREFECT_PORT ?= 4200
server: venv
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

serve: venv
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} $(BIN)/digitflow serve $(ARGS)

# Docker: the containers run as you, on DATA (default ./data, what the local CLI uses), so the
# versions they publish land in ./data/models. MNIST=folder mounts a local Parquet copy read-only.
DOCKER ?= docker
COMPOSE ?= docker compose -f docker/compose.yaml
IMAGE ?= digitflow:local
DATA ?= $(abspath data)
DOCKER_RUN = $(DOCKER) run --rm --no-healthcheck --user $$(id -u):$$(id -g) -v $(DATA):/data

docker-build:
	$(DOCKER) build -f docker/Dockerfile -t $(IMAGE) $(DOCKER_BUILD_ARGS) \
		--build-arg DIGITFLOW_GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null || echo unknown) .

docker-train:
	mkdir -p $(DATA)
	$(DOCKER_RUN) $(if $(MNIST),-v $(abspath $(MNIST)):/mnist:ro -e DIGITFLOW_MNIST_SOURCE=/mnist) \
		$(IMAGE) train $(ARGS)

docker-predict:
	@test -n "$(IN)" && test -n "$(OUT)" || { echo "usage: make docker-predict IN=folder OUT=file.parquet" >&2; exit 2; }
	mkdir -p $(DATA) $(dir $(abspath $(OUT)))
	$(DOCKER_RUN) -v $(abspath $(IN)):/in:ro -v $(dir $(abspath $(OUT))):/out \
		$(IMAGE) predict /in --output /out/$(notdir $(OUT)) $(ARGS)

up:
	$(COMPOSE) up --detach --wait

down:
	$(COMPOSE) down

# The Dask cluster for `digitflow predict --task-runner dask --dask-address tcp://127.0.0.1:8786`
# (tcp://dask-scheduler:8786 from containers of the stack).
WORKERS ?= 2
dask-up:
	$(COMPOSE) --profile dask up --detach --scale dask-worker=$(WORKERS) dask-scheduler dask-worker

dask-down:
	$(COMPOSE) --profile dask down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
