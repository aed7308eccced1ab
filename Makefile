# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps lock upgrade images run test lint bench model clean

setup: system-deps $(STAMP) ## idempotent: a venv with the service, the local stack, the build, test and bench tools, from the locks

# Debian packages the tests use, installed only where missing: redis-server for the fixtures (the embedded valkey
# serves `make run`), chromium and chromium-driver for the web page's browser tests (Selenium drives them; no
# browser is ever downloaded), prometheus for promtool, which checks and unit-tests the chart's alerts
# (tests/integration/test_chart_alerts.py), and podman, buildah, runc and mmdebstrap for `make images` and the
# chart's container test (tests/containers). Packages in NO_RECOMMENDS come without their Recommends
# (prometheus's are the node exporter, smartmontools, ipmitool...: some 30 packages no test uses).
SYSTEM_DEPS := redis-server:redis-server chromium:chromium chromedriver:chromium-driver promtool:prometheus \
	podman:podman buildah:buildah runc:runc mmdebstrap:mmdebstrap
NO_RECOMMENDS := prometheus

system-deps:
	@full=; lean=; for pair in $(SYSTEM_DEPS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 && continue; \
	  case " $(NO_RECOMMENDS) " in *" $${pair#*:} "*) lean="$$lean $${pair#*:}";; *) full="$$full $${pair#*:}";; esac; \
	done; \
	if [ -n "$$full$$lean" ]; then \
	  echo "installing Debian packages:$$full$$lean"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  { [ -z "$$full" ] || $$SUDO apt-get install -y -qq $$full >/dev/null; } && \
	  { [ -z "$$lean" ] || $$SUDO apt-get install -y -qq --no-install-recommends $$lean >/dev/null; }; fi

# Installs come from the committed, hashed locks (README "Reproducible installs: the locks"), so a commit installs
# the same packages next week as today; pyproject.toml keeps the ranges and `make upgrade` moves the locks on purpose.
#   requirements.lock          everything below: runtime + the local, build, test, bench and lock extras
#   requirements-runtime.lock  the [project] dependencies alone, at the same versions (the runtime image)
#   requirements-torch.lock    torch alone: the CPU build. PyPI's torch of the same version is a CUDA build with
#                              other hashes and nvidia-* dependencies, so torch is left out of requirements.lock
#                              (its own dependencies are in it) and installed first, exactly, with --no-deps.
#                              pip finds it on its find-links here; elsewhere set
#                              PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
LOCK := requirements.lock
RUNTIME_LOCK := requirements-runtime.lock
TORCH_LOCK := requirements-torch.lock
PIP_INSTALL := $(BIN)/python -m pip install -q --require-hashes

$(STAMP): pyproject.toml $(LOCK) $(TORCH_LOCK)
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --no-deps -r $(TORCH_LOCK)
	$(PIP_INSTALL) -r $(LOCK)
	# the project itself, editable; its build backend (setuptools) is the locked one
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The locks are resolved from PyPI alone (never a machine's pip configuration or local mirrors) for CPython 3.11.2
# (Debian bookworm's, the images' Python: nothing may need a newer 3.11) on glibc 2.36 x86_64 Linux. torch's own
# requirements come from the CPU wheel, looked up in TORCH_FIND_LINKS.
TORCH_FIND_LINKS ?= $(or $(PIP_FIND_LINKS),https://download.pytorch.org/whl/cpu/torch/)
COMPILE := $(BIN)/uv pip compile pyproject.toml --no-config --quiet --generate-hashes --python-version 3.11.2 \
  --python-platform x86_64-manylinux_2_36 --index-url https://pypi.org/simple --custom-compile-command 'make lock'

lock: setup ## re-resolve the locks after a change to pyproject.toml, keeping every pin that still fits
	$(COMPILE) $(UPGRADE) --extra local --extra build --extra test --extra bench --extra lock \
	  $(foreach links,$(TORCH_FIND_LINKS),--find-links $(links)) --constraint $(TORCH_LOCK) --no-emit-package torch -o $(LOCK)
	$(COMPILE) --constraint $(LOCK) -o $(RUNTIME_LOCK)

upgrade: ## move every pin to the newest release pyproject.toml allows, reinstall, and gate it on the whole suite
	$(MAKE) lock UPGRADE=--upgrade
	$(MAKE) test || { echo "make upgrade: the suite fails on the new locks: fix the code, or take them back with" \
	  "git checkout $(LOCK) $(RUNTIME_LOCK) && make setup"; exit 1; }

model: setup ## build the default model into MODEL_REPOSITORY (cached)
	$(BIN)/aic model build

run: setup ## the whole product on this machine: embedded Redis, local Triton, default model, API, dispatcher
	$(BIN)/aic up

# podman builds the Dockerfile's targets; where no registry answers, from a local Debian base (containers/). The
# host's pip configuration is mounted into the builds (HOST_PYTHON's `pip config list`), never copied into a layer.
images: setup ## runtime, model-builder, dev and triton-cpu images with podman (cached layers: seconds when unchanged)
	HOST_PYTHON=$(BIN)/python containers/build-images.sh runtime model-builder dev triton-cpu

test: images ## the whole test suite against real Redis and Triton, the chart in podman, then lint, types, import rules
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests/unit
	$(BIN)/python -m pytest -p no:randomly tests/integration
	HOST_PYTHON=$(BIN)/python containers/build-images.sh redis-test
	$(BIN)/python -m pytest -p no:randomly tests/containers
	$(BIN)/ruff check api operator tests bench containers
	$(BIN)/ruff format --check api operator tests bench containers
	$(BIN)/mypy

lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check api operator tests bench containers
	$(BIN)/mypy

# Not part of `make test`: NVIDIA's perf_analyzer lands in $(BENCH_DIR) (git-ignored), outside the venv.
BENCH_DIR ?= .bench
BENCH_ARGS ?= --profile 20

bench: setup ## raw Triton (perf_analyzer) vs the whole service in one run -> bench/results/
	bash bench/install_perf_analyzer.sh $(BENCH_DIR)/perf_analyzer $(BIN)/python
	$(BIN)/python bench/run.py --perf-analyzer $(BENCH_DIR)/perf_analyzer/bin/perf_analyzer $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
