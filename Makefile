# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run test lint bench model clean

setup: system-deps $(STAMP) ## idempotent: a venv with the service, the local stack, the build and test tools

# Debian packages the tests use, installed only where missing: redis-server for the fixtures (the embedded valkey
# serves `make run`), chromium and chromium-driver for the web page's browser tests (Selenium drives them; no
# browser is ever downloaded)
SYSTEM_DEPS := redis-server:redis-server chromium:chromium chromedriver:chromium-driver

system-deps:
	@missing=; for pair in $(SYSTEM_DEPS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; fi

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exactly: the CPU wheel that is on disk here (a looser spec pulls a CUDA build)
	$(BIN)/python -m pip install -q 'torch==2.13.0'
	$(BIN)/python -m pip install -q -e '.[local,build,test]'
	touch $(STAMP)

model: setup ## build the default model into MODEL_REPOSITORY (cached)
	$(BIN)/aic model build

run: setup ## the whole product on this machine: embedded Redis, local Triton, default model, API, dispatcher
	$(BIN)/aic up

test: setup ## the whole test suite against real Redis and Triton, then lint, types and the import rules
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests/unit
	$(BIN)/python -m pytest -p no:randomly tests/integration
	$(BIN)/ruff check api operator tests bench
	$(BIN)/ruff format --check api operator tests bench
	$(BIN)/mypy

lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check api operator tests bench
	$(BIN)/mypy

# Not part of `make test`: NVIDIA's perf_analyzer lands in $(BENCH_DIR) (git-ignored), outside the venv.
BENCH_DIR ?= .bench
BENCH_ARGS ?= --profile 20
BENCH_STAMP := $(VENV)/.bench-installed

bench: setup $(BENCH_STAMP) ## raw Triton (perf_analyzer) vs the whole service in one run -> bench/results/
	bash bench/install_perf_analyzer.sh $(BENCH_DIR)/perf_analyzer $(BIN)/python
	$(BIN)/python bench/run.py --perf-analyzer $(BENCH_DIR)/perf_analyzer/bin/perf_analyzer $(BENCH_ARGS)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[local,build,test,bench]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
