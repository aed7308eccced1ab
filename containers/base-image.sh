#!/bin/sh
# A local Python base image for the Dockerfile where no registry is reachable: Debian bookworm (Python 3.11, as the
# pinned python:3.11-slim-bookworm) made by mmdebstrap from this machine's own apt sources, imported into podman.
#   containers/base-image.sh [IMAGE]        (default localhost/aic-python:3.11-bookworm; kept when it exists)
set -eu
image=${1:-localhost/aic-python:3.11-bookworm}
if podman image exists "$image"; then echo "$image exists"; exit 0; fi

# the machine's enabled apt sources (one-line .list and deb822 .sources files), as apt itself reads them
set --
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -s "$f" ] && set -- "$@" "$f"
done
[ $# -gt 0 ] || set -- http://deb.debian.org/debian

# python is `python` on PATH as in the official image (python-is-python3); libpython3.11 (the official image is
# built --enable-shared) for the Triton python backend stub; pip (the build stage's `python -m pip wheel`) and
# venv (the Dockerfile's /opt/venv) as the official image has them;
# ca-certificates for pip over HTTPS; no apt lists or docs left behind
mmdebstrap --variant=apt --mode=root --format=tar \
  --include=python3,python3-pip,python3-venv,python-is-python3,libpython3.11,ca-certificates,tzdata \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm - "$@" \
  | podman import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$image"
