"""Faults: every accepted job ends in the right terminal state exactly once, whatever is killed or restarted.

This module runs its own rig (redis-server with an append-only file, a local Triton, `aic api`, and as many
`aic dispatcher` processes as a test needs) so it can kill and restart each of them without disturbing the
rest of the suite. Leases are short (3 s) so reclaiming is observable in a test's time. The representative tests
run with uploads in Redis and in S3 (moto; the ``uploads`` fixture restarts the rig's API with ``OBJECT_STORE_URL``),
and one takes the S3 server away mid-run.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import redis
from aic.core import settings as aic_settings
from aic.local.modelbuild import ensure_default_model
from aic.local.ports import free_port
from aic.local.triton import LocalTriton, on_free_ports
from aic.store import keys
from conftest import API_KEY, publish_models
from helpers import TERMINAL, EventRecorder, jpeg
from skimage import data as skdata
from stack import RedisServer, S3Server, Service, stop_all, wait_for_http

pytestmark = pytest.mark.integration

LEASE_MS = 3000

CAT = jpeg(skdata.chelsea(), quality=90)
POISON = CAT[: len(CAT) // 2]  # passes the API's header checks, cannot be decoded


@dataclass
class Rig:
    redis_server: RedisServer
    triton: LocalTriton
    api: Service
    env: dict[str, str]
    base_url: str
    dispatchers: list[Service] = field(default_factory=list)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"X-API-Key": API_KEY}, timeout=30)

    def dispatcher(self, **extra: str) -> Service:
        service = Service("dispatcher", {**self.env, **extra}).start()
        self.dispatchers.append(service)
        return service

    def submit(self, count: int, image: bytes = CAT, priority: str = "normal") -> list[str]:
        with self.client() as client:
            ids = []
            for _ in range(count):
                response = client.post("/classify", files={"file": ("x.jpg", image)}, data={"priority": priority})
                assert response.status_code == 200, response.text
                ids.append(response.json()["job_id"])
            return ids

    def statuses(self, job_ids: list[str]) -> dict[str, str]:
        r = self.redis()
        return {j: (r.hget(keys.LEGACY.job_status(j), "status") or b"?").decode() for j in job_ids}

    def wait_terminal(self, job_ids: list[str], timeout_s: float = 120) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            statuses = self.statuses(job_ids)
            if all(s in TERMINAL for s in statuses.values()):
                return statuses
            time.sleep(0.1)
        raise AssertionError(f"not finished in {timeout_s}s: {Counter(self.statuses(job_ids).values())}")

    def assert_exactly_once(
        self, recorder: EventRecorder, job_ids: list[str], expected: str, *, image_kept: bool = False
    ) -> None:
        statuses = self.wait_terminal(job_ids)
        assert Counter(statuses.values()) == Counter({expected: len(job_ids)}), statuses
        time.sleep(0.3)  # let the last published events arrive
        counts = recorder.terminal_counts(job_ids)
        assert all(counts[j] == 1 for j in job_ids), {j: counts[j] for j in job_ids if counts[j] != 1}
        r = self.redis()
        for job_id in job_ids:
            assert bool(r.exists(keys.LEGACY.job_result(job_id))) == (expected == "completed")
            assert bool(r.exists(keys.LEGACY.job_image(job_id))) == image_kept  # kept only for a dead letter's retry

    def stop_dispatchers(self) -> None:
        stop_all(self.dispatchers)
        self.dispatchers.clear()

    @contextmanager
    def uploads_in(self, s3: S3Server) -> Iterator[str]:
        """The rig with its uploads in S3 under a prefix of its own (yielded): the API restarted with it, and every
        dispatcher started meanwhile; a short sweep so strays of a store outage go within a test's time."""
        prefix, plain = f"faults-{uuid.uuid4().hex[:8]}", self.env
        sweep = {"UPLOAD_SWEEP_INTERVAL_S": "1", "UPLOAD_STRAY_AGE_S": "10"}
        self._restart_api({**plain, **s3.env(prefix), **sweep})
        try:
            yield prefix
        finally:
            self.stop_dispatchers()
            self._restart_api(plain)

    def _restart_api(self, env: dict[str, str]) -> None:
        self.api.stop()
        self.env = env
        self.api = Service("api", env).start()
        wait_for_http(f"{self.base_url}/health", 60, self.api)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = aic_settings.load(aic_settings.TritonSettings)
    ensure_default_model(base.model_repository, ("python",))
    workdir = tmp_path_factory.mktemp("faults")
    redis_server = RedisServer(free_port(), workdir)
    redis_server.start()
    triton_settings = on_free_ports(base, triton_backends=("python",), triton_timeout_s=120.0)
    triton = LocalTriton(triton_settings, log_path=workdir / "triton.log")
    triton.start()
    triton.wait_ready(120)
    publish_models(redis_server.url, triton.repository)
    port = free_port()
    env = {
        **_base_env(),
        "REDIS_URL": redis_server.url,
        "TRITON_URL": triton.grpc_url,
        "API_PORT": str(port),
        "API_KEYS": f"acme:{API_KEY}",
        "RATE_LIMIT_PER_MINUTE": "0",  # these tests submit bursts; limits have their own tests
        "LEASE_MS": str(LEASE_MS),
        "HEARTBEAT_INTERVAL_S": "1",
        "SHUTDOWN_GRACE_S": "5",
        "BATCH_MAX_SIZE": "8",
        "TRITON_TIMEOUT_S": "60",
    }
    api = Service("api", env).start()
    rig = Rig(redis_server, triton, api, env, f"http://127.0.0.1:{port}/api/v1")
    try:
        wait_for_http(f"{rig.base_url}/health", 60, api)
        yield rig
    finally:
        rig.stop_dispatchers()
        rig.api.stop()  # not ``api``: a test with uploads in S3 restarts the rig's API (``_restart_api``)
        triton.stop()
        redis_server.stop()


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "TRITON_", "API_", "LEASE"))}


@pytest.fixture(params=["redis", "s3"])
def uploads(request: pytest.FixtureRequest, rig: Rig) -> Iterator[str]:
    """The test once with uploads in Redis (yields ""), once in S3 (yields the prefix)."""
    if request.param == "redis":
        yield ""
        return
    s3: S3Server = request.getfixturevalue("s3")
    with rig.uploads_in(s3) as prefix:
        yield prefix


def wait_prefix_empty(s3: S3Server, prefix: str, timeout_s: float = 60) -> None:
    """Until no upload is left under ``prefix``: deleted after each job's end, or swept."""
    deadline = time.monotonic() + timeout_s
    while left := s3.keys(prefix):
        assert time.monotonic() < deadline, f"{len(left)} uploads left behind, e.g. {left[:3]}"
        time.sleep(0.2)


@pytest.fixture
def recorder(rig: Rig) -> Iterator[EventRecorder]:
    rec = EventRecorder(rig.redis_server.url)
    yield rec
    rec.close()
    rig.stop_dispatchers()


def test_health_is_degraded_without_dispatchers_and_healthy_with_them(rig: Rig, recorder: EventRecorder) -> None:
    body = httpx.get(f"{rig.base_url}/health").json()
    assert body["status"] == "degraded"
    assert body["services"]["dispatchers"] == "no active dispatchers"
    rig.dispatcher()
    rig.dispatcher()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = httpx.get(f"{rig.base_url}/health").json()
        if body["services"]["dispatchers"] == "healthy (2 dispatchers)":
            break
        time.sleep(0.2)
    assert body["status"] == "healthy", body
    assert body["services"]["dispatchers"] == "healthy (2 dispatchers)"


def test_sigkill_mid_batch_jobs_are_reclaimed_and_finish_once(
    rig: Rig, uploads: str, recorder: EventRecorder, request: pytest.FixtureRequest
) -> None:
    victim = rig.dispatcher(PREPROCESS_THREADS="1")
    job_ids = rig.submit(24)
    deadline = time.monotonic() + 60
    while "processing" not in rig.statuses(job_ids).values():
        assert time.monotonic() < deadline, "no job was ever picked up"
        time.sleep(0.01)
    victim.signal(signal.SIGKILL)
    victim.process.wait(5)  # type: ignore[union-attr]
    held_by_victim = [j for j, s in rig.statuses(job_ids).items() if s not in TERMINAL]
    assert held_by_victim, "the kill came too late to leave work in flight"
    survivor = rig.dispatcher()
    rig.assert_exactly_once(recorder, job_ids, "completed")
    assert "reclaimed" in survivor.output()
    if uploads:
        wait_prefix_empty(request.getfixturevalue("s3"), uploads)


def test_slow_job_keeps_its_lease_and_is_not_stolen(rig: Rig, recorder: EventRecorder) -> None:
    worker = rig.dispatcher()
    job_ids = rig.submit(4)
    rig.wait_terminal(job_ids)  # warm: the model answered once
    observer = rig.dispatcher()
    rig.triton.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]  # Triton hangs mid-call
    try:
        slow = rig.submit(3)
        time.sleep(3 * LEASE_MS / 1000)  # three leases: a job without renewal would have been stolen
    finally:
        rig.triton.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    rig.assert_exactly_once(recorder, slow, "completed")
    r = rig.redis()
    assert all(int(r.hget(keys.LEGACY.job_status(j), "attempts") or 0) == 1 for j in slow)
    assert "reclaimed" not in observer.output() and "reclaimed" not in worker.output()


def test_triton_stopped_then_restarted_jobs_wait_and_finish(rig: Rig, uploads: str, recorder: EventRecorder) -> None:
    rig.dispatcher()
    rig.triton.stop()
    try:
        job_ids = rig.submit(6)
        time.sleep(3)
        assert not any(s in TERMINAL for s in rig.statuses(job_ids).values())
    finally:
        rig.triton.start()
        rig.triton.wait_ready(120)
    rig.assert_exactly_once(recorder, job_ids, "completed")


def test_s3_stopped_for_15_s_mid_run_every_job_completes_once(rig: Rig, s3: S3Server, recorder: EventRecorder) -> None:
    with rig.uploads_in(s3) as prefix:
        job_ids = rig.submit(200)
        worker, observer = rig.dispatcher(), rig.dispatcher()
        deadline = time.monotonic() + 120
        while "completed" not in rig.statuses(job_ids).values():
            assert time.monotonic() < deadline, "no job completed"
            time.sleep(0.05)
        s3.stop()
        try:
            waiting = [j for j, s in rig.statuses(job_ids).items() if s not in TERMINAL]
            time.sleep(15)  # five leases: a job whose lease was not renewed would be reclaimed meanwhile
            during = Counter(rig.statuses(job_ids).values())
        finally:
            s3.start()
        assert waiting, "the outage came too late to leave work waiting"
        assert during["failed"] == 0, during  # nothing failed or dead-lettered for the outage
        rig.assert_exactly_once(recorder, job_ids, "completed")
        r = rig.redis()
        assert all(int(r.hget(keys.LEGACY.job_status(j), "attempts") or 0) == 1 for j in job_ids), (
            "a delivery was counted"
        )
        assert "reclaimed" not in worker.output() + observer.output()
        wait_prefix_empty(s3, prefix)


def test_triton_away_past_the_deadline_fails_with_timeout_and_dead_letters(rig: Rig, recorder: EventRecorder) -> None:
    rig.dispatcher(TRITON_OUTAGE_TIMEOUT_S="2")
    dead_before = rig.redis().xlen(keys.LEGACY.dead_letter_stream())
    rig.triton.stop()
    try:
        job_ids = rig.submit(3)
        rig.assert_exactly_once(recorder, job_ids, "failed", image_kept=True)
    finally:
        rig.triton.start()
        rig.triton.wait_ready(120)
    r = rig.redis()
    assert all(r.hget(keys.LEGACY.job_status(j), "error_code") == b"TIMEOUT" for j in job_ids)
    letters = [json.loads(f[b"job"]) for _, f in r.xrange(keys.LEGACY.dead_letter_stream())][dead_before:]
    assert sorted(letter["job_id"] for letter in letters) == sorted(job_ids)


def test_redis_restart_keeps_accepted_jobs(rig: Rig, recorder: EventRecorder) -> None:
    worker = rig.dispatcher()
    worker.signal(signal.SIGSTOP)  # jobs stay queued across the restart
    job_ids = rig.submit(8)
    rig.redis_server.stop()  # SIGTERM: the append-only file is flushed
    rig.redis_server.start()
    late = EventRecorder(rig.redis_server.url)
    try:
        worker.signal(signal.SIGCONT)
        rig.assert_exactly_once(late, job_ids, "completed")
    finally:
        late.close()
    with rig.client() as client:  # the API reconnected by itself
        assert client.get(f"/result/{job_ids[0]}").status_code == 200


def test_a_submit_held_by_prefer_wait_when_redis_goes_away_still_answers_with_its_job(
    rig: Rig, recorder: EventRecorder
) -> None:
    """The job was accepted before Redis went away: the client must learn its id (a 503 would make it submit
    again, and the job it was not told of would run as well)."""
    worker = rig.dispatcher()
    worker.signal(signal.SIGSTOP)  # the job stays pending while the submit waits
    r = rig.redis()
    queued = r.xlen(keys.LEGACY.queue("normal"))
    with ThreadPoolExecutor(1) as pool, rig.client() as client:
        pending = pool.submit(client.post, "/classify", files={"file": ("x.jpg", CAT)}, headers={"Prefer": "wait=3"})
        deadline = time.monotonic() + 10
        while r.xlen(keys.LEGACY.queue("normal")) == queued and time.monotonic() < deadline:
            time.sleep(0.02)
        rig.redis_server.stop()
        try:
            answer = pending.result(timeout=30)
        finally:
            rig.redis_server.start()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "pending" and body["job_id"]
    late = EventRecorder(rig.redis_server.url)
    try:
        worker.signal(signal.SIGCONT)
        rig.assert_exactly_once(late, [body["job_id"]], "completed")
    finally:
        late.close()


def test_poison_images_fail_alone_and_good_ones_complete(rig: Rig, recorder: EventRecorder) -> None:
    worker = rig.dispatcher()
    good = rig.submit(6)
    bad = rig.submit(2, image=POISON)
    good += rig.submit(2)
    rig.assert_exactly_once(recorder, good, "completed")
    rig.assert_exactly_once(recorder, bad, "failed")
    r = rig.redis()
    assert all(r.hget(keys.LEGACY.job_status(j), "error_code") == b"INVALID_IMAGE" for j in bad)
    assert worker.process.poll() is None  # type: ignore[union-attr]


def test_low_priority_is_not_starved_by_an_urgent_flood(rig: Rig, recorder: EventRecorder) -> None:
    worker = rig.dispatcher()
    worker.signal(signal.SIGSTOP)
    low = rig.submit(1, priority="low")
    urgent = rig.submit(40, priority="urgent")
    worker.signal(signal.SIGCONT)
    rig.assert_exactly_once(recorder, low + urgent, "completed")
    order = recorder.completion_order()
    # one place per batch is reserved for each queue: the low job rides in the first batches
    assert order.index(low[0]) < 2 * 8, order.index(low[0])


def test_sigterm_finishes_or_releases_in_flight_work_within_the_grace(rig: Rig, recorder: EventRecorder) -> None:
    leaving = rig.dispatcher()
    job_ids = rig.submit(16)
    while "processing" not in rig.statuses(job_ids).values():
        time.sleep(0.01)
    started = time.monotonic()
    leaving.signal(signal.SIGTERM)
    code = leaving.process.wait(30)  # type: ignore[union-attr]
    assert code == 0, leaving.output()
    assert time.monotonic() - started < 5 + 5  # SHUTDOWN_GRACE_S plus process teardown
    rig.dispatcher()
    rig.assert_exactly_once(recorder, job_ids, "completed")


def test_full_queue_answers_503_with_retry_after(rig: Rig, recorder: EventRecorder) -> None:
    port = free_port()
    tight = Service("api", {**rig.env, "API_PORT": str(port), "QUEUE_MAX_DEPTH": "3"}).start()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/v1/health", 60, tight)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers={"X-API-Key": API_KEY}) as client:
            answers = [client.post("/classify", files={"file": ("x.jpg", CAT)}) for _ in range(4)]
    finally:
        tight.stop()
    assert [a.status_code for a in answers] == [200, 200, 200, 503]
    refused = answers[-1]
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"] == "SERVICE_UNAVAILABLE"
    accepted = [a.json()["job_id"] for a in answers[:3]]
    rig.dispatcher()
    rig.assert_exactly_once(recorder, accepted, "completed")
