"""A primary of the Redis Cluster is SIGKILLed mid-run: every accepted job still ends exactly once, or its loss is
visible (issue 26, item 6).

The real service (``aic api`` and two ``aic dispatcher`` processes with ``REDIS_CLUSTER=true``) runs on the
``redis_cluster_ha`` fixture (3 primaries, a replica each, ``cluster-node-timeout`` 1 s). Clients submit jobs (some
with a webhook) from threads while the primary serving the most queue shards is killed; submitting goes on through
the failover. Then, within a bounded wait (leases of 3 s, a short ``deadline_s`` as the backstop), every submit that
was accepted (200 with a job id) is in a terminal state or answers 404 (its record was in the replication window the
replica had not received: the loss is visible, never a job stuck "pending"), no job was delivered two terminal
webhooks, and every refused submit was a clean 503 with ``Retry-After`` (never a 500). The numbers are printed
(``-s``) and the README's "Scaling" section quotes them (docs-snippets/failover.md).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import redis
from aic.local.ports import free_port
from aic.local.triton import LocalTriton
from aic.store import keys
from conftest import API_KEY, WebhookCA, publish_models
from helpers import TERMINAL, jpeg, sse_events
from redis.crc import key_slot
from redis_cluster import ClusterNode, RedisCluster
from stack import Service, stop_all, wait_for_http
from webhook_receiver import Receiver

pytestmark = pytest.mark.integration

SHARDS = 16
LEASE_MS = 3000
DEADLINE_S = 40
"""Each job's own deadline: the backstop that fails a job nobody finishes (none should need it)."""
SETTLE_S = DEADLINE_S + 15
"""How long accepted jobs get to reach a terminal state after the last submit (deadline plus two sweeps)."""
CAT = jpeg(quality=80)


@dataclass
class Outcome:
    """One submit as the client saw it."""

    at: float
    status: int
    """HTTP status; 0: no answer (connection refused or reset, timeout)."""
    job_id: str | None = None
    retry_after: str | None = None
    body: str = ""
    webhook: bool = False
    took_s: float = 0.0


@dataclass
class ClusterStack:
    cluster: RedisCluster
    api: Service
    dispatchers: list[Service]
    base_url: str
    layout: keys.Keyspace = field(default_factory=lambda: keys.Keyspace(shards=SHARDS, cluster=True))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"X-API-Key": API_KEY}, timeout=30)

    def redis(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.cluster.url, decode_responses=True)

    def shards_by_primary(self) -> Counter[int]:
        """How many queue shards each live primary serves now (by port)."""
        return Counter(
            self.cluster.primary_for_slot(key_slot(self.layout.queue("normal", shard).encode())).port
            for shard in self.layout.all_shards()
        )


@contextmanager
def cluster_stack(
    cluster: RedisCluster, triton: LocalTriton, webhook_ca: WebhookCA, dispatchers: int, **extra_env: str
) -> Iterator[ClusterStack]:
    """An `aic api` and ``dispatchers`` dispatchers with ``REDIS_CLUSTER=true`` on ``cluster``, the repository's
    models routed there."""
    with pytest.MonkeyPatch.context() as env_patch:
        env_patch.setenv("REDIS_CLUSTER", "true")
        env_patch.setenv("QUEUE_SHARDS", str(SHARDS))
        publish_models(cluster.url, triton.repository)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "QUEUE_", "LEASE"))},
        "REDIS_URL": cluster.url,
        "REDIS_CLUSTER": "true",
        "QUEUE_SHARDS": str(SHARDS),
        "TRITON_URL": triton.grpc_url,
        "MODEL_REPOSITORY": str(triton.repository),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_KEYS": f"acme:{API_KEY}",
        "SECRET_KEY": "test-secret-key-for-jwt-signing-0123456789",
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": "INFO",
        "METRICS_PORT": "0",
        "LEASE_MS": str(LEASE_MS),
        "HEARTBEAT_INTERVAL_S": "1",
        "DEADLINE_SWEEP_INTERVAL_S": "1",
        "SHUTDOWN_GRACE_S": "3",
        "BATCH_MAX_SIZE": "8",
        **webhook_ca.env,
        **extra_env,
    }
    api = Service("api", env).start()
    workers = [Service("dispatcher", env).start() for _ in range(dispatchers)]
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_for_http(f"{base}/health", 60, api)
        yield ClusterStack(cluster, api, workers, base)
    finally:
        stop_all([api, *workers])


class Submitters:
    """``clients`` threads submitting jobs one after another until stopped; every third job asks for a webhook."""

    def __init__(self, stack: ClusterStack, receiver: Receiver, clients: int = 2) -> None:
        self.stack, self.receiver = stack, receiver
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Submitters:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def accepted(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.job_id is not None]

    def _run(self) -> None:
        with self.stack.client() as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                form = {"deadline_s": str(DEADLINE_S)}
                if n % 3 == 0:
                    form["callback_url"] = self.receiver.url("/ok")
                at = time.monotonic()
                try:
                    answer = client.post("/classify", files={"file": ("cat.jpg", CAT, "image/jpeg")}, data=form)
                except httpx.HTTPError as exc:
                    outcome = Outcome(at, 0, body=repr(exc))
                else:
                    job_id = answer.json().get("job_id") if answer.status_code in (200, 202) else None
                    outcome = Outcome(at, answer.status_code, job_id, answer.headers.get("retry-after"), answer.text)
                outcome.webhook, outcome.took_s = "callback_url" in form, time.monotonic() - at
                with self._lock:
                    self.outcomes.append(outcome)
                if outcome.job_id is None:
                    time.sleep(0.05)  # a refused client backs off a little, as Retry-After asks


def wait_until(what: str, condition: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)


def states(client: httpx.Client, job_ids: list[str]) -> dict[str, str]:
    """Each job's status as the API answers it; "lost" where it answers 404, "unavailable" on a 5xx."""
    found = {}
    for job_id in job_ids:
        answer = client.get(f"/status/{job_id}")
        if answer.status_code == 404:
            found[job_id] = "lost"
        elif answer.status_code == 200:
            found[job_id] = answer.json()["status"]
        else:
            found[job_id] = f"http-{answer.status_code}"
    return found


def test_sigkill_of_a_primary_mid_run_every_accepted_job_ends_once_or_is_visibly_lost(
    redis_cluster_ha: RedisCluster,
    triton_server: LocalTriton,
    webhook_ca: WebhookCA,
    webhook_receiver: Receiver,
) -> None:
    cluster = redis_cluster_ha
    with cluster_stack(cluster, triton_server, webhook_ca, dispatchers=2) as stack, stack.client() as client:
        secret = client.get("/webhooks/secret").json()["secret"]
        webhook_receiver.secrets = [*webhook_receiver.secrets, secret]
        by_port = stack.shards_by_primary()
        victim: ClusterNode = next(n for n in cluster.primaries() if n.port == by_port.most_common(1)[0][0])

        with Submitters(stack, webhook_receiver) as load:
            # mid-run: jobs accepted and some already finished before the kill
            wait_until("40 submits accepted", lambda: len(load.accepted()) >= 40, 60)
            ids = [o.job_id for o in load.accepted() if o.job_id]
            wait_until("a job completed", lambda: "completed" in states(client, ids[:10]).values(), 60)
            killed_at = time.monotonic()
            cluster.kill(victim)
            cluster.wait_failover(victim, timeout_s=30)
            failed_over_s = time.monotonic() - killed_at
            # keep submitting until the service accepts again, and a while after
            wait_until("a submit accepted after the failover", lambda: any(
                o.at > killed_at + failed_over_s for o in load.accepted()), 60)  # fmt: skip
            resumed = time.monotonic()
            wait_until("more submits after the failover", lambda: len(load.accepted()) >= 160 and (
                time.monotonic() - resumed > 2), 60)  # fmt: skip
        outcomes = list(load.outcomes)

        accepted = [o for o in outcomes if o.job_id is not None]
        refused = [o for o in outcomes if o.job_id is None]
        job_ids = [o.job_id for o in accepted if o.job_id is not None]
        assert len(set(job_ids)) == len(job_ids), "one id was given to two submits"

        # every refusal is a clean "retry later": 503 with Retry-After, never a 500 (or a hang past the client's 30 s)
        unclean = [(o.status, o.body[:200]) for o in refused if o.status != 503 or not o.retry_after]
        assert not unclean, unclean

        # bounded: every accepted job reaches a terminal state or answers 404
        deadline = time.monotonic() + SETTLE_S
        while True:
            final = states(client, job_ids)
            open_jobs = {j: s for j, s in final.items() if s not in TERMINAL and s != "lost"}
            if not open_jobs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not open_jobs, f"{len(open_jobs)} accepted jobs neither ended nor lost: {Counter(open_jobs.values())}"
        counts = Counter(final.values())
        assert counts["cancelled"] == 0

        # exactly once: one terminal webhook per job that asked for one (none for a lost one), each job's result
        # written once (attempts: how many times it was handed to a dispatcher; >1 only for a reclaimed job)
        hooked = [o.job_id for o in accepted if o.webhook and o.job_id is not None]

        def hooks_in() -> bool:
            return all(final[j] == "lost" or any(r.answered for r in webhook_receiver.received(j)) for j in hooked)

        wait_until("the terminal webhooks", hooks_in, 60)
        time.sleep(LEASE_MS / 1000)  # a duplicate would come from a reclaim after a lease: give it one
        deliveries = {j: [r for r in webhook_receiver.received(j) if r.answered] for j in hooked}
        twice = {j: len(got) for j, got in deliveries.items() if len(got) > 1}
        r = stack.redis()
        attempts = Counter(
            int(r.hget(stack.layout.job_status(j), "attempts") or 0) for j in job_ids if final[j] != "lost"
        )
        r.close()

        unavailable = [o.at for o in refused]
        window_s = (max(unavailable) - min(unavailable)) if unavailable else 0.0
        print(  # the numbers docs-snippets/failover.md quotes
            f"\nfailover: killed :{victim.port} serving {by_port.most_common(1)[0][1]}/{SHARDS} shards; "
            f"replica promoted and cluster ok after {failed_over_s:.1f} s\n"
            f"submits: {len(outcomes)}, accepted {len(accepted)}, "
            f"refused {len(refused)} ({Counter(o.status for o in refused)}), refusals spanning {window_s:.1f} s; "
            f"slowest submit {max(o.took_s for o in outcomes):.1f} s, {sum(o.took_s > 1 for o in outcomes)} over 1 s\n"
            f"accepted jobs: {dict(counts)}; attempts per job {dict(attempts)}\n"
            f"webhooks: {len(hooked)} asked, {sum(len(v) for v in deliveries.values())} delivered, twice: {twice}"
        )
        assert not twice, f"jobs whose terminal webhook was delivered twice: {twice}"
        assert counts["completed"] > 0.8 * len(job_ids), counts
        assert all(s.process is not None and s.process.poll() is None for s in [stack.api, *stack.dispatchers]), (
            "a process died during the failover"
        )
        # the service is whole again: fresh jobs complete, and live progress (the API's event hub, sharded pub/sub
        # resubscribed on the promoted node) streams each of them to its end
        for _ in range(4):
            answer = client.post("/classify", files={"file": ("cat.jpg", CAT, "image/jpeg")}, data={"deadline_s": "30"})
            assert answer.status_code == 200, answer.text
            fresh = answer.json()["job_id"]
            with client.stream("GET", f"/status/{fresh}/events") as stream:
                seen = [data["status"] for _, data in sse_events(stream)]
            assert seen and seen[-1] == "completed", seen
        for service in [stack.api, *stack.dispatchers]:
            assert "Traceback" not in service.output(), service.output()[-4000:]
