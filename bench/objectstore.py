"""Uploads in Redis against uploads in an object store: Redis CPU and memory per job, API CPU per job.

    .venv/bin/python bench/objectstore.py [--rounds 2] [--duration-s 20] [--queued 10000]

One Triton for the whole run; every measurement starts a fresh redis-server, `aic api` and `aic dispatcher`
(bench/run.py's `start_service`) with:

- **redis**: `OBJECT_STORE_URL` unset, the uploads' bytes in `job:{id}:image`;
- **file**: `OBJECT_STORE_URL=file://<temp dir>`, Redis keeps the object's path;

alternated (redis, file, redis, file, ...) so both meet the same neighbours on the CPU. Each round loads the stack
with bench/loadgen.py (multipart uploads of the 70 photos, `Prefer: wait`) and reads each component's CPU from
/proc (`procs.CpuMeter`): Redis CPU per job is the redis-server session's user + system time (with its AOF
rewrite children) over the jobs, the API's likewise.

Then, once per mode, **memory**: a stack with no dispatcher, ``--queued`` jobs submitted (the photos as raw
bodies), Redis's `INFO memory` `used_memory` before and after: bytes per queued job.

And **presigned** (the direct-upload path): a `file://` store signs no URL (`Uploads.sign_put` answers None,
`POST /uploads` 400), so this mode keeps the uploads on moto's S3 server (its own process, its CPU reported apart
and not counted). Clients reserve (`POST /uploads`), PUT the JPEG to the presigned URL and submit by `upload_id`
(the API's claim: a HEAD and the first 64 KiB). moto is no performance reference: only the API's CPU per job
(reserve + claim + the job, no upload bytes through the API) is read from this mode. Writes
bench/results/objectstore-latest.{md,json} and a timestamped copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
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

STORE_ENV = ("OBJECT_STORE_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
MOTO_KEY = "bench"
"""moto accepts any credentials."""
COMPONENTS = ("redis", "api", "dispatcher", "triton")


def arguments() -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--rounds", type=int, default=2, help="alternations of (redis, file)")
    cli.add_argument("--duration-s", type=float, default=20.0, help="measured seconds of load per round")
    cli.add_argument("--warmup-s", type=float, default=3.0, help="load generator's warm-up (measured)")
    cli.add_argument("--clients", type=int, default=16)
    cli.add_argument("--poll-ms", type=int, default=50)
    cli.add_argument("--queued", type=int, default=10_000, help="jobs queued (no dispatcher) for the memory figure")
    cli.add_argument("--no-presigned", action="store_true", help="skip the presigned mode (moto)")
    cli.add_argument("--memory-only", action="store_true", help="only the memory figure (no load rounds, no presigned)")
    cli.add_argument(
        "--redis-extra",
        default="",
        metavar="ARGS",
        help='more redis-server options for every stack, e.g. "--hash-max-listpack-value 128"',
    )
    cli.add_argument("--work", type=Path, default=BENCH.parent / ".bench/objectstore")
    cli.add_argument("--out", type=Path, default=BENCH / "results")
    args = cli.parse_args()
    args.redis_options = procs.REDIS_PERSISTENCE + shlex.split(args.redis_extra)  # run.start_service's option
    return args


class Store:
    """The object store environment one stack is started with (restored afterwards)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __enter__(self) -> Store:
        self.saved = {k: os.environ.pop(k) for k in STORE_ENV if k in os.environ}
        os.environ.update(self.env)
        return self

    def __exit__(self, *_: object) -> None:
        for k in STORE_ENV:
            os.environ.pop(k, None)
        os.environ.update(self.saved)


def store_env(mode: str, root: Path) -> dict[str, str]:
    if mode == "redis":
        return {}
    folder = Path(tempfile.mkdtemp(prefix="uploads-", dir=root))
    return {"OBJECT_STORE_URL": folder.as_uri()}


def fresh(args: argparse.Namespace, name: str, dispatchers: int) -> argparse.Namespace:
    """``args`` for one fresh stack: a work folder of its own (Redis's AOF starts empty), removed afterwards."""
    stack_args = argparse.Namespace(**vars(args))
    stack_args.work = args.work / name
    shutil.rmtree(stack_args.work, ignore_errors=True)
    stack_args.work.mkdir(parents=True)
    stack_args.dispatchers = dispatchers
    stack_args.photos = args.work / "photos"
    return stack_args


class Ticks:
    """CPU seconds per component over a block, at /proc's tick (10 ms), not procs.CpuMeter's 0.1 s rounding:
    Redis spends a few tenths of a second in a round."""

    def __init__(self, sessions: dict[int, str]) -> None:
        self.sessions = sessions

    def __enter__(self) -> Ticks:
        self.before = procs.sessions_cpu_s(self.sessions)
        return self

    def __exit__(self, *_: object) -> None:
        after = procs.sessions_cpu_s(self.sessions)
        self.spent = {k: after[k] - self.before.get(k, 0.0) for k in after}


def per_job(cpu: Ticks, jobs: int) -> dict[str, float]:
    return {k: round(1000 * cpu.spent.get(k, 0.0) / jobs, 3) for k in COMPONENTS}


def load_round(args: argparse.Namespace, triton: LocalTriton, mode: str, env: dict[str, str]) -> dict[str, Any]:
    """One fresh stack under bench/loadgen.py's load: CPU ms per job by component."""
    key = secrets.token_urlsafe(24)
    args = fresh(args, f"stack-{mode}", 1)
    with ExitStack() as stack, Store(env):
        stack.callback(shutil.rmtree, args.work, True)
        url, sessions = run.start_service(stack, args, triton, key)
        run.load(args, url, key, args.photos, 2.0)  # imports, connections, first inferences
        with procs.CpuMeter(sessions) as cpu, Ticks(sessions) as ticks:
            service = run.load(args, url, key, args.photos, args.duration_s)
    jobs, counted_by = loadgen.jobs_of(service)
    return {
        "mode": mode,
        "jobs": jobs,
        "jobs_counted_by": counted_by,
        "jobs_per_s": service["jobs_per_s"],
        "errors": service["errors"],
        "cpu_ms_per_job": per_job(ticks, jobs),
        "others_pct": cpu.as_dict()["other_processes_pct"],
    }


async def flood(url: str, key: str, bodies: list[bytes], count: int, clients: int = 8) -> tuple[int, str]:
    """Submit ``count`` jobs (raw JPEG bodies); returns how many were accepted, and the last job's id."""
    accepted = 0
    last = ""
    turn = iter(range(count))

    async def client() -> None:
        nonlocal accepted, last
        headers = {"X-API-Key": key, "Content-Type": "image/jpeg"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            for i in turn:
                answer = await http.post("/classify", content=bodies[i % len(bodies)])
                if answer.status_code != 200:
                    raise RuntimeError(f"submit failed: {answer.status_code} {answer.text}")
                accepted += 1
                last = str(answer.json()["job_id"])

    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted, last


def job_keys(client: redis.Redis, job_id: str) -> dict[str, int]:
    """MEMORY USAGE of each of one queued job's own keys (``job:{id}:*``), by the key's last part."""
    sizes: dict[str, int] = {}
    for name in client.scan_iter(match=f"job:{{{job_id}}}:*", count=1000):
        sizes[name.decode().rsplit(":", 1)[1]] = int(client.memory_usage(name, samples=0) or 0)
    return dict(sorted(sizes.items()))


def memory(args: argparse.Namespace, triton: LocalTriton, mode: str, env: dict[str, str]) -> dict[str, Any]:
    """Redis used_memory with ``--queued`` jobs waiting (no dispatcher): bytes per queued job."""
    key = secrets.token_urlsafe(24)
    args = fresh(args, f"stack-{mode}", 0)
    bodies = [body for _, body in photos.photo_set()]
    port = free_port()
    os.environ["QUEUE_MAX_DEPTH"] = str(2 * args.queued)
    try:
        with ExitStack() as stack, Store(env):
            stack.callback(shutil.rmtree, args.work, True)
            url, _ = run.start_service(stack, args, triton, key, port)
            client = redis.Redis(port=port)
            before = int(client.info("memory")["used_memory"])
            started = time.monotonic()
            accepted, last = asyncio.run(flood(url, key, bodies, args.queued))
            elapsed = time.monotonic() - started
            after = int(client.info("memory")["used_memory"])
            own = job_keys(client, last)
            rss = int(client.info("memory")["used_memory_rss"])
    finally:
        os.environ.pop("QUEUE_MAX_DEPTH", None)
    return {
        "mode": mode,
        "queued": accepted,
        "used_memory_before": before,
        "used_memory_after": after,
        "used_memory_rss_after": rss,
        "bytes_per_queued_job": round((after - before) / max(accepted, 1)),
        "one_job_keys_bytes": own,
        "submit_s": round(elapsed, 1),
        "upload_bytes_mean": round(float(np.mean([len(bodies[i % len(bodies)]) for i in range(accepted)]))),
    }


class Moto:
    """moto's S3 server in a process (and session) of its own, with one bucket."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        code = f"from moto.server import main; main(['-H', '127.0.0.1', '-p', '{self.port}'])"
        with (work / "moto.log").open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.endpoint = f"http://127.0.0.1:{self.port}"
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=MOTO_KEY,
            aws_secret_access_key=MOTO_KEY,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                s3.create_bucket(Bucket="uploads")
                break
            except Exception:  # the server is starting
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.3)

    def env(self) -> dict[str, str]:
        return {
            "OBJECT_STORE_URL": "s3://uploads/bench",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": MOTO_KEY,
            "AWS_SECRET_ACCESS_KEY": MOTO_KEY,
            "AWS_REGION": "us-east-1",
        }


async def presigned_load(url: str, key: str, bodies: list[bytes], clients: int, seconds: float) -> tuple[int, int]:
    """Closed-loop clients: reserve, PUT to the presigned URL, submit by upload_id with Prefer: wait.
    Returns (jobs completed, errors)."""
    done = errors = 0
    stop = time.monotonic() + seconds

    async def client(n: int) -> None:
        nonlocal done, errors
        async with (
            httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=90) as api,
            httpx.AsyncClient(timeout=90) as store,
        ):
            turn = n
            while time.monotonic() < stop:
                body = bodies[turn % len(bodies)]
                turn += clients
                reserved = (await api.post("/uploads")).json()
                put = await store.put(reserved["url"], content=body, headers=reserved.get("headers") or {})
                submit = await api.post(
                    "/classify", json={"upload_id": reserved["upload_id"]}, headers={"Prefer": "wait=60"}
                )
                if put.status_code >= 300 or submit.status_code != 200 or submit.json().get("result") is None:
                    errors += 1
                else:
                    done += 1

    await asyncio.gather(*(client(n) for n in range(clients)))
    return done, errors


def presigned(args: argparse.Namespace, triton: LocalTriton) -> dict[str, Any]:
    key = secrets.token_urlsafe(24)
    args = fresh(args, "stack-presigned", 1)
    bodies = [body for _, body in photos.photo_set()]
    moto = Moto(args.work)
    try:
        with ExitStack() as stack, Store(moto.env()):
            stack.callback(shutil.rmtree, args.work, True)
            url, sessions = run.start_service(stack, args, triton, key)
            asyncio.run(presigned_load(url, key, bodies, args.clients, 2.0))  # warm-up
            sessions = {**sessions, moto.process.pid: "moto (not counted)"}
            with procs.CpuMeter(sessions) as cpu, Ticks(sessions) as ticks:
                jobs, errors = asyncio.run(presigned_load(url, key, bodies, args.clients, args.duration_s))
    finally:
        procs.stop(moto.process)
    jobs = max(jobs, 1)
    return {
        "mode": "presigned (moto S3)",
        "jobs": jobs,
        "errors": errors,
        "jobs_per_s": round(jobs / cpu.wall_s, 1),
        "cpu_ms_per_job": per_job(ticks, jobs),
        "moto_cpu_ms_per_job": round(1000 * ticks.spent.get("moto (not counted)", 0.0) / jobs, 3),
        "others_pct": cpu.as_dict()["other_processes_pct"],
    }


def mean_of(rounds: list[dict[str, Any]], mode: str, component: str) -> float:
    return round(float(np.mean([r["cpu_ms_per_job"][component] for r in rounds if r["mode"] == mode])), 3)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Uploads in Redis against an object store, {result['started_at']}",
        "",
        f"`{result['command']}` ({result['elapsed_s']} s; {result['machine']['cpus']} CPUs shared with other work, "
        f"load average at the end {result['machine']['load_average_at_end']}). Fresh stack per measurement, one "
        "Triton; modes alternated. `file://` is a temp dir on the local disk. moto is no performance reference: "
        "from the presigned mode only the API's CPU is read."
        + (f" More redis-server options: `{result['redis_extra']}`." if result["redis_extra"] else ""),
        "",
        "## CPU ms per job (/proc user + system at the 10 ms tick)",
        "",
        "| round | mode | jobs | jobs/s | redis | api | dispatcher | triton | others' CPU % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["rounds"]):
        c = r["cpu_ms_per_job"]
        lines.append(
            f"| {i // 2 + 1} | {r['mode']} | {r['jobs']} | {r['jobs_per_s']} | {c['redis']} | {c['api']} | "
            f"{c['dispatcher']} | {c['triton']} | {r['others_pct']} |"
        )
    if result.get("presigned"):
        p = result["presigned"]
        c = p["cpu_ms_per_job"]
        lines.append(
            f"| - | {p['mode']} | {p['jobs']} | {p['jobs_per_s']} | {c['redis']} | {c['api']} | {c['dispatcher']} | "
            f"{c['triton']} | {p['others_pct']} |"
        )
    s = result["summary"]
    lines += (
        []
        if not result["rounds"]
        else [
            "",
            f"- Redis CPU per job: redis {s['redis_cpu_ms']['redis']} ms, file {s['redis_cpu_ms']['file']} ms: "
            f"**{s['redis_cpu_change_pct']:+} %**.",
            f"- API CPU per job: redis {s['api_cpu_ms']['redis']} ms, file {s['api_cpu_ms']['file']} ms"
            + (f", presigned {s['api_cpu_ms']['presigned']} ms" if "presigned" in s["api_cpu_ms"] else "")
            + ".",
        ]
    )
    if result.get("presigned"):
        lines.append(
            f"- Presigned: {result['presigned']['errors']} errors; moto's own CPU "
            f"{result['presigned']['moto_cpu_ms_per_job']} ms per job (not counted, no reference)."
        )
    lines += [
        "",
        "## Redis memory with queued jobs (no dispatcher; INFO memory used_memory)",
        "",
        "| mode | queued | used_memory before | after | bytes per queued job | mean upload bytes | submit s |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in result["memory"]:
        lines.append(
            f"| {m['mode']} | {m['queued']} | {m['used_memory_before']} | {m['used_memory_after']} | "
            f"**{m['bytes_per_queued_job']}** | {m['upload_bytes_mean']} | {m['submit_s']} |"
        )
    lines += ["", "One queued job's own keys (`MEMORY USAGE`, bytes; the rest of a job's share is its stream entry and"]
    lines += ["its members of the tenant's and the deadlines' sorted sets):", ""]
    for m in result["memory"]:
        listed = ", ".join(f"`{k}` {v}" for k, v in m["one_job_keys_bytes"].items())
        lines.append(f"- {m['mode']}: {listed} (sum {sum(m['one_job_keys_bytes'].values())})")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = arguments()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    base_settings = aic_settings.load(aic_settings.TritonSettings)
    ensure_default_model(base_settings.model_repository, ("python",))
    photo_set = photos.write(args.work / "photos")
    rounds: list[dict[str, Any]] = []
    memories: list[dict[str, Any]] = []
    pre: dict[str, Any] | None = None
    with ExitStack() as stack:
        triton = stack.enter_context(
            LocalTriton(on_free_ports(base_settings, triton_timeout_s=180.0), log_path=args.work / "triton.log")
        )
        for index in range(0 if args.memory_only else args.rounds):
            for mode in ("redis", "file"):
                rounds.append(load_round(args, triton, mode, store_env(mode, args.work)))
                r = rounds[-1]
                print(f"objectstore: round {index + 1} {mode}: {r['jobs_per_s']} jobs/s {r['cpu_ms_per_job']}")
        for mode in ("redis", "file"):
            memories.append(memory(args, triton, mode, store_env(mode, args.work)))
            print(f"objectstore: memory {mode}: {memories[-1]}", flush=True)
        if not (args.no_presigned or args.memory_only):
            pre = presigned(args, triton)
            print(f"objectstore: presigned: {pre}", flush=True)
    redis_ms = {m: mean_of(rounds, m, "redis") if rounds else 0.0 for m in ("redis", "file")}
    api_ms: dict[str, float] = {m: mean_of(rounds, m, "api") if rounds else 0.0 for m in ("redis", "file")}
    if pre is not None:
        api_ms["presigned"] = pre["cpu_ms_per_job"]["api"]
    result = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "command": ".venv/bin/python bench/objectstore.py " + shlex.join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "photos": photos.describe(photo_set),
        "clients": args.clients,
        "redis_extra": args.redis_extra,
        "rounds": rounds,
        "memory": memories,
        "presigned": pre,
        "summary": {
            "redis_cpu_ms": redis_ms,
            "redis_cpu_change_pct": round(100 * (redis_ms["file"] / redis_ms["redis"] - 1), 1) if rounds else None,
            "api_cpu_ms": api_ms,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    report = markdown(result)
    names = [f"{stamp}-objectstore"] + ([] if args.memory_only else ["objectstore-latest"])
    for name in names:
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(report)
    print(report, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
