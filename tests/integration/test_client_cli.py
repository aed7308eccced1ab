"""``aic.client`` and ``aic classify`` / ``aic jobs`` against the real stack: the client's calls end to end, the CLI
in a pseudo-terminal (live progress drawn from the event stream) and piped (JSON lines), and each exit code."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aic.client import AsyncClient, AuthenticationError, BadRequest, Client, Conflict, NotFound
from aic.local.ports import free_port
from conftest import API_KEY, Stack
from helpers import jpeg
from skimage import data as skdata

pytestmark = pytest.mark.integration

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    files = {"cat": tmp_path / "chelsea.jpg", "coffee": tmp_path / "coffee.jpg", "text": tmp_path / "notes.jpg"}
    files["cat"].write_bytes(jpeg())
    files["coffee"].write_bytes(jpeg(skdata.coffee()))
    files["text"].write_text("not a photo, whatever its name says\n")
    return files


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with no AIC_* variables and an empty config folder, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIC_")}
    config = tmp_path / "config-home"
    config.mkdir(exist_ok=True)
    return {**env, "XDG_CONFIG_HOME": str(config), **extra}


def aic(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aic.cli", *args], env=env, capture_output=True, text=True, timeout=180
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- the client ------------------------------------------------------------------------------------------


def test_client_submits_follows_and_reads_the_result(stack: Stack) -> None:
    with Client(stack.base_url, API_KEY) as client:
        job = client.submit(jpeg(), priority="high")
        seen = list(client.follow(job.job_id))
        result = client.result(job.job_id)
    assert seen[-1].status == "completed" and seen[-1].progress == 100
    assert [s.progress for s in seen] == sorted(s.progress for s in seen)
    assert result.predictions[0].class_name == "Egyptian cat"


def test_client_batch_keeps_file_order_and_idempotency_replays_the_same_jobs(stack: Stack) -> None:
    key = f"cli-{uuid.uuid4()}"
    with Client(stack.base_url, API_KEY) as client:
        first = client.submit_batch([jpeg(), jpeg(skdata.coffee())], idempotency_key=key)
        again = client.submit_batch([jpeg(), jpeg(skdata.coffee())], idempotency_key=key)
        names = [client.result(client.wait(j.job_id).job_id).predictions[0].class_name for j in first]
    assert [j.job_id for j in again] == [j.job_id for j in first]
    assert names == ["Egyptian cat", "espresso"]


def test_client_prefer_wait_returns_the_result_inline(stack: Stack) -> None:
    with Client(stack.base_url, API_KEY) as client:
        job = client.submit(jpeg(), wait_s=60)
    assert job.status == "completed" and job.result is not None
    assert job.result.predictions[0].class_name == "Egyptian cat"


def test_client_cancels_a_pending_job_and_a_second_cancel_conflicts(quiet_stack: Stack) -> None:
    with Client(quiet_stack.base_url, API_KEY) as client:
        job = client.submit(jpeg())
        assert client.cancel(job.job_id).status == "cancelled"
        assert client.wait(job.job_id).status == "cancelled"
        with pytest.raises(Conflict) as caught:
            client.cancel(job.job_id)
    assert caught.value.status_code == 409 and caught.value.error.request_id


def test_client_errors_carry_the_error_response(stack: Stack) -> None:
    with Client(stack.base_url, "wrong-key-0123456789abcdef") as client, pytest.raises(AuthenticationError) as auth:
        client.status("anything")
    assert auth.value.error.error == "UNAUTHORIZED"
    with Client(stack.base_url, API_KEY) as client:
        with pytest.raises(NotFound) as missing:
            client.status(str(uuid.uuid4()))
        with pytest.raises(BadRequest) as bad:
            client.submit(b"plain text, not an image")
    assert missing.value.error.error == "JOB_NOT_FOUND"
    assert bad.value.error.error == "INVALID_IMAGE" and bad.value.error.request_id


async def test_async_client_token_works_as_a_bearer_credential(stack: Stack) -> None:
    async with AsyncClient(stack.base_url, API_KEY) as client:
        token = await client.token()
    async with AsyncClient(stack.base_url, token=token.access_token) as client:
        job = await client.submit(jpeg())
        final = await client.wait(job.job_id, timeout_s=120)
        result = await client.result(job.job_id)
    assert final.status == "completed"
    assert result.predictions[0].class_name == "Egyptian cat"


# --- the CLI in a terminal ---------------------------------------------------------------------------------


class Terminal:
    """A process on a pseudo-terminal (120 x 40), its output read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.master = master
        self.raw = b""

    def chunks(self, timeout_s: float) -> Iterator[bytes]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the process closed the terminal
                return
            if not chunk:
                return
            self.raw += chunk
            yield chunk
        raise TimeoutError(self.text)

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def read_until(self, needle: str, timeout_s: float = 120) -> str:
        for _ in self.chunks(timeout_s):
            if needle in self.text:
                return self.text
        raise AssertionError(f"{needle!r} never shown:\n{self.text}")

    def finish(self, timeout_s: float = 120) -> int:
        for _ in self.chunks(timeout_s):
            pass
        os.close(self.master)
        return self.process.wait(30)


def test_classify_in_a_terminal_draws_live_progress_then_the_top_k_table(
    quiet_stack: Stack, photos: dict[str, Path], tmp_path: Path
) -> None:
    env = cli_env(tmp_path, AIC_URL=quiet_stack.base_url, AIC_API_KEY=API_KEY, TERM="xterm-256color")
    terminal = Terminal([sys.executable, "-m", "aic.cli", "classify", "--top", "3", str(photos["cat"])], env)
    try:
        waiting = terminal.read_until("pending")  # drawn while no dispatcher reads the queue
        assert "chelsea.jpg" in waiting and "0%" in waiting
        with quiet_stack.own_dispatcher():
            code = terminal.finish()
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()
    text = terminal.text
    assert code == 0, text
    assert "100%" in text and "completed" in text
    assert "━" in text  # the bar itself
    table = text[text.index("Egyptian cat") - 400 :]
    assert re.search(r"1 │ Egyptian cat\s+│\s+\d+\.\d%", table), text
    assert "#" in table and "confidence" in table
    assert len(re.findall(r"^\s*│\s*\d │", table, flags=re.MULTILINE)) == 3  # --top 3 rows


# --- the CLI piped -----------------------------------------------------------------------------------------


def test_classify_piped_prints_one_json_line_per_job_of_a_batch(
    stack: Stack, photos: dict[str, Path], tmp_path: Path
) -> None:
    env = cli_env(tmp_path, AIC_URL=stack.base_url, AIC_API_KEY=API_KEY)
    done = aic("classify", "--top", "2", str(photos["cat"]), str(photos["coffee"]), env=env)  # stdout is a pipe
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stdout)
    assert [line["file"] for line in lines] == ["chelsea.jpg", "coffee.jpg"]
    assert [line["status"] for line in lines] == ["completed", "completed"]
    assert [line["predictions"][0]["class_name"] for line in lines] == ["Egyptian cat", "espresso"]
    assert all(len(line["predictions"]) == 2 for line in lines)
    assert "━" not in done.stdout + done.stderr  # no progress bars into a pipe


def test_classify_no_wait_prints_the_job_and_jobs_commands_follow_it_up(
    stack: Stack, photos: dict[str, Path], tmp_path: Path
) -> None:
    env = cli_env(tmp_path, AIC_URL=stack.base_url, AIC_API_KEY=API_KEY)
    submitted = aic("classify", "--no-wait", "--json", "--priority", "urgent", str(photos["cat"]), env=env)
    assert submitted.returncode == 0, submitted.stderr
    (line,) = json_lines(submitted.stdout)
    assert line["status"] == "pending" and "predictions" not in line
    with Client(stack.base_url, API_KEY) as client:
        client.wait(line["job_id"])
    status = aic("jobs", "status", line["job_id"], env=env)
    result = aic("jobs", "result", "--top", "1", line["job_id"], env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "completed"
    assert result.returncode == 0, result.stderr
    assert [p["class_name"] for p in json.loads(result.stdout)["predictions"]] == ["Egyptian cat"]


def test_url_and_key_come_from_the_config_file_when_neither_flag_nor_environment_says(
    stack: Stack, photos: dict[str, Path], tmp_path: Path
) -> None:
    env = cli_env(tmp_path)
    config = Path(env["XDG_CONFIG_HOME"]) / "aic" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{stack.base_url}"\napi_key = "{API_KEY}"\n')
    done = aic("classify", str(photos["cat"]), env=env)
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout)[0]["predictions"][0]["class_name"] == "Egyptian cat"
    flags_win = aic("classify", "--key", "wrong-key-0123456789abcdef", str(photos["cat"]), env=env)
    assert flags_win.returncode == 3


def test_the_servers_root_url_is_taken_for_its_api_prefix(
    stack: Stack, photos: dict[str, Path], tmp_path: Path
) -> None:
    root = stack.base_url.removesuffix("/api/v1")  # what the web page's address shows
    assert root != stack.base_url
    done = aic("classify", "--url", root, "--key", API_KEY, str(photos["cat"]), env=cli_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout)[0]["predictions"][0]["class_name"] == "Egyptian cat"


# --- exit codes --------------------------------------------------------------------------------------------


def test_exit_1_when_a_job_is_cancelled_while_classify_waits(
    quiet_stack: Stack, photos: dict[str, Path], tmp_path: Path
) -> None:
    env = cli_env(tmp_path, AIC_URL=quiet_stack.base_url, AIC_API_KEY=API_KEY)
    args = [sys.executable, "-m", "aic.cli", "classify", "--json", str(photos["cat"])]
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stderr is not None and process.stdout is not None
        announced = process.stderr.readline()  # "aic: chelsea.jpg: job <id>", before it waits
        job_id = announced.strip().rsplit(" ", 1)[-1]
        with Client(quiet_stack.base_url, API_KEY) as client:
            client.cancel(job_id)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 1, announced + err
    (line,) = json_lines(out)
    assert line["job_id"] == job_id and line["status"] == "cancelled"
    result = aic("jobs", "result", job_id, env=env)
    assert result.returncode == 1 and "409 CONFLICT" in result.stderr
    cancel_again = aic("jobs", "cancel", job_id, env=env)
    assert cancel_again.returncode == 1


def test_exit_2_for_input_the_cli_refuses_before_uploading(
    stack: Stack, photos: dict[str, Path], tmp_path: Path
) -> None:
    env = cli_env(tmp_path, AIC_URL=stack.base_url, AIC_API_KEY=API_KEY)
    text = aic("classify", str(photos["cat"]), str(photos["text"]), env=env)
    missing = aic("classify", str(tmp_path / "nowhere.jpg"), env=env)
    for done, message in ((text, "notes.jpg: not a JPEG, PNG or WebP image"), (missing, "nowhere.jpg: no such file")):
        assert done.returncode == 2
        assert message in done.stderr and "usage:" not in done.stderr  # ours, not argparse's
        assert done.stdout == ""  # nothing was submitted


def test_exit_2_for_input_the_service_refuses_and_for_an_unknown_job(
    stack: Stack, photos: dict[str, Path], tmp_path: Path
) -> None:
    env = cli_env(tmp_path, AIC_URL=stack.base_url, AIC_API_KEY=API_KEY)
    unknown_model = aic("classify", "--model", "no-such-alias", str(photos["cat"]), env=env)
    assert unknown_model.returncode == 2 and "400" in unknown_model.stderr, unknown_model.stderr
    unknown_job = aic("jobs", "status", str(uuid.uuid4()), env=env)
    assert unknown_job.returncode == 2 and "JOB_NOT_FOUND" in unknown_job.stderr
    usage = aic("classify", "--top", "9", str(photos["cat"]), env=env)
    assert usage.returncode == 2 and "usage:" in usage.stderr  # a usage error is argparse's, and still 2


def test_exit_3_for_a_wrong_or_missing_key(stack: Stack, photos: dict[str, Path], tmp_path: Path) -> None:
    wrong = aic("classify", str(photos["cat"]), env=cli_env(tmp_path, AIC_URL=stack.base_url, AIC_API_KEY="x" * 24))
    assert wrong.returncode == 3 and "401 UNAUTHORIZED" in wrong.stderr
    assert "x" * 24 not in wrong.stderr + wrong.stdout  # the key is never echoed
    none = aic("classify", str(photos["cat"]), env=cli_env(tmp_path, AIC_URL=stack.base_url))
    assert none.returncode == 3 and "no API key" in none.stderr


def test_exit_4_when_the_service_is_unreachable(photos: dict[str, Path], tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/api/v1"
    done = aic("classify", str(photos["cat"]), env=cli_env(tmp_path, AIC_URL=nobody, AIC_API_KEY=API_KEY))
    assert done.returncode == 4 and "ConnectError" in done.stderr
    jobs = aic("jobs", "status", "x", env=cli_env(tmp_path, AIC_URL=nobody, AIC_API_KEY=API_KEY))
    assert jobs.returncode == 4
