"""A soak with chaos: many jobs with webhooks while dispatchers are killed and Triton and Redis restart.

    .venv/bin/python bench/soak.py [--jobs 2000] [--in-flight 64] [--kill-every 20] [--object-store s3|file]

Runs the service as deployed on this machine: redis-server with its append-only file, the local Triton,
`aic api`, two `aic dispatcher` processes, and a real HTTPS webhook receiver (tests/integration's, with a
trustme CA given to the senders as WEBHOOK_CA_BUNDLE) that verifies every signature. ``--in-flight`` clients
each submit a photo with a ``callback_url`` and ``Prefer: wait``, then follow the job to its end; a submit refused
while Redis is away (503, a reset connection) is not an accepted job and is sent again.

Chaos, while jobs are in flight: one dispatcher is SIGKILLed every ``--kill-every`` seconds and a fresh one
started (its jobs are reclaimed after LEASE_MS, 5 s here); Triton is stopped and started again once (after a
quarter of the jobs were accepted) and Redis once (after half; SIGTERM, so the AOF is complete, then started on
the same files). ``--object-store s3`` keeps the uploads in S3 (moto's server, in this process; stopped for 5 s once,
after three quarters of the jobs were accepted), ``file`` in a ``file://`` store; with either the uploads'
prefix must be empty at the end (each object deleted after its job ended, or swept: a short sweep here).

Checks, each a count that must be 0 (the exit status is 1 otherwise):
- an accepted job that did not end (completed or failed), or whose result exists when it failed or is missing
  when it completed;
- a job that ran although its submit was answered with an error (the client, told nothing, submits again);
- a job with more than one terminal event: as published (a pattern subscription, re-made after the Redis
  restart; events published while it is away are missed, never doubled) and as queued for its webhook (the
  receiver sees the event types of each job: exactly one terminal type per job);
- an upload left in the object store once every job ended (``--object-store``);
- a webhook event delivered (answered 2xx) more than once, or never. A request its SIGKILLed sender cut off
  (body short of its content-length, or no answer written) delivered nothing and is counted apart; the event is
  sent again when its claim's lease runs out.
Reported: throughput, latency p50/p95/p99 from the submit to the end, and the resident memory of the API
(sampled every 2 s) and of each dispatcher (at its death). Writes bench/results/soak.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import trustme

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests"))

import procs  # noqa: E402
from aic.core import settings as aic_settings  # noqa: E402
from aic.local import up  # noqa: E402
from aic.local.modelbuild import ensure_default_model  # noqa: E402
from aic.local.ports import free_port  # noqa: E402
from aic.local.triton import LocalTriton, on_free_ports  # noqa: E402
from aic.store import keys  # noqa: E402
from helpers import TERMINAL, EventRecorder  # noqa: E402
from memory import rss_mib  # noqa: E402
from photos import jpeg  # noqa: E402
from skimage import data as skdata  # noqa: E402
from stack import S3Server  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

TERMINAL_EVENTS = {"completed", "failed", "cancelled"}
KEY = "soak-key-0123456789abcdef01234567"
PRIORITIES = ("low", "normal", "normal", "high", "urgent")
LEASE_MS = 5000


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between dispatcher SIGKILLs")
    parser.add_argument("--work", type=Path, default=None, help="folder for logs and Redis's files (default: temp)")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--tag", default="", help="results go to soak-TAG.{md,json} (default: soak.{md,json})")
    parser.add_argument("--object-store", choices=("none", "s3", "file"), default="none", help="where uploads live")
    return parser.parse_args()


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    entries: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        at = round(time.monotonic() - self.started, 1)
        self.entries.append((at, what))
        print(f"[{at:7.1f} s] {what}", flush=True)


@dataclass
class Load:
    accepted: dict[str, float] = field(default_factory=dict)  # job id -> submit start (monotonic)
    ended: dict[str, tuple[str, float]] = field(default_factory=dict)  # job id -> (status, seen at)
    refused_submits: Counter[str] = field(default_factory=Counter)


async def client_loop(
    n: int, http: httpx.AsyncClient, photos: list[bytes], callback: str, load: Load, budget: list[int]
) -> None:
    while budget[0] > 0:
        budget[0] -= 1
        i = budget[0]
        started = time.monotonic()
        job_id = None
        while job_id is None:
            try:
                answer = await http.post(
                    "/classify",
                    files={"file": ("photo.jpg", photos[i % len(photos)])},
                    data={"priority": PRIORITIES[i % len(PRIORITIES)], "callback_url": callback},
                    headers={"Prefer": "wait=20"},
                )
            except httpx.HTTPError as exc:  # a reset connection while Redis restarts: not accepted, send again
                load.refused_submits[type(exc).__name__] += 1
                await asyncio.sleep(0.5)
                continue
            if answer.status_code != 200:
                load.refused_submits[str(answer.status_code)] += 1
                await asyncio.sleep(0.5)
                continue
            body = answer.json()
            job_id = body["job_id"]
            load.accepted[job_id] = started
            status = body.get("status")
        while status not in TERMINAL:
            await asyncio.sleep(0.5)
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                status = (await http.get(f"/status/{job_id}")).json()["status"]
        load.ended[job_id] = (str(status), time.monotonic())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def main() -> int:  # noqa: C901 - one script, one timeline
    args = arguments()
    work = args.work or Path(tempfile.mkdtemp(prefix="aic-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    base = aic_settings.load(aic_settings.TritonSettings)
    ensure_default_model(base.model_repository, ("python",))
    photos = [jpeg(getattr(skdata, name)(), side) for name in ("chelsea", "coffee", "astronaut", "rocket")
              for side in (320, 480, 640)]  # fmt: skip
    timeline = Timeline()
    ca = trustme.CA()
    bundle = work / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    receiver = Receiver(ca)
    api_rss: list[tuple[float, float]] = []
    dispatcher_rss: dict[int, list[tuple[float, float]]] = {}  # pid -> (age s, MiB) every 2 s
    with ExitStack() as stack:
        stack.callback(receiver.close)
        redis_port = free_port()
        redis_proc = [procs.start_redis(redis_port, work, work / "redis.log")]
        stack.callback(lambda: procs.stop(redis_proc[0]))
        redis_url = f"redis://127.0.0.1:{redis_port}"
        triton = LocalTriton(on_free_ports(base), log_path=work / "triton.log")
        stack.callback(triton.stop)
        triton.start()
        triton.wait_ready(180)
        asyncio.run(up.publish_models(redis_url, base.model_repository))
        api_port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "TRITON_URL": triton.settings.triton_url,
            "API_PORT": str(api_port),
            "API_KEYS": f"soak:{KEY}",
            "SECRET_KEY": "soak-secret-key-0123456789abcdef",
            "RATE_LIMIT_PER_MINUTE": "0",
            "LEASE_MS": str(LEASE_MS),
            "WEBHOOK_ALLOW_LOOPBACK": "true",
            "WEBHOOK_CA_BUNDLE": str(bundle),
            "WEBHOOK_BACKOFF_BASE_S": "0.5",
            "WEBHOOK_BACKOFF_FACTOR": "2",
            "WEBHOOK_BACKOFF_MAX_S": "5",
            "WEBHOOK_MAX_ATTEMPTS": "10",
            "LOG_LEVEL": "WARNING",
        }
        s3: S3Server | None = None
        if args.object_store == "s3":
            s3 = S3Server().start()
            stack.callback(s3.stop)
            s3.client().create_bucket(Bucket=s3.bucket)
            env.update(s3.env("soak"))
        elif args.object_store == "file":
            env["OBJECT_STORE_URL"] = f"file://{work / 'uploads'}"
        if args.object_store != "none":  # strays of the chaos (a delete while the store was away) go within the run
            env.update({"UPLOAD_SWEEP_INTERVAL_S": "2", "UPLOAD_STRAY_AGE_S": "15"})
        api = procs.start_aic("api", env, work / "api.log")
        stack.callback(procs.stop, api)
        dispatchers = [procs.start_aic("dispatcher", env, work / f"dispatcher-{i}.log") for i in range(2)]
        stack.callback(lambda: [procs.stop(d) for d in dispatchers])
        root = f"http://127.0.0.1:{api_port}/api/v1"
        procs.wait_http(f"{root}/health", 90, [api, *dispatchers])
        receiver.secrets = [httpx.get(f"{root}/webhooks/secret", headers={"X-API-Key": KEY}).json()["secret"]]
        recorder = EventRecorder(redis_url)
        stack.callback(recorder.close)
        timeline.note(f"started: api, 2 dispatchers, Triton, redis; {args.jobs} jobs at {args.in_flight} in flight")

        load = Load()
        born = {d.pid: time.monotonic() for d in dispatchers}

        async def chaos(done: asyncio.Event) -> None:
            triton_done = redis_done = s3_done = False
            last_kill = time.monotonic()
            last_sample = 0.0
            spawned = 2
            while not done.is_set():
                await asyncio.sleep(0.2)
                now = time.monotonic()
                if now - last_sample >= 2:
                    last_sample = now
                    api_rss.append((round(now - timeline.started, 1), round(rss_mib(api.pid), 1)))
                    for d in dispatchers:
                        dispatcher_rss.setdefault(d.pid, []).append(
                            (round(now - born[d.pid], 1), round(rss_mib(d.pid), 1))
                        )
                if now - last_kill >= args.kill_every:
                    last_kill = now
                    victim = dispatchers.pop(0)
                    os.killpg(victim.pid, signal.SIGKILL)
                    victim.wait()
                    dispatchers.append(procs.start_aic("dispatcher", env, work / f"dispatcher-{spawned}.log"))
                    born[dispatchers[-1].pid] = time.monotonic()
                    spawned += 1
                    timeline.note(f"SIGKILL dispatcher {victim.pid}; started dispatcher {dispatchers[-1].pid}")
                if not triton_done and len(load.accepted) >= args.jobs // 4:
                    triton_done = True
                    timeline.note("Triton: stop")
                    await asyncio.to_thread(triton.stop)
                    await asyncio.sleep(2)
                    await asyncio.to_thread(triton.start)
                    await asyncio.to_thread(triton.wait_ready, 180)
                    timeline.note("Triton: ready again")
                if not redis_done and len(load.accepted) >= args.jobs // 2:
                    redis_done = True
                    timeline.note("redis: SIGTERM (AOF flushed)")
                    await asyncio.to_thread(procs.stop, redis_proc[0])
                    await asyncio.sleep(2)
                    redis_proc[0] = await asyncio.to_thread(procs.start_redis, redis_port, work, work / "redis.log")
                    timeline.note("redis: started again on its AOF")
                if s3 is not None and not s3_done and len(load.accepted) >= 3 * args.jobs // 4:
                    s3_done = True
                    timeline.note("S3: stop")
                    await asyncio.to_thread(s3.stop)
                    await asyncio.sleep(5)
                    await asyncio.to_thread(s3.start)
                    timeline.note("S3: started again")

        async def run_load() -> None:
            done = asyncio.Event()
            budget = [args.jobs]
            limits = httpx.Limits(max_connections=args.in_flight * 2, max_keepalive_connections=args.in_flight * 2)
            async with httpx.AsyncClient(base_url=root, headers={"X-API-Key": KEY}, timeout=60, limits=limits) as http:
                chaos_task = asyncio.create_task(chaos(done))
                await asyncio.gather(*(client_loop(n, http, photos, receiver.url("/ok"), load, budget)
                                       for n in range(args.in_flight)))  # fmt: skip
                done.set()
                await chaos_task

        load_started = time.monotonic()
        asyncio.run(run_load())
        load_s = time.monotonic() - load_started
        timeline.note(f"every accepted job ended: {len(load.ended)} of {len(load.accepted)}")
        # webhooks: wait until each job's terminal event is delivered (or given up)
        r = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 180
        pending = set(load.accepted)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                summary = json.loads(r.hget(keys.LEGACY.job_status(job_id), "webhook") or b"{}")
                if summary.get("event") in TERMINAL_EVENTS and summary.get("state") in (
                    "delivered",
                    "failed",
                    "refused",
                ):
                    pending.discard(job_id)
            time.sleep(0.5)
        timeline.note(f"webhooks settled ({len(pending)} still pending)")
        uploads_left = uploads_stored(args.object_store, s3, work)
        deadline = time.monotonic() + 120
        while uploads_left and time.monotonic() < deadline:  # the last strays wait for their age and a sweep
            time.sleep(1)
            uploads_left = uploads_stored(args.object_store, s3, work)
        if args.object_store != "none":
            timeline.note(f"uploads left in the object store: {len(uploads_left)}")
        time.sleep(1)
        recorder.close()

        statuses = {j: (r.hget(keys.LEGACY.job_status(j), "status") or b"?").decode() for j in load.accepted}
        not_ended = [j for j, s in statuses.items() if s not in TERMINAL]
        result_wrong = [
            j for j, s in statuses.items() if bool(r.exists(keys.LEGACY.job_result(j))) != (s == "completed")
        ]
        terminal = recorder.terminal_counts(list(load.accepted))
        published_twice = [j for j in load.accepted if terminal[j] > 1]
        published_missed = [j for j in load.accepted if terminal[j] == 0]
        delivered: Counter[str] = Counter()
        event_types: dict[str, set[str]] = {}
        cut_off = 0
        for got in receiver.requests:
            wid = got.headers.get("webhook-id", "")
            if not got.complete or not got.answered:  # its sender was killed mid-request: nothing was delivered
                cut_off += 1
                continue
            if not got.verified_with or not wid.startswith("msg_"):
                continue
            job_id, _, event = wid.removeprefix("msg_").rpartition("_")
            event_types.setdefault(job_id, set()).add(event)
            delivered[wid] += 1  # answered 200: the receiver answers so to every verified request
        unsigned = sum(1 for got in receiver.requests if got.complete and not got.verified_with)
        two_terminal_types = [j for j, events in event_types.items() if len(events & TERMINAL_EVENTS) > 1]
        never_delivered = [j for j in load.accepted if not (event_types.get(j, set()) & TERMINAL_EVENTS)]
        untold = [j for j in event_types if j not in load.accepted]  # accepted, but the client got no job id
        redelivered = {wid: n for wid, n in delivered.items() if n > 1}
        redelivery_at = {
            wid: [round(g.at - timeline.started, 1) for g in receiver.requests if g.headers.get("webhook-id") == wid]
            for wid in redelivered
        }
        latencies = [load.ended[j][1] - load.accepted[j] for j in load.ended]
        violations = {
            "accepted jobs that did not end": len(not_ended),
            "jobs run that no client was told of (a submit answered 5xx after accepting)": len(untold),
            "results present/missing against the status": len(result_wrong),
            "jobs with two terminal events published": len(published_twice),
            "jobs whose webhooks carried two terminal events": len(two_terminal_types),
            "jobs whose terminal webhook was never delivered": len(never_delivered),
            "webhook requests with a bad signature": unsigned,
            "webhook events delivered (answered 2xx) more than once": len(redelivered),
        }
        if args.object_store != "none":
            violations["uploads left in the object store"] = len(uploads_left)
        result: dict[str, Any] = {
            "command": " ".join([".venv/bin/python", "bench/soak.py", *sys.argv[1:]]),
            "jobs_accepted": len(load.accepted),
            "in_flight": args.in_flight,
            "statuses": dict(Counter(statuses.values())),
            "submits_refused_and_resent": dict(load.refused_submits),
            "load_s": round(load_s, 1),
            "jobs_per_s": round(len(load.accepted) / load_s, 1),
            "latency_ms": {
                "p50": round(1000 * percentile(latencies, 0.50)),
                "p95": round(1000 * percentile(latencies, 0.95)),
                "p99": round(1000 * percentile(latencies, 0.99)),
                "max": round(1000 * max(latencies, default=0)),
                "mean": round(1000 * statistics.fmean(latencies)) if latencies else 0,
            },
            "violations": violations,
            "webhooks": {
                "events_delivered": len(delivered),
                "requests_cut_off_by_a_killed_sender": cut_off,
                "delivered_twice_at_s": redelivery_at,
                "most_deliveries_of_one_event": max(delivered.values(), default=0),
            },
            "published_events": {
                "jobs_missed_while_redis_was_away": len(published_missed),
                "subscriber_reconnects": recorder.reconnects,
            },
            "api_rss_mib": api_rss,
            "dispatcher_rss_mib": dispatcher_rss,
            "timeline": timeline.entries,
            "settings": {
                "LEASE_MS": LEASE_MS,
                "kill_every_s": args.kill_every,
                "dispatchers": 2,
                "object_store": args.object_store,
            },
        }
    write(result, args.out, args.tag)
    return 1 if any(violations.values()) else 0


def uploads_stored(kind: str, s3: S3Server | None, work: Path) -> list[str]:
    """The uploads the object store holds now (none without one)."""
    if s3 is not None:
        return s3.keys("soak")
    if kind == "file":
        return [str(path) for path in (work / "uploads").rglob("*") if path.is_file()]
    return []


def _at(life: list[tuple[float, float]], age_s: float) -> float:
    return next((mib for age, mib in life if age >= age_s), life[-1][1])


def write(result: dict[str, Any], out: Path, tag: str = "") -> None:
    name = f"soak{'-' + tag if tag else ''}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    api = result["api_rss_mib"]
    third = max(1, len(api) // 3)
    api_first, api_last = (statistics.fmean(v for _, v in part) for part in (api[:third], api[-third:]))
    lives = sorted(result["dispatcher_rss_mib"].values(), key=len, reverse=True)
    lat = result["latency_ms"]
    lines = [
        "# Soak with chaos",
        "",
        f"`{result['command']}`: {result['jobs_accepted']:,} jobs accepted at {result['in_flight']} in "
        f"flight, webhooks on, in {result['load_s']} s ({result['jobs_per_s']} jobs/s); "
        f"LEASE_MS {result['settings']['LEASE_MS']}, a dispatcher SIGKILLed every "
        f"{result['settings']['kill_every_s']} s, "
        "Triton restarted once, Redis (AOF) restarted once"
        + {"s3": "; uploads in S3 (moto), stopped for 5 s once", "file": "; uploads in a file:// store"}.get(
            result["settings"].get("object_store", "none"), ""
        )
        + ".",
        "",
        "## Exactly once",
        "",
        "| check | count |",
        "|---|---|",
        *(f"| {name} | {count} |" for name, count in result["violations"].items()),
        "",
        f"Statuses: {result['statuses']}. Submits refused and sent again (not accepted): "
        f"{result['submits_refused_and_resent'] or 'none'}.",
        f"Webhooks: {result['webhooks']['events_delivered']:,} events delivered (answered 2xx); "
        f"{result['webhooks']['requests_cut_off_by_a_killed_sender']} requests cut off by a SIGKILLed sender (not "
        "delivered: sent again once their claim's lease ran out); delivered twice: "
        f"{result['webhooks']['delivered_twice_at_s'] or 'none'} (webhook-id: seconds of each request).",
        f"Published events: {result['published_events']['jobs_missed_while_redis_was_away']} jobs' terminal event "
        "fell in the subscriber's reconnect after the Redis restart (missed, never doubled).",
        "",
        "## Latency and memory",
        "",
        f"Submit to end: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, max {lat['max']} ms "
        "(the tail is the jobs a killed dispatcher held until their lease ran out, and those waiting out the "
        "restarts).",
        "",
        f"API RSS: {api[0][1]} MiB at the start, mean {api_first:.1f} MiB over the first third, {api_last:.1f} MiB "
        f"over the last third, peak {max(v for _, v in api)} MiB.",
        f"Dispatchers ({len(lives)} lives): RSS (MiB) at 2 s / 10 s / their last sample, longest first: "
        + "; ".join(f"{_at(life, 2)} / {_at(life, 10)} / {life[-1][1]} at {life[-1][0]} s" for life in lives)
        + ".",
        "",
        "## Timeline",
        "",
        *(f"- {at} s: {what}" for at, what in result["timeline"]),
    ]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print((out / f"{name}.md").read_text())


if __name__ == "__main__":
    raise SystemExit(main())
