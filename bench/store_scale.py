"""The state tier alone on 1, 3 and 6 Redis Cluster primaries (and one standalone redis-server): jobs/s, Redis CPU
per job on each primary, and how evenly the jobs spread over the primaries.

    .venv/bin/python bench/store_scale.py [--duration-s 15] [--shards 48] [--primaries 1,3,6]

No model, no Triton, no HTTP: load processes call the product's own store classes the way the API and the
dispatcher do. Per job: ``JobStore.create`` (one job per request, submitted by ``image_url`` so no upload bytes go
into Redis; the route check, ``create.lua``, then the tenant index, deadline and usage writes), ``Intake.next_batch``
(``QueueConsumer`` over every shard), ``JobTransitions.take`` / ``start`` / ``advance(preprocessing)`` /
``complete(through=inference)`` with a synthetic result (as ``aic.dispatch.dispatcher`` calls them, batches of up to
16), then ``JobStore.with_results`` for that one job (what ``GET /result`` reads). Closed loop: each load process
keeps at most ``--in-flight`` jobs between create and read.

Every configuration runs in the same invocation: the standalone layout (``LEGACY``: seed key names, one
redis-server), then a cluster of 1, 3 and 6 primaries (tests/redis_cluster.py, no replicas) with ``--shards``
queue shards, and 6 primaries with the default 16 shards. Every server runs with the product's persistence
(``aic.store.connection.PERSISTENCE``: AOF everysec). Redis CPU is ``used_cpu_user + used_cpu_sys`` of
``INFO cpu`` on each primary over the window; a primary's jobs are the jobs whose shard's hash tag lies in its slots
(shard -> tag -> slot -> node, from ``CLUSTER SLOTS``). ``INFO commandstats`` deltas per node say which commands
the CPU went to. Writes bench/results/store_scale.{md,json} and a timestamped copy.

On a 2-core machine the servers and the load processes share the cores: aggregate jobs/s cannot grow with the
primaries here. What must hold is the Redis CPU per job on each primary staying flat (and the spread even), so that
on a real cluster, one core per primary, capacity grows with the primaries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

import procs  # noqa: E402
from aic.core.enums import Priority, Stage  # noqa: E402
from aic.core.settings import CLUSTER_DEFAULT_SHARDS, DispatcherSettings, QueueSettings, RedisSettings  # noqa: E402
from aic.local.ports import free_port  # noqa: E402
from aic.store import keys  # noqa: E402
from aic.store.connection import PERSISTENCE, connect, server_args  # noqa: E402
from redis.crc import key_slot  # noqa: E402
from redis_cluster import SLOTS, RedisCluster  # type: ignore[import-not-found]  # noqa: E402

ALIAS = "bench"
RESULT = json.dumps(
    {"predictions": [{"label": f"class {i}", "score": round(0.5 / (i + 1), 4)} for i in range(5)]}
).encode()
"""A synthetic result of the size of a real one's predictions (~250 B)."""


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=15.0, help="measured window per configuration")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--idle-s", type=float, default=3.0, help="window measuring the servers' CPU with no load")
    parser.add_argument("--primaries", default="1,3,6", help="cluster sizes to measure, comma-separated")
    parser.add_argument("--shards", type=int, default=48, help="QUEUE_SHARDS of the cluster rows (48: 48/16/8 each)")
    parser.add_argument("--no-default-shards", action="store_true", help="skip the row with the default 16 shards")
    parser.add_argument("--no-standalone", action="store_true", help="skip the standalone reference row")
    parser.add_argument("--procs", type=int, default=2, help="load processes (each one API + one dispatcher)")
    parser.add_argument("--producers", type=int, default=24, help="submitting coroutines per load process")
    parser.add_argument("--consumers", type=int, default=2, help="dispatcher loops per load process")
    parser.add_argument("--in-flight", type=int, default=128, help="jobs between create and read, per process")
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--headroom", type=float, default=0.7, help="share of a primary core to plan for")
    parser.add_argument("--target", type=float, nargs="*", default=[1000.0, 5000.0, 20000.0], help="jobs/s")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    return parser.parse_args()


# -- the load: one process is one API's and one dispatcher's worth of store calls ---------------------------------


@dataclass(frozen=True)
class Load:
    url: str
    cluster: bool
    shards: int
    producers: int
    consumers: int
    in_flight: int
    tenants: int
    start: float
    """Epoch s at which the measured window opens (warm-up before)."""
    end: float


def load_process(load: Load, index: int, out: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        out.put(loop.run_until_complete(_load(load, index)))
    except BaseException:
        out.put({"failed": traceback.format_exc()})
    # no asyncio.run: its cancelling of what redis-py left running could hang the process (seen: standalone row)
    out.close()
    out.join_thread()
    os._exit(0)


async def _load(load: Load, index: int) -> dict[str, Any]:  # noqa: C901 - one closure per role
    from aic.core.schemas import ClassificationResult  # noqa: F401  (the API's imports, warm)
    from aic.dispatch.intake import Intake
    from aic.store.jobs import JobStore, NewJob
    from aic.store.queue import QueueConsumer
    from aic.store.transitions import Completion, JobTransitions

    settings = RedisSettings(
        redis_url=load.url, redis_cluster=load.cluster, queue_shards=load.shards, redis_max_connections=64
    )
    api = connect(settings)
    dispatcher = connect(settings, blocking_reads=True)
    store = JobStore(api, QueueSettings(queue_max_depth=1_000_000))
    transitions = JobTransitions(dispatcher)
    slots = asyncio.Semaphore(load.in_flight)
    to_read: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    read_in_window: Counter[int] = Counter()
    created_in_window: Counter[int] = Counter()
    created = errors = 0

    async def producer(n: int) -> None:
        nonlocal created, errors
        turn = n
        while time.time() < load.end:
            try:  # at the end the consumers stop: a producer waiting for room stops with them
                await asyncio.wait_for(slots.acquire(), timeout=max(0.01, load.end - time.time()))
            except TimeoutError:
                break
            [job_id] = store.new_ids(1)
            tenant = f"tenant-{turn % load.tenants}"
            turn += load.producers
            new = NewJob(
                job_id=job_id, tenant=tenant, image=b"", image_metadata={"source": "url"}, priority=Priority.NORMAL,
                model_version=ALIAS, image_url=f"https://images.example/{job_id}.jpg",
            )  # fmt: skip
            try:
                await store.create([new])
                created += 1
                if load.start <= time.time() < load.end:
                    created_in_window[keys.shard_of(job_id, load.shards)] += 1
            except Exception:
                errors += 1
                slots.release()

    async def consumer(n: int) -> None:
        nonlocal errors
        intake = Intake(QueueConsumer(dispatcher, f"bench-{index}-{n}"), DispatcherSettings())
        while time.time() < load.end:
            entries = await intake.next_batch()
            if not entries:
                continue
            taken = await transitions.take(entries)
            work = [t for t in taken if t.job is not None and t.job.status.live]
            await transitions.drop([t.entry for t in taken if t.job is None or not t.job.status.live])
            for t in work:
                intake.hold(t.entry)
            await transitions.start(work)  # type: ignore[arg-type]
            await transitions.advance(work, Stage.PREPROCESSING)  # type: ignore[arg-type]
            done = [Completion(t.job, t.entry, RESULT, model="bench-model", inference_ms=3.0) for t in work if t.job]
            finished = await transitions.complete(done, through=Stage.INFERENCE)
            errors += finished.count(False)
            for t in work:
                intake.let_go(t.entry)
                assert t.job is not None
                to_read.put_nowait((t.job.job_id, t.job.tenant))

    async def reader() -> None:
        while True:
            job_id, tenant = await to_read.get()
            [(job, result)] = await store.with_results([job_id], tenant)
            if time.time() >= load.start and time.time() < load.end:
                read_in_window[keys.shard_of(job_id, load.shards)] += 1
            slots.release()
            if job.status != "completed" or result is None:
                raise RuntimeError(f"job {job_id} read as {job.status}")

    readers = [asyncio.create_task(reader()) for _ in range(8)]
    try:
        await asyncio.gather(
            *(producer(n) for n in range(load.producers)), *(consumer(n) for n in range(load.consumers))
        )
    finally:
        for task in readers:
            task.cancel()
    await api.aclose()
    await dispatcher.aclose()
    return {
        "read_by_shard": dict(read_in_window),
        "created_by_shard": dict(created_in_window),
        "created": created,
        "errors": errors,
    }


# -- the servers ------------------------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    port: int
    slots: list[tuple[int, int]]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def serves(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


def cpu_s(node: Node) -> float:
    info = node.client().info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def commandstats(node: Node) -> dict[str, tuple[int, int]]:
    """Command -> (calls, usec) so far."""
    raw = node.client().info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in raw.items()}


def spread_of(shards: int, nodes: Sequence[Node]) -> list[int]:
    """How many of ``shards`` shards each node serves (by its hash tag's slot)."""
    if shards == 1 and len(nodes) == 1:
        return [1]
    slots = [key_slot(tag.encode()) for tag in keys.shard_tags(shards)]
    return [sum(1 for slot in slots if node.serves(slot)) for node in nodes]


def ratio(counts: Sequence[int]) -> float | None:
    return round(max(counts) / min(counts), 3) if counts and min(counts) else None


def static_spread(shards: int, primaries: int) -> list[int]:
    """The spread of ``shards`` over ``primaries`` contiguous equal slot ranges (how clusters are formed)."""
    ranges = [[(i * SLOTS // primaries, (i + 1) * SLOTS // primaries - 1)] for i in range(primaries)]
    return spread_of(shards, [Node(f"p{i}", 0, r) for i, r in enumerate(ranges)])


def shared_keys(nodes: Sequence[Node], cluster: bool, tenants: int) -> dict[str, list[str]]:
    """Which node holds the keys every job also writes outside its own slot (one key each, not per job)."""
    names = keys.Keyspace(shards=16, cluster=cluster)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    wanted = [names.model_routes, keys.USAGE_TENANTS]
    wanted += [keys.tenant_jobs(f"tenant-{t}") for t in range(tenants)]
    wanted += [keys.usage(f"tenant-{t}", today) for t in range(tenants)]
    held: dict[str, list[str]] = {node.name: [] for node in nodes}
    for name in wanted:
        slot = key_slot(name.encode())
        for node in nodes:
            if not cluster or node.serves(slot):
                held[node.name].append(name)
    return held


def per_node_counts(by_shard: Counter[int], names: keys.Keyspace, nodes: Sequence[Node]) -> list[int]:
    """Jobs per node, from each job's shard: its hash tag's slot, the node serving it."""
    tags = keys.shard_tags(names.shards)
    counts = [0] * len(nodes)
    for shard, count in by_shard.items():
        slot = key_slot(tags[shard].encode())
        for i, node in enumerate(nodes):
            if not names.cluster or node.serves(slot):
                counts[i] += count
                break
    return counts


def measure(  # noqa: C901
    args: argparse.Namespace, label: str, url: str, cluster: bool, shards: int, nodes: list[Node]
) -> dict[str, Any]:
    """One configuration: route, groups, the load processes, INFO before and after the window."""
    setup = redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
    names = keys.Keyspace(shards=shards, cluster=cluster)
    setup.hset(names.model_routes, ALIAS, "bench-model")
    for shard in names.all_shards():
        for stream in [*names.queues(shard), names.dead_letter_stream(shard)]:
            setup.xgroup_create(stream, keys.QUEUE_GROUP, id="0", mkstream=True)
    setup.close()
    # the servers' own work with no client (serverCron, the cluster bus's gossip): more nodes, more of it; it is
    # reported apart, so the per-job figure is the jobs' own cost
    idle_before, idle_started = [cpu_s(node) for node in nodes], time.monotonic()
    time.sleep(args.idle_s)
    idle_s = time.monotonic() - idle_started
    idle_rate = [(cpu_s(node) - before) / idle_s for node, before in zip(nodes, idle_before, strict=True)]
    begin = time.time() + 2.0  # the load processes import and connect meanwhile
    load = Load(url, cluster, shards, args.producers, args.consumers, args.in_flight, args.tenants,
                begin + args.warmup_s, begin + args.warmup_s + args.duration_s)  # fmt: skip
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=load_process, args=(load, i, results)) for i in range(args.procs)]
    for worker in workers:
        worker.start()
    time.sleep(max(0.0, load.start - time.time()))
    cpu_before = [cpu_s(node) for node in nodes]
    stats_before = [commandstats(node) for node in nodes]
    machine_before = procs.machine_cpu_s()
    started = time.monotonic()
    time.sleep(max(0.0, load.end - time.time()))
    cpu_after = [cpu_s(node) for node in nodes]
    stats_after = [commandstats(node) for node in nodes]
    machine_after = procs.machine_cpu_s()
    wall = time.monotonic() - started
    outcomes = [results.get(timeout=120) for _ in workers]
    for outcome in outcomes:
        if "failed" in outcome:
            raise RuntimeError(f"a load process failed:\n{outcome['failed']}")
    for worker in workers:
        worker.join(30)
    by_shard: Counter[int] = Counter()
    created_by_shard: Counter[int] = Counter()
    for outcome in outcomes:
        by_shard.update({int(k): v for k, v in outcome["read_by_shard"].items()})
        created_by_shard.update({int(k): v for k, v in outcome["created_by_shard"].items()})
    jobs = sum(by_shard.values())
    per_node_jobs = per_node_counts(by_shard, names, nodes)
    per_node_created = per_node_counts(created_by_shard, names, nodes)
    per_node: list[dict[str, Any]] = []
    for i, node in enumerate(nodes):
        spent = cpu_after[i] - cpu_before[i]
        commands = {}
        for name, (calls, usec) in stats_after[i].items():
            c0, u0 = stats_before[i].get(name, (0, 0))
            if calls - c0 > 0:
                commands[name] = {"calls_per_job": round((calls - c0) / max(jobs, 1), 3),
                                  "usec_per_job": round((usec - u0) / max(jobs, 1), 2)}  # fmt: skip
        per_node.append({
            "node": node.name,
            "jobs": per_node_jobs[i],
            "created": per_node_created[i],
            "shards": spread_of(shards, [node])[0] if cluster else shards,
            "cpu_s": round(spent, 3),
            "cpu_ms_per_own_job": round(1000 * spent / per_node_jobs[i], 4) if per_node_jobs[i] else None,
            "idle_cpu_pct": round(100 * idle_rate[i], 2),
            "net_cpu_ms_per_own_job": (
                round(1000 * max(0.0, spent - idle_rate[i] * wall) / per_node_jobs[i], 4) if per_node_jobs[i] else None
            ),
            "cpu_pct": round(100 * spent / wall, 1),
            "commands": dict(sorted(commands.items(), key=lambda kv: -kv[1]["usec_per_job"])),
        })  # fmt: skip
    counts = [n["jobs"] for n in per_node]
    calls = {
        name: round(sum(n["commands"].get(name, {}).get("calls_per_job", 0.0) for n in per_node), 3)
        for name in {name for n in per_node for name in n["commands"]}
    }
    total_cpu = sum(n["cpu_s"] for n in per_node)
    busy, total = machine_after[0] - machine_before[0], machine_after[1] - machine_before[1]
    row = {
        "config": label,
        "cluster": cluster,
        "primaries": len(nodes),
        "shards": shards,
        "shards_per_primary": spread_of(shards, nodes) if cluster else [shards],
        "jobs": jobs,
        "jobs_per_s": round(jobs / wall, 1),
        "created": sum(o["created"] for o in outcomes),
        "errors": sum(o["errors"] for o in outcomes),
        "redis_cpu_ms_per_job": round(1000 * total_cpu / max(jobs, 1), 4),
        "redis_net_cpu_ms_per_job": round(1000 * max(0.0, total_cpu - sum(idle_rate) * wall) / max(jobs, 1), 4),
        "redis_idle_cpu_pct": round(100 * sum(idle_rate), 2),
        "calls_per_job": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        "commands_per_job": round(sum(calls.values()), 2),
        "evalsha_usec_per_call": round(
            sum(n["commands"].get("evalsha", {}).get("usec_per_job", 0.0) for n in per_node)
            / max(calls.get("evalsha", 0.0), 1e-9),
            1,
        ),
        "redis_cpu_pct": round(100 * total_cpu / wall, 1),
        "max_min_jobs_per_primary": ratio(counts),
        "max_min_created_per_primary": ratio(per_node_created),
        "machine_busy_pct": round(100 * busy / total, 1) if total else None,
        "per_primary": per_node,
        "shared_keys_on": {k: v for k, v in shared_keys(nodes, cluster, args.tenants).items() if v},
    }
    cpu_list = " / ".join(str(n["cpu_ms_per_own_job"]) for n in per_node)
    net_list = " / ".join(str(n["net_cpu_ms_per_own_job"]) for n in per_node)
    print(
        f"store_scale: {label}: {row['jobs_per_s']} jobs/s, Redis {row['redis_cpu_ms_per_job']} ms/job "
        f"(per primary, own jobs: {cpu_list}; less idle: {net_list}), jobs per primary {counts} "
        f"(created {per_node_created}), "
        f"errors {row['errors']}",
        flush=True,
    )
    return row


def standalone(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="aic-store-scale-"))
    port = free_port()
    server = procs.start_redis(port, work, work / "redis.log", server_args(PERSISTENCE))
    try:
        node = Node("standalone", port, [(0, SLOTS - 1)])
        return measure(args, "standalone (seed names)", f"redis://127.0.0.1:{port}", False, 1, [node])
    finally:
        procs.stop(server)
        shutil.rmtree(work, ignore_errors=True)


def cluster(args: argparse.Namespace, primaries: int, shards: int) -> dict[str, Any]:
    extra = [part for part in server_args(PERSISTENCE)]
    with RedisCluster.start(primaries=primaries, extra_args=extra) as servers:
        nodes = []
        for node in servers.primaries():
            slots = servers.command(node, "CLUSTER", "SLOTS")
            mine = [(int(s[0]), int(s[1])) for s in slots if int(s[2][1]) == node.port]
            nodes.append(Node(f":{node.port}", node.port, mine))
        nodes.sort(key=lambda n: n.slots[0][0])
        for i, node in enumerate(nodes):
            node.name = f"p{i + 1}"
        return measure(args, f"cluster {primaries} primaries, {shards} shards", servers.url, True, shards, nodes)


def capacity(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """One primary core's state work in jobs/s, from the worst primary's CPU per own job of the even rows."""
    even = [r for r in rows if r["cluster"] and r["shards"] == args.shards]
    worst = max(n["cpu_ms_per_own_job"] for r in even for n in r["per_primary"] if n["cpu_ms_per_own_job"])
    worst_net = max(n["net_cpu_ms_per_own_job"] for r in even for n in r["per_primary"] if n["net_cpu_ms_per_own_job"])
    mean = sum(r["redis_cpu_ms_per_job"] for r in even) / len(even)
    per_core = 1000 / worst
    return {
        "worst_primary_cpu_ms_per_job": worst,
        "worst_primary_net_cpu_ms_per_job": worst_net,
        "mean_cpu_ms_per_job": round(mean, 4),
        "jobs_per_s_per_primary_core": round(per_core),
        "headroom": args.headroom,
        "primaries_for": {str(int(r)): math.ceil(r / per_core / args.headroom) for r in args.target},
    }


def markdown(result: dict[str, Any]) -> str:
    cap = result["capacity"]
    lines = [
        f"# Redis state tier: 1, 3, 6 primaries, {result['started_at']}",
        "",
        f"`{result['command']}` ({result['elapsed_s']} s; {result['machine']['cpus']} CPUs shared by every Redis "
        f"server and the {result['load']['procs']} load processes, load average at the end "
        f"{result['machine']['load_average_at_end']}). On {result['machine']['cpus']} cores the aggregate jobs/s "
        "cannot grow with the primaries: the servers and the load share the same cores. What must stay flat is the "
        "Redis CPU per job on each primary.",
        "",
        "| configuration | shards per primary | jobs/s | Redis CPU ms/job (all primaries) | less idle | per primary, "
        "own jobs (ms) | less idle | idle % of a core, all | jobs per primary | max/min | machine busy % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        per = " / ".join(f"{n['cpu_ms_per_own_job']}" for n in r["per_primary"])
        net = " / ".join(f"{n['net_cpu_ms_per_own_job']}" for n in r["per_primary"])
        jobs = " / ".join(str(n["jobs"]) for n in r["per_primary"])
        spread = "/".join(str(s) for s in r["shards_per_primary"])
        lines.append(
            f"| {r['config']} | {spread} | {r['jobs_per_s']} | {r['redis_cpu_ms_per_job']} | "
            f"{r['redis_net_cpu_ms_per_job']} | {per} | {net} | {r['redis_idle_cpu_pct']} | {jobs} | "
            f"{r['max_min_jobs_per_primary']} | {r['machine_busy_pct']} |"
        )
    lines += [
        "",
        "The work per job is the same however many primaries share it; what one call costs is not, on 2 cores "
        "shared by up to 6 servers and the load (a server is scheduled on and off a core: cold caches):",
        "",
        "| configuration | commands per job, all primaries | EVALSHA per job | µs per EVALSHA |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['config']} | {r['commands_per_job']} | {r['calls_per_job'].get('evalsha', 0)} | "
            f"{r['evalsha_usec_per_call']} |"
        )
    lines += [
        "",
        f"- **One primary core handles about {cap['jobs_per_s_per_primary_core']} jobs/s** of state work (the "
        f"worst primary's {cap['worst_primary_cpu_ms_per_job']} ms of Redis CPU per job of its own shards, "
        f"{cap['worst_primary_net_cpu_ms_per_job']} ms less the servers' idle work, "
        f"{result['load']['shards']} shards).",
        f"- A target of R jobs/s needs ceil(R / {cap['jobs_per_s_per_primary_core']} / {cap['headroom']}) "
        "primaries: " + ", ".join(f"{r} jobs/s -> {n}" for r, n in cap["primaries_for"].items()) + ".",
        "",
        "## The default 16 shards (QUEUE_SHARDS unset) over contiguous equal slot ranges",
        "",
        "| primaries | shards per primary | max/min |",
        "|---|---|---|",
    ]
    for p, spread in result["default_spread"].items():
        lines.append(f"| {p} | {'/'.join(map(str, spread))} | {round(max(spread) / min(spread), 3)} |")
    lines += ["", "## Where each primary's CPU went (INFO commandstats, µs and calls per job of the whole run)", ""]
    for r in result["rows"]:
        lines.append(f"**{r['config']}**")
        lines.append("")
        for n in r["per_primary"]:
            top = list(n["commands"].items())[:6]
            listed = ", ".join(f"{k} {v['usec_per_job']} µs ({v['calls_per_job']})" for k, v in top)
            shared = r["shared_keys_on"].get(n["node"], [])
            lines.append(
                f"- {n['node']} ({n['cpu_pct']} % of a core): {listed}"
                + (f"; holds shared keys: {', '.join(shared)}" if shared and r["cluster"] else "")
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = arguments()
    started = time.time()
    rows = [] if args.no_standalone else [standalone(args)]
    for primaries in [int(p) for p in args.primaries.split(",")]:
        rows.append(cluster(args, primaries, args.shards))
    if not args.no_default_shards:
        rows.append(cluster(args, max(int(p) for p in args.primaries.split(",")), CLUSTER_DEFAULT_SHARDS))
    result = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "command": ".venv/bin/python bench/store_scale.py " + shlex.join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "load": {
            "procs": args.procs,
            "producers": args.producers,
            "consumers": args.consumers,
            "in_flight": args.in_flight,
            "tenants": args.tenants,
            "shards": args.shards,
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
        },
        "rows": rows,
        "capacity": capacity(rows, args),
        "default_spread": {p: static_spread(CLUSTER_DEFAULT_SHARDS, p) for p in (3, 6)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    report = markdown(result)
    for name in (f"{stamp}-store-scale", "store_scale"):
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(report)
    print(report, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
