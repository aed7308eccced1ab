#!/bin/sh
# `tritonserver` of the triton-cpu image: the nvidia-pytriton wheel's server started as the wheel needs, with the
# caller's arguments (the chart's: --model-repository, --model-control-mode=explicit, ports, ...) after its own.
#   - the python backend chmods its stub on every model load, which a read-only root filesystem refuses: the
#     backends are copied to TRITON_BACKEND_DIRECTORY (default $TMPDIR or /tmp, the chart's emptyDir) at each start
#   - the stub embeds libpython and the wheel's libraries sit beside it: both on LD_LIBRARY_PATH
#   - the stub derives sys.prefix from the first python3 on PATH: the venv's (numpy, onnxruntime for model.py)
set -eu
backends=${TRITON_BACKEND_DIRECTORY:-${TMPDIR:-/tmp}/triton-backends}
rm -rf "$backends"
mkdir -p "$backends"
cp -R /opt/tritonserver/backends/. "$backends/"
libdir=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
export LD_LIBRARY_PATH="$libdir:/opt/tritonserver-libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="/opt/venv/bin:$PATH"
exec /opt/tritonserver/bin/tritonserver \
  --backend-directory="$backends" \
  --cache-directory=/opt/tritonserver/caches \
  --pinned-memory-pool-byte-size=0 \
  "$@"
