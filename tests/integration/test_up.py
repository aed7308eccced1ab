"""`aic up`: the whole product from one command, and nothing left behind after SIGTERM."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from aic.local.ports import free_port
from PIL import Image
from skimage import data as skdata

pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def port_is_free(port: int) -> bool:
    """A new server could listen there (as servers do, SO_REUSEADDR: closed connections may linger)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def up_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's environment: nothing of the stack configured but where its data goes, plus ``extra``."""
    unset = ("REDIS_URL", "TRITON_URL", "API_KEYS", "API_HOST", "METRICS_PORT", "METRICS_HOST")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return {**env, "AIC_DATA_DIR": str(tmp_path), **extra}


def test_aic_up_serves_a_classification_and_sigterm_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    env = up_env(tmp_path, API_PORT=str(port), RATE_LIMIT_PER_MINUTE="0")
    log = tmp_path / "up.log"
    # what used to be the dispatcher's fixed metrics port is taken (by us, or by whoever has it already)
    taken = socket.socket()
    with contextlib.suppress(OSError):
        taken.bind(("127.0.0.1", 9090))
        taken.listen()
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "aic.cli", "up"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    try:
        deadline = time.monotonic() + 240
        while "ready:" not in log.read_text(errors="replace"):
            assert up.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        output = log.read_text(errors="replace")
        key = re.search(r"dev API key \(this run only\): (\S+)", output)
        assert key, output
        assert f"http://127.0.0.1:{port}/api/v1" in output
        assert "models: latest -> efficientnet-lite0; v1.0 -> efficientnet-lite0" in output
        metrics = re.search(r"(http://127\.0\.0\.1:(\d+))/metrics \(dispatcher; probes /livez, /readyz\)", output)
        assert metrics and metrics[2] != "9090", output  # a free port, printed
        assert "aic_dispatcher_ready" in httpx.get(f"{metrics[1]}/metrics", timeout=10).text
        assert httpx.get(f"{metrics[1]}/livez", timeout=10).json() == {"status": "ok", "loop": "ok"}
        photo = io.BytesIO()
        Image.fromarray(skdata.chelsea()).save(photo, format="JPEG")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers={"X-API-Key": key[1]}) as client:
            answer = client.post(
                "/classify", files={"file": ("cat.jpg", photo.getvalue())}, headers={"Prefer": "wait=60"}
            )
            assert answer.status_code == 200, answer.text
            job_id = answer.json()["job_id"]
            result = client.get(f"/result/{job_id}")
            assert result.status_code == 200, result.text
            assert result.json()["predictions"][0]["class_id"] == 285
        # the line `aic up` prints for the CLI works as printed
        line = re.search(r"client: (export .+)", output)
        assert line, output
        words = shlex.split(line[1])
        cli_env = {**env, **dict(word.split("=", 1) for word in words[1:])}
        assert cli_env["AIC_API_KEY"] == key[1]
        cat = tmp_path / "cat.jpg"
        cat.write_bytes(photo.getvalue())
        classified = subprocess.run(
            [sys.executable, "-m", "aic.cli", "classify", "--json", str(cat)], env=cli_env, capture_output=True
        )
        assert classified.returncode == 0, classified.stderr
        assert json.loads(classified.stdout)["predictions"][0]["class_name"] == "Egyptian cat"
        children = descendants(up.pid)
        assert len(children) >= 4  # valkey, tritonserver (+ its python stub), api, dispatcher
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
        taken.close()
    assert code == 0, log.read_text(errors="replace")
    assert '"level":"ERROR"' not in log.read_text(errors="replace")  # "cannot listen on 9090" was one
    time.sleep(0.5)
    assert not [pid for pid in children if alive(pid)], log.read_text(errors="replace")[-2000:]
    assert port_is_free(port)


def test_aic_up_with_a_bad_setting_prints_the_childs_message_and_exits_non_zero_without_a_traceback(
    tmp_path: Path,
) -> None:
    env = up_env(tmp_path, API_KEYS="dev:short", TRITON_URL="127.0.0.1:1", API_PORT=str(free_port()))  # no Triton
    done = subprocess.run(
        [sys.executable, "-m", "aic.cli", "up"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=180
    )
    assert done.returncode == 2, done.stdout + done.stderr  # the API's own exit code for a bad setting
    assert "API_KEYS entry for tenant 'dev' must be 'tenant:key' or 'tenant:key:admin', key >= 16 chars" in done.stderr
    assert "aic up: the api exited with 2 during start-up (its message is above); stopping" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
