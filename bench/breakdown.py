"""Below the Python profiles: what Redis does per job, and which code each component's CPU is spent in.

    .venv/bin/python bench/breakdown.py [--duration-s 20]

One stack as `make bench` runs it in (b) (Triton, a redis-server, `aic api`, one `aic dispatcher`, 32 clients of
bench/loadgen.py uploading multipart forms). Over the measured window it reports, per job:

- the CPU of each component (``procs.CpuMeter``, as everywhere in bench/);
- Redis's own account of its commands (``INFO commandstats``, reset when the window starts): calls and
  microseconds per job of each command. An EVALSHA's time includes the commands its script ran and an EXEC's
  those of its transaction, each also counted under its own name;
- where ``perf`` is installed (Debian's linux-perf), the share of each shared object in the samples of redis-server,
  the API and the dispatcher (``perf record`` at 499 Hz): libjpeg and Pillow's ``_imaging`` against the Python
  interpreter, libc's copies and the kernel. py-spy (`make bench --profile`) sees Python frames only; this is the
  layer under them.

Writes bench/results/breakdown.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import photos  # noqa: E402
import procs  # noqa: E402
import run  # noqa: E402
from aic.core import settings as aic_settings  # noqa: E402
from aic.local.modelbuild import ensure_default_model  # noqa: E402
from aic.local.ports import free_port  # noqa: E402
from aic.local.triton import LocalTriton, on_free_ports  # noqa: E402

PROFILED = ("redis", "api", "dispatcher")
TOP_OBJECTS = 8
BINARY_NAMES = {"redis-check-rdb": "redis-server"}
"""Debian's redis-server is a link to the binary redis-check-rdb, the name perf reports."""


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=20.0, help="measured seconds of load")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="load generator's warm-up (measured)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--poll-ms", type=int, default=50)
    work = BENCH.parent / ".bench" / "breakdown"
    parser.add_argument("--work", type=Path, default=work, help="logs, photos, Redis data, perf data")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    args.dispatchers = 1  # run.start_service's option
    return args


def start_perf(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes] | None:
    perf = shutil.which("perf")
    if perf is None:
        return None
    argv = [perf, "record", "-F", "499", "-o", str(output), "-p", str(pid), "--", "sleep", f"{seconds:.1f}"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def shared_objects(data: Path) -> dict[str, float]:
    """Per cent of the samples in ``data`` by shared object (``[kernel.kallsyms]`` for the kernel)."""
    argv = ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio", "--percent-limit", "0.5"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    shares: dict[str, float] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%") and not line.startswith("#"):
            shares[BINARY_NAMES.get(parts[1], parts[1])] = float(parts[0].rstrip("%"))
    return dict(sorted(shares.items(), key=lambda kv: -kv[1])[:TOP_OBJECTS])


def commands_per_job(stats: dict[str, Any], jobs: int) -> dict[str, dict[str, float]]:
    rows = {
        name.removeprefix("cmdstat_"): {
            "calls_per_job": round(int(stat["calls"]) / jobs, 2),
            "us_per_job": round(int(stat["usec"]) / jobs, 1),
            "us_per_call": round(float(stat["usec_per_call"]), 1),
        }
        for name, stat in stats.items()
    }
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["us_per_job"]))


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Breakdown {result['started_at']}",
        "",
        f"`{result['command']}`: {result['jobs']} jobs in {result['window_s']} s ({result['jobs_per_s']} jobs/s).",
        "",
        "## CPU ms per job",
        "",
        "| " + " | ".join(result["cpu_ms_per_job"]) + " |",
        "|" + "---|" * len(result["cpu_ms_per_job"]),
        "| " + " | ".join(str(v) for v in result["cpu_ms_per_job"].values()) + " |",
        "",
        "## Redis commands per job (INFO commandstats)",
        "",
        "An EVALSHA's time includes the commands its script ran, an EXEC's those of its transaction; each of them is",
        "counted under its own name too, so the rows do not add up to Redis's time.",
        "",
        "| command | calls per job | us per job | us per call |",
        "|---|---|---|---|",
    ]
    for name, row in result["redis_commands"].items():
        if row["us_per_job"] >= 0.5:
            lines.append(f"| {name} | {row['calls_per_job']} | {row['us_per_job']} | {row['us_per_call']} |")
    lines.append("")
    if result["shared_objects"]:
        lines += ["## Where each process's samples fall (perf, % by shared object)", ""]
        for name, shares in result["shared_objects"].items():
            listed = ", ".join(f"{dso} {share}" for dso, share in shares.items())
            lines.append(f"- **{name}**: {listed}")
    else:
        lines.append("No shared-object split: perf is not installed (`apt-get install linux-perf`) or may not record.")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = arguments()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    started = time.time()
    base_settings = aic_settings.load(aic_settings.TritonSettings)
    ensure_default_model(base_settings.model_repository, ("python",))
    photo_dir = args.work / "photos"
    photos.write(photo_dir)
    key = secrets.token_urlsafe(24)
    redis_port = free_port()
    with ExitStack() as stack:
        triton = stack.enter_context(
            LocalTriton(on_free_ports(base_settings, triton_timeout_s=180.0), log_path=args.work / "triton.log")
        )
        url, sessions = run.start_service(stack, args, triton, key, redis_port)
        run.load(args, url, key, photo_dir, 3.0)  # imports, connections, the first inferences
        pids = {name: pid for pid, name in sessions.items()}
        client = redis.Redis(port=redis_port)
        client.config_resetstat()
        window_s = args.warmup_s + args.duration_s
        perfs = {name: start_perf(pids[name], window_s, args.work / f"perf-{name}.data") for name in PROFILED}
        with procs.CpuMeter(sessions) as cpu:
            service = run.load(args, url, key, photo_dir, args.duration_s)
        stats = client.info("commandstats")
        for process in perfs.values():
            if process is not None:
                process.wait(timeout=60)
    jobs, counted_by = loadgen.jobs_of(service)
    result = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "command": " ".join([".venv/bin/python bench/breakdown.py", *sys.argv[1:]]),
        "jobs": jobs,
        "jobs_counted_by": counted_by,
        "window_s": window_s,
        "jobs_per_s": service["jobs_per_s"],
        "cpu_ms_per_job": {name: round(1000 * s / jobs, 2) for name, s in cpu.components.items()},
        "redis_commands": commands_per_job(stats, jobs),
        "shared_objects": {
            name: shared_objects(args.work / f"perf-{name}.data")
            for name, process in perfs.items()
            if process is not None and process.returncode == 0  # perf may be refused (kernel.perf_event_paranoid)
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "breakdown.json").write_text(json.dumps(result, indent=2) + "\n")
    report = markdown(result)
    (args.out / "breakdown.md").write_text(report)
    print(report, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
