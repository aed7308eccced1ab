"""The benchmark's processes: redis-server, `aic api` / `aic dispatcher` as deployed, and CPU accounting.

Every long-lived child runs in its own session, so its CPU (with its children's: Triton's python stubs) can be
read from /proc by session id and compared with what the whole machine spent: the rest is other people's work.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from aic.store.connection import PERSISTENCE, server_args

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


REDIS_PERSISTENCE = server_args(PERSISTENCE)
"""How the bench's redis-server keeps its data: as the chart's Redis and `aic up`'s do."""


def start_redis(
    port: int, workdir: Path, log: Path, persistence: list[str] = REDIS_PERSISTENCE
) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make setup installs it)")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", *persistence]
    argv += ["--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"]
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_aic(role: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aic.cli", role],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_http(url: str, timeout_s: float, children: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            raise RuntimeError(f"a service exited during start-up (see its log): {url}")
        with suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


def machine_cpu_s() -> tuple[float, float]:
    """(busy, elapsed) CPU seconds of the whole machine since boot, all cores together."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / TICKS_PER_S, sum(fields) / TICKS_PER_S


def sessions_cpu_s(sessions: dict[int, str]) -> dict[str, float]:
    """CPU seconds (user + system) of the live processes of each session, by the session's name, with what their
    children that already ended spent (``cutime``/``cstime``: Redis's forks that rewrite its append-only file; they
    ran 0.36 ms of CPU per job before bench/README.md's 2026-12-01 findings, and were left out until then)."""
    spent = dict.fromkeys(sessions.values(), 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        session = int(rest[3])
        if session in sessions:
            spent[sessions[session]] += sum(int(ticks) for ticks in rest[11:15]) / TICKS_PER_S
    return spent


def children_cpu_s() -> float:
    """CPU seconds of the children this process has waited for (perf_analyzer runs, load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """What one phase cost: CPU seconds per component of ours, and the share of the machine others used."""

    sessions: dict[int, str]

    def __enter__(self) -> CpuMeter:
        self._machine = machine_cpu_s()
        self._ours = sessions_cpu_s(self.sessions)
        self._children = children_cpu_s()
        self._wall = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        busy, total = machine_cpu_s()
        ours = sessions_cpu_s(self.sessions)
        self.components = {k: round(ours[k] - self._ours.get(k, 0.0), 1) for k in ours}
        self.components["load generator / perf_analyzer"] = round(children_cpu_s() - self._children, 1)
        self.wall_s = time.monotonic() - self._wall
        self.machine_busy_s = busy - self._machine[0]
        self.machine_total_s = total - self._machine[1]

    def as_dict(self) -> dict[str, Any]:
        ours = sum(self.components.values())
        others = max(0.0, self.machine_busy_s - ours)
        return {
            "wall_s": round(self.wall_s, 1),
            "ours_cpu_s": round(ours, 1),
            "cpu_s_by_component": self.components,
            "machine_busy_pct": round(100 * self.machine_busy_s / max(self.machine_total_s, 1e-9), 1),
            "other_processes_pct": round(100 * others / max(self.machine_total_s, 1e-9), 1),
        }
