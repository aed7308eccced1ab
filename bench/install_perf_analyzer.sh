#!/usr/bin/env bash
# NVIDIA's perf_analyzer into DEST (default .bench/perf_analyzer), outside the project's venv.
# The binary ships in tritonclient's manylinux wheels up to 2.41 (the PyPI name perf-analyzer is a placeholder).
# It needs libb64 and libcudart.so.12 at load time; the nvidia-pytriton wheel in the venv carries both
# (hashed names), so they are linked under their plain names in DEST/lib: no root, no apt.
set -euo pipefail
dest=${1:-.bench/perf_analyzer}
python=${2:-.venv/bin/python}
if [ -x "$dest/bin/perf_analyzer" ] && LD_LIBRARY_PATH="$dest/lib" "$dest/bin/perf_analyzer" --version >/dev/null 2>&1; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
  'tritonclient==2.41.0' -d "$tmp"
mkdir -p "$dest/bin" "$dest/lib"
"$python" - "$tmp" "$dest/bin/perf_analyzer" <<'PY'
import pathlib, shutil, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("tritonclient-2.41.0-*.whl"))
with zipfile.ZipFile(wheel) as archive, archive.open("tritonclient-2.41.0.data/data/bin/perf_analyzer") as src:
    with open(sys.argv[2], "wb") as out:
        shutil.copyfileobj(src, out)
PY
chmod 755 "$dest/bin/perf_analyzer"
libs=$("$python" -c 'import importlib.util, pathlib; s = importlib.util.find_spec("pytriton"); print(pathlib.Path(next(iter(s.submodule_search_locations))).parent / "nvidia_pytriton.libs")')
ln -sf "$(ls "$libs"/libcudart-*.so.12* | head -1)" "$dest/lib/libcudart.so.12"
ln -sf "$(ls "$libs"/libb64-*.so.0d | head -1)" "$dest/lib/libb64.so.0d"
if LD_LIBRARY_PATH="$dest/lib" ldd "$dest/bin/perf_analyzer" | grep 'not found'; then
  echo "perf_analyzer: libraries missing (above)" >&2
  exit 1
fi
LD_LIBRARY_PATH="$dest/lib" "$dest/bin/perf_analyzer" --version
