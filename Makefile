# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run test lint bench model clean

setup: system-deps $(STAMP) ## idempotent: a venv with the service, the local stack, the build and test tools

# redis-server for the test fixtures (the embedded valkey serves `make run`); installed only where missing
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

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
