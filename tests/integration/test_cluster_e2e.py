"""The product on a real 3-primary Redis Cluster (``REDIS_CLUSTER=true``, 16 queue shards), end to end through the
real API, dispatchers and Triton: a representative subset of the standalone suites (the whole suites run standalone;
the store and webhook suites run on a cluster too): submit / batch / poll / result, SSE to the final state,
``Prefer: wait``, the admin queue view and ``/health`` summed over shards, and a dispatcher SIGKILLed mid-batch whose
jobs are reclaimed (XAUTOCLAIM over every shard) and end exactly once."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import ADMIN_KEY, Stack
from helpers import TERMINAL, EventRecorder, jpeg, sse_events, submit, wait_done
from skimage import data as skdata
from stack import Service, stop_all

pytestmark = pytest.mark.integration

STAGES = ["initializing", "preprocessing", "inference", "completed"]
LEASE_MS = 3000


@pytest.fixture
def recorder(cluster_quiet_stack: Stack) -> Iterator[EventRecorder]:
    with EventRecorder(cluster_quiet_stack.redis.url, cluster=True) as rec:
        yield rec


def test_on_a_cluster_jobs_are_classified_streamed_and_counted_over_the_shards(
    cluster_quiet_stack: Stack, recorder: EventRecorder
) -> None:
    stack = cluster_quiet_stack
    with stack.client() as client, stack.client(ADMIN_KEY) as admin, contextlib.ExitStack() as open_stream:
        single = submit(client, jpeg(skdata.coffee())).json()["job_id"]
        batch = client.post("/classify/batch", files=[("files", (f"{i}.jpg", jpeg(), "image/jpeg")) for i in range(3)])
        assert batch.status_code == 200, batch.text
        batch_ids = [job["job_id"] for job in batch.json()["jobs"]]
        job_ids = [single, *batch_ids]
        recorder.follow(job_ids)
        queues = admin.get("/admin/queues").json()
        statuses = [client.get(f"/status/{j}").json()["status"] for j in job_ids]
        assert sum(q["waiting"] for q in queues["queues"]) == 4, (queues, statuses)  # summed over the shards
        response = open_stream.enter_context(client.stream("GET", f"/status/{single}/events"))
        events = sse_events(response)
        first = next(events)
        with stack.own_dispatcher():
            rest = list(events)  # every change, then the end
            done = [wait_done(client, job_id) for job_id in job_ids]
            waited = submit(client, jpeg(skdata.coffee()), headers={"Prefer": "wait=60"})
            deadline = time.monotonic() + 30  # the dispatcher's heartbeat index, read once per probe
            while (health := client.get("/health").json()).get("status") != "healthy" and time.monotonic() < deadline:
                time.sleep(0.2)
            results = [client.get(f"/result/{job_id}") for job_id in job_ids]
        queues = admin.get("/admin/queues").json()
    assert first[1]["status"] == "pending"
    assert [d["stage"] for _, d in rest] == STAGES and rest[-1][1]["status"] == "completed"
    assert [d["status"] for d in done] == ["completed"] * 4
    assert [r.status_code for r in results] == [200] * 4
    assert results[0].json()["predictions"][0]["class_id"] == 967  # coffee
    assert waited.status_code == 200 and waited.json()["status"] == "completed", waited.text
    assert health["status"] == "healthy", health
    assert sum(q["length"] + q["waiting"] + q["in_flight"] for q in queues["queues"]) == 0, queues
    time.sleep(0.3)
    counts = recorder.terminal_counts(job_ids)
    assert all(counts[j] == 1 for j in job_ids), counts


def test_on_a_cluster_a_dispatcher_killed_mid_batch_leaves_jobs_that_are_reclaimed_and_end_once(
    cluster_quiet_stack: Stack, recorder: EventRecorder
) -> None:
    stack = cluster_quiet_stack
    env = {**stack.env, "LEASE_MS": str(LEASE_MS), "BATCH_MAX_SIZE": "8"}
    with stack.client() as client:
        job_ids = [submit(client, jpeg(skdata.chelsea())).json()["job_id"] for _ in range(16)]
        recorder.follow(job_ids)
        victim = Service("dispatcher", {**env, "PREPROCESS_THREADS": "1"}).start()
        survivor: Service | None = None
        try:
            deadline = time.monotonic() + 60
            while not any(client.get(f"/status/{j}").json()["status"] == "processing" for j in job_ids):
                assert time.monotonic() < deadline, "no job was ever picked up"
                time.sleep(0.01)
            victim.signal(signal.SIGKILL)
            assert victim.process is not None
            victim.process.wait(5)
            left = [j for j in job_ids if client.get(f"/status/{j}").json()["status"] not in TERMINAL]
            assert left, "the kill came too late to leave work in flight"
            survivor = Service("dispatcher", env).start()
            done = [wait_done(client, job_id) for job_id in job_ids]
        finally:
            stop_all([victim] if survivor is None else [victim, survivor])
    assert [d["status"] for d in done] == ["completed"] * 16
    time.sleep(0.3)
    counts = recorder.terminal_counts(job_ids)
    assert all(counts[j] == 1 for j in job_ids), counts
    assert "reclaimed" in survivor.output()
    assert "CROSSSLOT" not in survivor.output() + victim.output()
    with httpx.Client(base_url=stack.base_url, headers={"X-API-Key": ADMIN_KEY}) as admin:
        queues = admin.get("/admin/queues").json()
    assert sum(q["in_flight"] for q in queues["queues"]) == 0, queues
