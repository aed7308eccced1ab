"""The product as separate processes, composed exactly as the README's Processes section says: its shell block
is read from README.md and run line by line with only REDIS_URL and TRITON_URL set (plus the ports and folder a
test needs to stay out of the developer's way), and the service must end up healthy and classifying."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aic.core import settings
from aic.local.modelbuild import ensure_default_model
from aic.local.ports import free_port
from stack import RunningRedis

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- processes: tests/integration/test_compose.py runs this block as written -->"


def readme_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "the README's Processes block is gone"
    block = re.search(r"```sh\n(.*?)```", text[text.index(MARKER) :], re.S)
    assert block is not None
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


def test_the_readme_block_is_the_documented_sequence() -> None:
    assert readme_block() == [
        "aic model build",
        "aic triton &",
        "aic api &",
        "aic dispatcher &",
        "aic models apply -f operator/samples/efficientnet-lite0.yaml",
    ]


def test_separate_processes_composed_as_the_readme_says_serve_classifications(
    own_redis: RunningRedis, tmp_path: Path
) -> None:
    repository = tmp_path / "model_repository"
    built = ensure_default_model(settings.load(settings.TritonSettings).model_repository, ("python",))
    shutil.copytree(built, repository / built.name)  # the cached build: `aic model build` finds it up to date
    grpc, api_port = free_port(), free_port()
    key = "compose-test-key-0123456789abcdef"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIC_", "PVC_"))},
        "REDIS_URL": own_redis.url,
        "TRITON_URL": f"127.0.0.1:{grpc}",
        # what a test adds to stay off the developer's ports and folder, and to have a key to call with
        "TRITON_GRPC_PORT": str(grpc),
        "TRITON_HTTP_PORT": str(free_port()),
        "TRITON_METRICS_PORT": str(free_port()),
        "MODEL_REPOSITORY": str(repository),
        "API_PORT": str(api_port),
        "API_KEYS": f"dev:{key}",
    }
    background: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "logs"
    logs.mkdir()
    root = f"http://127.0.0.1:{api_port}/api/v1"
    try:
        for line in readme_block():
            args = shlex.split(line.removesuffix("&"))
            assert args[0] == "aic", line
            command = [sys.executable, "-m", "aic.cli", *args[1:]]
            if line.endswith("&"):
                out = (logs / f"{args[1]}.log").open("wb")
                started = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
                background.append(started)
                if args[1] == "api":
                    wait_until(lambda: status(root) is not None, 60, logs)
                    services = (status(root) or {}).get("services")
                    assert isinstance(services, dict) and services["models"] == "no models published", services
            else:
                done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, (line, done.stdout, done.stderr)
        wait_until(lambda: (status(root) or {}).get("status") == "healthy", 60, logs)
        health = status(root)
        assert health is not None and health["services"]["models"] == "healthy (latest, v1.0)"
        selftest = subprocess.run(
            [sys.executable, "-m", "aic.cli", "selftest", "--url", root],
            env={**env, "AIC_API_KEY": key},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert selftest.returncode == 0, selftest.stdout + selftest.stderr
    finally:
        for process in background:
            os.killpg(process.pid, signal.SIGTERM)
        for process in background:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def status(root: str) -> dict[str, object] | None:
    try:
        response = httpx.get(f"{root}/health", timeout=2)
    except httpx.HTTPError:
        return None
    return dict(response.json()) if response.headers.get("content-type", "").startswith("application/json") else None


def wait_until(check: Callable[[], bool], timeout_s: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tails = {p.name: p.read_text(errors="replace")[-1500:] for p in logs.iterdir()}
    raise AssertionError(f"not reached in {timeout_s} s; logs: {tails}")
