#!/bin/sh
# `make images`: the Dockerfile's runtime, model-builder, dev and triton-cpu targets built with podman.
#   - base: the Dockerfile's pinned PYTHON_IMAGE where its registry answers; else a local Debian bookworm base made
#     by containers/base-image.sh from this machine's apt sources (PYTHON_IMAGE=... in the environment overrides both)
#   - pip in the RUN steps uses what the host's pip uses (`pip config list`: CA bundle, find-links folders, file://
#     indexes, constraints): those files are mounted read-only for the build and a pip.conf naming them is mounted at
#     /etc/pip.conf; nothing of it lands in a layer. Without them pip goes to PyPI as in any other build.
#   - torch for the model-builder comes from a find-links folder holding torch 2.13.0 where there is one
# Usage: containers/build-images.sh [TARGET...]   (default: all four; TAG defaults to the chart's appVersion)
set -eu
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/containers/containers.conf}"
REGISTRY=${REGISTRY:-ghcr.io/aic-dev}
TAG=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/async-image-classifier/Chart.yaml)}
LOCAL_BASE=${LOCAL_BASE:-localhost/aic-python:3.11-bookworm}
HOST_PYTHON=${HOST_PYTHON:-python3}
targets=${*:-runtime model-builder dev triton-cpu}

pinned=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
set --
if [ -n "${PYTHON_IMAGE:-}" ]; then
  set -- --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"
elif podman image exists "$pinned" || podman pull -q "$pinned" >/dev/null 2>&1; then
  echo "base: $pinned"
else
  echo "base: no registry reachable for $pinned; a local bookworm base ($LOCAL_BASE)"
  containers/base-image.sh "$LOCAL_BASE"
  set -- --build-arg "PYTHON_IMAGE=$LOCAL_BASE"
fi

# the host pip's configuration, restricted to local files and folders, mounted where the host has them
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$HOST_PYTHON" -m pip config list 2>/dev/null | "$HOST_PYTHON" containers/pip_mounts.py \
  --conf "$scratch/pip.conf" --volumes "$scratch/volumes" --torch-find-links "$scratch/torch" 
if [ -s "$scratch/pip.conf" ]; then
  set -- "$@" -v "$scratch/pip.conf:/etc/pip.conf:ro"
  while read -r path; do set -- "$@" -v "$path:$path:ro"; done < "$scratch/volumes"
fi
if [ -s "$scratch/torch" ]; then set -- "$@" --build-arg "TORCH_FIND_LINKS=$(cat "$scratch/torch")"; fi

for target in $targets; do
  file=Dockerfile stage="--target $target"
  case $target in
    runtime) name=$REGISTRY/async-image-classifier ;;
    # not a product image: Redis for the chart's container test (tests/containers), on the same base
    redis-test) name=localhost/aic-redis-test; file=tests/containers/redis.Containerfile stage= ;;
    *) name=$REGISTRY/async-image-classifier-$target ;;
  esac
  echo "== $target -> $name:$TAG"
  start=$(date +%s)
  podman build --layers $stage --build-arg "VERSION=$TAG" "$@" -t "$name:$TAG" -f "$file" .
  echo "== $target built in $(( $(date +%s) - start )) s"
done
