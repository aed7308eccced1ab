"""Memory with a deep queue: RSS of `aic api` and `aic dispatcher` while 10,000 jobs wait.

    .venv/bin/python bench/memory.py [--jobs 10000]

Runs the service as deployed (redis-server, the local Triton, `aic api`, one `aic dispatcher`) and submits
small JPEGs faster than one dispatcher can classify them, so the queue grows to the target depth. It samples
each process's resident memory as the depth grows: bounded means the curve stays flat, because the API keeps
no job in memory and a dispatcher holds at most BATCH_MAX_SIZE x DISPATCHER_CONCURRENCY entries. Writes
bench/results/memory.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import secrets
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from PIL import Image

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import procs  # noqa: E402
from aic.core import settings as aic_settings  # noqa: E402
from aic.core.enums import Priority  # noqa: E402
from aic.local import up  # noqa: E402
from aic.local.modelbuild import ensure_default_model  # noqa: E402
from aic.local.ports import free_port  # noqa: E402
from aic.local.triton import LocalTriton, on_free_ports  # noqa: E402
from aic.store import keys  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident memory of one process and its descendants in its session (MiB)."""
    total_kib = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[3]) != pid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def small_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def depth(r: redis.Redis) -> int:
    return sum(int(r.xlen(keys.LEGACY.queue(p))) for p in Priority)


async def flood(url: str, key: str, target: int, r: redis.Redis, sample: Any) -> int:
    """Submit until the queue holds ``target`` jobs; returns how many were submitted."""
    bodies = [small_jpeg(i) for i in range(16)]
    submitted = 0
    done = asyncio.Event()

    async def client(n: int) -> None:
        nonlocal submitted
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=60) as http:
            while not done.is_set():
                answer = await http.post("/classify", files={"file": ("x.jpg", bodies[n % 16])})
                if answer.status_code != 200:
                    raise RuntimeError(f"submit failed: {answer.status_code} {answer.text}")
                submitted += 1

    async def watch() -> None:
        while depth(r) < target:
            sample()
            await asyncio.sleep(1.0)
        done.set()

    await asyncio.gather(watch(), *(client(n) for n in range(8)))
    return submitted


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--jobs", type=int, default=10_000, help="queue depth to reach")
    cli.add_argument("--work", type=Path, default=BENCH.parent / ".bench/memory")
    cli.add_argument("--out", type=Path, default=BENCH / "results")
    args = cli.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    base = aic_settings.load(aic_settings.TritonSettings)
    ensure_default_model(base.model_repository, ("python",))
    samples: list[dict[str, float]] = []
    with ExitStack() as stack:
        port = free_port()
        redis_proc = procs.start_redis(port, args.work, args.work / "redis.log")
        stack.callback(procs.stop, redis_proc)
        redis_url = f"redis://127.0.0.1:{port}"
        triton_settings = on_free_ports(base)
        grpc = triton_settings.triton_grpc_port
        triton = LocalTriton(triton_settings, log_path=args.work / "triton.log")
        stack.callback(triton.stop)
        triton.start()
        triton.wait_ready(180)

        asyncio.run(up.publish_models(redis_url, base.model_repository))
        key = secrets.token_urlsafe(24)
        api_port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "TRITON_URL": f"127.0.0.1:{grpc}",
            "API_PORT": str(api_port),
            "API_KEYS": f"bench:{key}",
            "QUEUE_MAX_DEPTH": str(args.jobs * 2),
            "RATE_LIMIT_PER_MINUTE": "0",
        }
        api = procs.start_aic("api", env, args.work / "api.log")
        stack.callback(procs.stop, api)
        dispatcher = procs.start_aic("dispatcher", env, args.work / "dispatcher.log")
        stack.callback(procs.stop, dispatcher)
        url = f"http://127.0.0.1:{api_port}/api/v1"
        procs.wait_http(f"{url}/health", 60, [api, dispatcher])
        r = redis.Redis(port=port)
        started = time.monotonic()

        def sample() -> None:
            samples.append({"t_s": round(time.monotonic() - started, 1), "queue_depth": depth(r),
                            "api_rss_mib": round(rss_mib(api.pid), 1),
                            "dispatcher_rss_mib": round(rss_mib(dispatcher.pid), 1)})  # fmt: skip

        sample()
        submitted = asyncio.run(flood(url, key, args.jobs, r, sample))
        sample()
    write(samples, submitted, args)
    return 0


def write(samples: list[dict[str, float]], submitted: int, args: argparse.Namespace) -> None:
    first, peak_depth = samples[0], max(s["queue_depth"] for s in samples)
    api_peak = max(s["api_rss_mib"] for s in samples)
    disp_peak = max(s["dispatcher_rss_mib"] for s in samples)
    result = {"jobs_submitted": submitted, "peak_queue_depth": peak_depth, "samples": samples,
              "api_rss_mib": {"start": first["api_rss_mib"], "peak": api_peak},
              "dispatcher_rss_mib": {"start": first["dispatcher_rss_mib"], "peak": disp_peak}}  # fmt: skip
    (args.out / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    picks = [s for i, s in enumerate(samples) if i % max(1, len(samples) // 8) == 0] + [samples[-1]]
    rows = "\n".join(
        f"| {s['t_s']} | {int(s['queue_depth'])} | {s['api_rss_mib']} | {s['dispatcher_rss_mib']} |" for s in picks
    )
    (args.out / "memory.md").write_text(
        "# Memory with a deep queue\n\n"
        f"`.venv/bin/python bench/memory.py --jobs {args.jobs}`: {submitted} jobs submitted, peak queue depth "
        f"{int(peak_depth)}.\n\n"
        f"API RSS {first['api_rss_mib']} → peak {api_peak} MiB; dispatcher RSS {first['dispatcher_rss_mib']} → "
        f"peak {disp_peak} MiB (a process and its children).\n\n"
        "| t (s) | queue depth | API RSS (MiB) | dispatcher RSS (MiB) |\n|---|---|---|---|\n" + rows + "\n"
    )
    print((args.out / "memory.md").read_text())


if __name__ == "__main__":
    sys.exit(main())
