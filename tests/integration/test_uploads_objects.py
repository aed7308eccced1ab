"""Uploads by reference (OBJECT_STORE_URL): the store against a real Redis and a ``file://`` store, then the product
against moto's S3 server: no image bytes in Redis, each object deleted once its job no longer needs it, strays swept,
and a store away answered with 503 and nothing half made."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aic.core.enums import Priority
from aic.core.errors import (
    BadRequestError,
    ImageValidationError,
    JobConflictError,
    StoreUnavailable,
    UploadNotFoundError,
)
from aic.core.settings import ObjectStoreSettings, RedisSettings
from aic.local.ports import free_port
from aic.local.triton import LocalTriton
from aic.store import keys
from aic.store.connection import connect
from aic.store.direct import HEAD_BYTES, DirectUploads, Reservation
from aic.store.jobs import JobStore, NewJob
from aic.store.objects import StoreProbe, Uploads, connect_uploads
from aic.store.queue import QueueConsumer
from aic.store.transitions import Completion, JobTransitions
from conftest import OTHER_TENANT_KEY, Stack, WebhookCA, running_stack
from helpers import jpeg, submit, wait_done
from obstore.store import S3Store
from redis.asyncio import Redis
from stack import RunningRedis, S3Server

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis(own_redis: RunningRedis) -> AsyncIterator[Redis]:
    client = connect(RedisSettings(redis_url=own_redis.url))
    await client.flushdb()
    await client.hset(keys.LEGACY.model_routes, "latest", "efficientnet-lite0")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def uploads(tmp_path: Path) -> Uploads:
    found = connect_uploads(ObjectStoreSettings(object_store_url=f"file://{tmp_path}/uploads"))
    assert found is not None
    return found


def stored(root: Path) -> set[str]:
    """Every object of a ``file://`` store, as ``<tenant>/<job id>``."""
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def new_job(tenant: str = "acme", image: bytes = b"pixels") -> NewJob:
    return NewJob(str(uuid.uuid4()), tenant, image, {"format": "JPEG"}, Priority.HIGH, "latest")


async def taken_jobs(redis: Redis, transitions: JobTransitions) -> list[Completion]:
    consumer = QueueConsumer(redis, "test")
    await consumer.ensure_groups()
    entries = (await consumer.read({Priority.HIGH: 10}))[Priority.HIGH]
    return [Completion(t.job, t.entry, b"{}") for t in await transitions.take(entries) if t.job and t.image]


async def test_redis_keeps_the_path_and_the_dispatcher_reads_the_bytes(
    redis: Redis, uploads: Uploads, tmp_path: Path
) -> None:
    store, transitions = JobStore(redis, uploads=uploads), JobTransitions(redis, uploads)
    job = new_job(tenant="team/a b", image=b"\xff\xd8 the photo")
    [created] = await store.create([job])
    assert stored(tmp_path / "uploads") == {f"team%2Fa%20b/{job.job_id}"}, "one path segment per tenant"
    assert await redis.get(keys.LEGACY.job_image(job.job_id)) == f"team%2Fa%20b/{job.job_id}".encode()
    assert created.upload == f"team%2Fa%20b/{job.job_id}"
    consumer = QueueConsumer(redis, "test")
    await consumer.ensure_groups()
    entries = (await consumer.read({Priority.HIGH: 10}))[Priority.HIGH]
    [taken] = await transitions.take(entries)
    assert taken.image == b"\xff\xd8 the photo"


async def test_completion_and_failure_delete_the_object_and_a_dead_letter_keeps_it_for_its_retry(
    redis: Redis, uploads: Uploads, tmp_path: Path
) -> None:
    store, transitions = JobStore(redis, uploads=uploads), JobTransitions(redis, uploads)
    done, failed, dead = new_job(), new_job(), new_job()
    await store.create([done, failed, dead])
    held = {item.job.job_id: item for item in await taken_jobs(redis, transitions)}
    await transitions.complete([held[done.job_id]])
    await transitions.fail([held[failed.job_id]], "bad image", "INVALID_IMAGE")
    await transitions.fail([held[dead.job_id]], "no model", "MODEL_ERROR", dead_letter=True)
    assert stored(tmp_path / "uploads") == {f"acme/{dead.job_id}"}
    await store.retry_dead(await store.get(dead.job_id))
    [again] = await taken_jobs(redis, transitions)
    await transitions.complete([again])
    assert stored(tmp_path / "uploads") == set()


async def test_cancel_deletes_the_object_once_the_job_is_cancelled(
    redis: Redis, uploads: Uploads, tmp_path: Path
) -> None:
    store = JobStore(redis, uploads=uploads)
    job = new_job()
    await store.create([job])
    await store.cancel(await store.get(job.job_id))
    assert stored(tmp_path / "uploads") == set()


async def test_a_refused_request_leaves_no_object(redis: Redis, uploads: Uploads, tmp_path: Path) -> None:
    store = JobStore(redis, uploads=uploads)
    refused = NewJob(str(uuid.uuid4()), "acme", b"pixels", {}, Priority.HIGH, "no-such-model")
    with pytest.raises(BadRequestError):
        await store.create([refused])
    assert stored(tmp_path / "uploads") == set()


async def test_the_sweep_deletes_old_objects_no_job_needs_and_keeps_the_rest(
    redis: Redis, uploads: Uploads, tmp_path: Path
) -> None:
    store, root = JobStore(redis, uploads=uploads), tmp_path / "uploads"
    live = new_job()
    await store.create([live])
    stray = f"acme/{uuid.uuid4()}"  # written by a submit that crashed before creating its job
    await uploads.put([(stray, b"pixels")])
    assert await uploads.sweep(redis, older_than_s=3600) == 0, "young objects may belong to a submit in progress"
    old = time.time() - 7200
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))
    assert await uploads.sweep(redis, older_than_s=3600) == 1
    assert stored(root) == {f"acme/{live.job_id}"}
    # one dispatcher of all sweeps per interval
    assert await JobTransitions(redis, uploads).sweep_uploads(60, 3600) == 0
    assert await JobTransitions(redis, uploads).sweep_uploads(60, 3600) is None


async def test_a_store_away_is_store_unavailable_and_creates_no_job(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: connections are refused
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    away = connect_uploads(ObjectStoreSettings(object_store_url="s3://uploads/x", object_store_retry_timeout_s=0.5))
    store, job = JobStore(redis, uploads=away), new_job()
    with pytest.raises(StoreUnavailable) as refused:
        await store.create([job])
    assert refused.value.status_code == 503 and int(refused.value.headers["Retry-After"]) >= 1
    assert not await redis.exists(keys.LEGACY.job_status(job.job_id))
    assert await redis.xlen(keys.LEGACY.queue(Priority.HIGH)) == 0


# -- the product on S3 (moto) ---------------------------------------------------------------------------------


def test_an_upload_is_an_object_and_redis_holds_no_image_bytes(s3_quiet_stack: Stack) -> None:
    stack, photo = s3_quiet_stack, jpeg()
    with stack.client() as client:
        job_id = submit(client, photo).json()["job_id"]
        assert stack.s3 is not None
        assert stack.s3.read(stack.s3_prefix, f"acme/{job_id}") == photo
        r = stack.redis_client()
        assert r.get(keys.LEGACY.job_image(job_id)) == f"acme/{job_id}".encode()
        assert r.hget(keys.LEGACY.job_status(job_id), "upload") == f"acme/{job_id}".encode()
        assert client.delete(f"/jobs/{job_id}").status_code == 200
    assert not stack.upload_kept(job_id)


def test_submit_while_s3_is_away_is_503_with_retry_after_and_makes_nothing(s3_quiet_stack: Stack) -> None:
    stack, r = s3_quiet_stack, s3_quiet_stack.redis_client()
    assert stack.s3 is not None
    queued = r.xlen(keys.LEGACY.queue("normal"))
    records = len(r.keys("job:*:status"))
    stack.s3.stop()
    try:
        with stack.client() as client:
            refused = submit(client, jpeg())
    finally:
        stack.s3.start()
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "SERVICE_UNAVAILABLE"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (r.xlen(keys.LEGACY.queue("normal")), len(r.keys("job:*:status"))) == (queued, records)
    with stack.client() as client:
        accepted = submit(client, jpeg())
        assert accepted.status_code == 200, accepted.text
        assert client.delete(f"/jobs/{accepted.json()['job_id']}").status_code == 200


def test_a_stack_on_a_file_store_classifies_and_leaves_the_directory_empty(
    triton_server: LocalTriton, webhook_ca: WebhookCA, tmp_path: Path
) -> None:
    root = tmp_path / "shared"
    env = {"OBJECT_STORE_URL": f"file://{root}"}
    with running_stack(triton_server, webhook_ca, with_dispatcher=True, **env) as stack, stack.client() as client:
        job_id = submit(client, jpeg()).json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
        assert client.get(f"/result/{job_id}").json()["predictions"]
        deadline = time.monotonic() + 60
        while stored(root):  # deleted right after the step that completed the job
            assert time.monotonic() < deadline, stored(root)
            time.sleep(0.05)


# -- presigned direct uploads (the store's side) ---------------------------------------------------------------


@pytest.fixture
def s3_uploads(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> tuple[Uploads, str]:
    """The store's uploads on moto's S3 under a prefix of this test's own, and the prefix."""
    prefix = f"direct-{uuid.uuid4().hex[:8]}"
    for name, value in s3.env(prefix).items():
        monkeypatch.setenv(name, value)
    found = connect_uploads(ObjectStoreSettings(object_store_url=f"s3://{s3.bucket}/{prefix}"))
    assert found is not None
    return found, prefix


def put(reservation: Reservation, body: bytes) -> None:
    answer = httpx.request(reservation.method, reservation.url, content=body, headers=reservation.headers)
    assert answer.status_code == 200, answer.text


async def test_a_presigned_put_becomes_a_job_read_and_deleted_like_any_upload(
    redis: Redis, s3: S3Server, s3_uploads: tuple[Uploads, str]
) -> None:
    uploads, prefix = s3_uploads
    direct, photo = DirectUploads(redis, uploads, ttl_s=900, max_bytes=1 << 20), jpeg()
    reservation = await direct.reserve("acme")
    assert (reservation.method, reservation.max_bytes) == ("PUT", 1 << 20)
    put(reservation, photo)
    claimed = await direct.claim("acme", reservation.upload_id)
    assert (claimed.path, claimed.size) == (f"acme/{reservation.upload_id}", len(photo))
    assert claimed.head == photo[: len(claimed.head)] and 0 < len(claimed.head) <= HEAD_BYTES
    job = NewJob(reservation.upload_id, "acme", b"", {"format": "JPEG"}, Priority.HIGH, "latest", upload=claimed.path)
    await JobStore(redis, uploads=uploads).create([job])
    assert await redis.get(keys.LEGACY.job_image(job.job_id)) == claimed.path.encode()
    transitions = JobTransitions(redis, uploads)
    [held] = await taken_jobs(redis, transitions)  # only jobs whose upload was read come back
    assert held.job.upload == claimed.path
    await transitions.complete([held])
    assert s3.keys(prefix) == []


async def test_an_upload_id_is_single_use_and_its_tenants_own(redis: Redis, s3_uploads: tuple[Uploads, str]) -> None:
    uploads, _prefix = s3_uploads
    direct = DirectUploads(redis, uploads, ttl_s=900, max_bytes=1 << 20)
    reservation = await direct.reserve("acme")
    put(reservation, jpeg())
    with pytest.raises(UploadNotFoundError):
        await direct.claim("globex", reservation.upload_id)
    with pytest.raises(UploadNotFoundError):
        await direct.claim("acme", str(uuid.uuid4()))
    await direct.claim("acme", reservation.upload_id)
    with pytest.raises(JobConflictError):
        await direct.claim("acme", reservation.upload_id)


async def test_a_claim_refused_for_its_object_can_be_made_again(redis: Redis, s3_uploads: tuple[Uploads, str]) -> None:
    uploads, _prefix = s3_uploads
    direct = DirectUploads(redis, uploads, ttl_s=900, max_bytes=1000)
    reservation = await direct.reserve("acme")
    with pytest.raises(BadRequestError, match="Nothing was uploaded"):
        await direct.claim("acme", reservation.upload_id)
    put(reservation, b"x" * 1001)
    with pytest.raises(ImageValidationError, match="exceeds limit of 1000 bytes"):
        await direct.claim("acme", reservation.upload_id)
    put(reservation, b"x" * 1000)
    assert (await direct.claim("acme", reservation.upload_id)).size == 1000


async def test_the_sweep_keeps_a_reserved_upload_until_its_reservation_ends(
    redis: Redis, s3: S3Server, s3_uploads: tuple[Uploads, str]
) -> None:
    uploads, prefix = s3_uploads
    direct = DirectUploads(redis, uploads, ttl_s=900, max_bytes=1 << 20)
    reservation = await direct.reserve("acme")
    put(reservation, jpeg())
    assert await uploads.sweep(redis, older_than_s=-60) == 0  # every object counts as old here
    await redis.delete(keys.LEGACY.direct_upload(reservation.upload_id))  # the reservation expired unused
    assert await uploads.sweep(redis, older_than_s=-60) == 1
    assert s3.keys(prefix) == []


async def test_a_file_store_signs_no_url_and_says_so(redis: Redis, uploads: Uploads) -> None:
    with pytest.raises(BadRequestError, match="need an S3, GCS or Azure"):
        await DirectUploads(redis, uploads, ttl_s=900, max_bytes=1 << 20).reserve("acme")


async def test_a_dispatcher_without_the_object_store_leaves_such_jobs_waiting(redis: Redis, uploads: Uploads) -> None:
    job = new_job()
    await JobStore(redis, uploads=uploads).create([job])
    consumer = QueueConsumer(redis, "test")
    await consumer.ensure_groups()
    entries = (await consumer.read({Priority.HIGH: 10}))[Priority.HIGH]
    with pytest.raises(StoreUnavailable, match="no OBJECT_STORE_URL"):
        await JobTransitions(redis).take(entries)  # never the path taken for an image


# -- presigned direct uploads through the API -------------------------------------------------------------------


def reserve_and_put(client: httpx.Client, body: bytes) -> str:
    reservation = client.post("/uploads")
    assert reservation.status_code == 200, reservation.text
    answer = reservation.json()
    assert set(answer) == {"upload_id", "url", "method", "headers", "expires_at", "max_bytes"}
    put(Reservation(answer["upload_id"], answer["url"], answer["expires_at"], answer["max_bytes"]), body)
    return str(answer["upload_id"])


def test_a_direct_upload_is_classified_by_its_id_from_json_a_form_or_the_query(s3_stack: Stack) -> None:
    stack, photo = s3_stack, jpeg()
    with stack.client() as client:
        by_json = reserve_and_put(client, photo)
        by_form = reserve_and_put(client, photo)
        by_query = reserve_and_put(client, photo)
        answers = [
            client.post("/classify", json={"upload_id": by_json, "priority": "high", "metadata": {"order": 7}}),
            client.post("/classify", data={"upload_id": by_form}, files={"unused": ("", b"")}),
            client.post("/classify", params={"upload_id": by_query}),
        ]
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
        assert [a.json()["job_id"] for a in answers] == [by_json, by_form, by_query]
        for upload_id in (by_json, by_form, by_query):
            assert wait_done(client, upload_id)["status"] == "completed"
            assert client.get(f"/result/{upload_id}").json()["predictions"][0]["class_id"] == 285
        assert client.get(f"/status/{by_json}", params={"include_metadata": "true"}).json()["metadata"] == {"order": 7}
    for upload_id in (by_json, by_form, by_query):
        stack.wait_upload_deleted(upload_id)


def test_a_batch_of_direct_uploads_makes_one_job_per_upload_in_order(s3_stack: Stack) -> None:
    with s3_stack.client() as client:
        ids = [reserve_and_put(client, jpeg()) for _ in range(2)]
        answer = client.post("/classify/batch", json={"upload_ids": ids})
        assert answer.status_code == 200, answer.text
        assert [job["job_id"] for job in answer.json()["jobs"]] == ids
        assert [wait_done(client, job_id)["status"] for job_id in ids] == ["completed", "completed"]


def test_an_upload_id_is_refused_when_reused_foreign_empty_or_not_an_image(s3_quiet_stack: Stack) -> None:
    stack = s3_quiet_stack
    with stack.client() as client, stack.client(key=OTHER_TENANT_KEY) as other:
        used = reserve_and_put(client, jpeg())
        first = client.post("/classify", json={"upload_id": used}, headers={"Idempotency-Key": "direct-1"})
        replay = client.post("/classify", json={"upload_id": used}, headers={"Idempotency-Key": "direct-1"})
        again = client.post("/classify", json={"upload_id": used})
        foreign = other.post("/classify", json={"upload_id": reserve_and_put(client, jpeg())})
        empty = client.post("/classify", json={"upload_id": client.post("/uploads").json()["upload_id"]})
        text = client.post("/classify", json={"upload_id": reserve_and_put(client, b"just some text, no image")})
        malformed = client.post("/classify", json={"upload_id": "../../etc/passwd"})
        both = client.post("/classify", data={"upload_id": used}, files={"file": ("x.jpg", jpeg())})
        assert client.delete(f"/jobs/{used}").status_code == 200
    assert first.status_code == 200 and first.json()["job_id"] == used
    assert (replay.status_code, replay.headers.get("Idempotent-Replayed")) == (200, "true")
    assert (again.status_code, again.json()["error"]) == (409, "CONFLICT")
    assert foreign.status_code == 404, foreign.text
    assert empty.status_code == 400 and "Nothing was uploaded" in empty.json()["detail"]
    assert (text.status_code, text.json()["error"]) == (400, "INVALID_IMAGE")
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["field"] == "upload_id"
    assert both.status_code == 422


def test_without_an_object_store_direct_uploads_say_what_they_need(stack: Stack) -> None:
    with stack.client() as client:
        reserve = client.post("/uploads")
        submit_by_id = client.post("/classify", json={"upload_id": str(uuid.uuid4())})
    assert reserve.status_code == 400 and "OBJECT_STORE_URL" in reserve.json()["detail"]
    assert submit_by_id.status_code == 400 and "OBJECT_STORE_URL" in submit_by_id.json()["detail"]


async def test_an_object_replaced_by_a_larger_one_after_its_submit_is_not_read(tmp_path: Path) -> None:
    uploads = connect_uploads(ObjectStoreSettings(object_store_url=f"file://{tmp_path}", max_upload_size=1000))
    assert uploads is not None
    await uploads.put([("acme/small", b"x" * 1000), ("acme/large", b"x" * 1001)])
    assert await uploads.get(["acme/small", "acme/large"]) == [b"x" * 1000, b""]


# -- health ------------------------------------------------------------------------------------------------------


def object_store_health(client: httpx.Client, want: str, timeout_s: float = 60) -> dict[str, Any]:
    """``/health`` once its object-store entry starts with ``want`` (the probe's answer is remembered a few s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = client.get("/health").json()
        if body["services"].get("object_store", "").startswith(want):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_health_reports_the_object_store_and_degrades_while_s3_is_away(s3_quiet_stack: Stack, stack: Stack) -> None:
    s3 = s3_quiet_stack.s3
    assert s3 is not None
    with s3_quiet_stack.client(key=None) as client:
        assert object_store_health(client, "healthy")["services"]["object_store"] == "healthy"
        s3.stop()
        try:
            away = object_store_health(client, "unhealthy")
        finally:
            s3.start()
        assert away["status"] in ("degraded", "unhealthy"), away  # degraded, or worse for its own reasons
        assert away["services"]["redis"] == "healthy"
        readyz = httpx.get(s3_quiet_stack.base_url.removesuffix("/api/v1") + "/readyz")
        assert readyz.status_code == 200  # status, results and cancels still work: stay in service
        object_store_health(client, "healthy")
    with stack.client(key=None) as client:  # uploads in Redis: no object store to report
        assert "object_store" not in client.get("/health").json()["services"]


async def test_the_store_probe_asks_once_per_interval_and_bounds_its_wait(tmp_path: Path) -> None:
    found = connect_uploads(ObjectStoreSettings(object_store_url=f"file://{tmp_path}"))
    assert found is not None
    now = [0.0]
    probe = StoreProbe(found, timeout_s=0.5, ttl_s=5, clock=lambda: now[0])
    assert await probe.problem() is None
    away = S3Store("b", endpoint=f"http://127.0.0.1:{free_port()}", client_options={"allow_http": True},
                   skip_signature=True)  # fmt: skip
    found.store = away  # nothing listens there
    now[0] = 4.9
    assert await probe.problem() is None  # remembered: no new request within the interval
    now[0] = 5.0
    assert await probe.problem() == "no answer within 0.5 s"  # obstore's retries cut short by the bound
