"""Batch submit, cancel and upload limits against the real stack (API, Redis, dispatcher, Triton)."""

from __future__ import annotations

import time
import uuid

import pytest
from aic.store import keys
from conftest import OTHER_TENANT_KEY, Stack
from helpers import jpeg, png, submit, wait_done
from skimage import data as skdata

pytestmark = pytest.mark.integration


def test_batch_creates_one_job_per_file_in_order(stack: Stack) -> None:
    photos = [
        ("cat.jpg", jpeg(skdata.chelsea())),
        ("coffee.jpg", jpeg(skdata.coffee())),
        ("a.png", png(skdata.astronaut())),
    ]
    with stack.client() as client:
        response = client.post(
            "/classify/batch",
            files=[("files", (name, content, "application/octet-stream")) for name, content in photos],
            data={"priority": "high"},
        )
        assert response.status_code == 200, response.text
        jobs = response.json()["jobs"]
        assert len(jobs) == 3 and len({j["job_id"] for j in jobs}) == 3
        finals = [wait_done(client, j["job_id"]) for j in jobs]
        assert [f["status"] for f in finals] == ["completed"] * 3
        tops = [client.get(f"/result/{j['job_id']}").json()["predictions"][0]["class_id"] for j in jobs]
    assert tops[0] in range(281, 286)  # the cat
    assert tops[1] == 967  # the espresso: the order of the response is the order of the files


def test_batch_with_one_bad_file_names_it_and_enqueues_nothing(quiet_stack: Stack) -> None:
    stack = quiet_stack  # nothing consumes its queue, so the counts below are only this request's doing
    r = stack.redis_client()
    before = sum(r.xlen(keys.LEGACY.queue(p)) for p in ("urgent", "high", "normal", "low"))
    statuses_before = len(list(r.scan_iter(match="job:*:status", count=1000)))
    files = [
        ("files", ("good.jpg", jpeg(), "image/jpeg")),
        ("files", ("notes.txt", b"just some text", "image/jpeg")),
        ("files", ("good2.jpg", jpeg(skdata.coffee()), "image/jpeg")),
    ]
    with stack.client() as client:
        response = client.post("/classify/batch", files=files)
        after = sum(r.xlen(keys.LEGACY.queue(p)) for p in ("urgent", "high", "normal", "low"))
        statuses_after = len(list(r.scan_iter(match="job:*:status", count=1000)))
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "INVALID_IMAGE"
    assert "File 2 (notes.txt)" in body["detail"]
    assert after == before and statuses_after == statuses_before


def test_batch_of_eleven_files_is_refused(stack: Stack) -> None:
    files = [("files", (f"f{i}.jpg", jpeg(), "image/jpeg")) for i in range(11)]
    with stack.client() as client:
        response = client.post("/classify/batch", files=files)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "files"


def test_batch_file_over_the_limit_is_named(stack: Stack) -> None:
    large = b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024)
    files = [("files", ("ok.jpg", jpeg(), "image/jpeg")), ("files", ("huge.jpg", large, "image/jpeg"))]
    with stack.client() as client:
        response = client.post("/classify/batch", files=files)
    assert response.status_code == 400
    assert "huge.jpg" in response.json()["detail"] and "exceeds limit" in response.json()["detail"]


def test_cancel_a_pending_job(any_quiet_stack: Stack) -> None:
    stack = any_quiet_stack
    r = stack.redis_client()
    with stack.client() as client:
        job_id = submit(client, jpeg(), callback_url="https://example.com/hook").json()["job_id"]
        response = client.delete(f"/jobs/{job_id}")
        outbox = [f for _, f in r.xrange(keys.LEGACY.webhook_outbox()) if f[b"job_id"].decode() == job_id]
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert not r.exists(keys.LEGACY.job_image(job_id)), "the upload is dropped with the cancel"
    assert not stack.upload_kept(job_id), "its object too, before the answer"
    assert r.ttl(keys.LEGACY.job_status(job_id)) > keys.JOB_STATUS_TTL_S, "kept as long as a result would be"
    assert [f[b"event"] for f in outbox] == [b"cancelled"]
    with stack.own_dispatcher(), stack.client() as client:
        # a dispatcher takes the job's queue entry and must not process it: it only drops the entry
        deadline = time.monotonic() + 60
        while any(f[b"job_id"].decode() == job_id for _, f in r.xrange(keys.LEGACY.queue("normal"))):
            assert time.monotonic() < deadline, "the dispatcher never took the cancelled job's entry"
            time.sleep(0.05)
        assert wait_done(client, job_id)["status"] == "cancelled"
        assert client.get(f"/result/{job_id}").status_code == 409
        again = client.delete(f"/jobs/{job_id}")
    assert again.status_code == 409
    assert again.json()["error"] == "CONFLICT" and "cancelled" in again.json()["detail"]
    assert not r.exists(keys.LEGACY.job_result(job_id))


def test_cancel_a_finished_job_is_409(stack: Stack) -> None:
    with stack.client() as client:
        job_id = submit(client, jpeg()).json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
        response = client.delete(f"/jobs/{job_id}")
        assert response.status_code == 409
        assert client.get(f"/result/{job_id}").status_code == 200, "the result stays"


def test_cancel_someone_elses_or_unknown_job_is_404(quiet_stack: Stack) -> None:
    stack = quiet_stack
    with stack.client() as owner, stack.client(key=OTHER_TENANT_KEY) as other:
        job_id = submit(owner, jpeg()).json()["job_id"]
        assert other.delete(f"/jobs/{job_id}").status_code == 404
        assert other.delete(f"/jobs/{uuid.uuid4()}").status_code == 404
        assert owner.get(f"/status/{job_id}").json()["status"] == "pending"
        assert owner.delete(f"/jobs/{job_id}").status_code == 200


@pytest.mark.parametrize("events", ["started", "completed,started", "failed , cancelled"])
def test_webhook_events_are_stored_with_the_job(quiet_stack: Stack, events: str) -> None:
    stack = quiet_stack
    with stack.client() as client:
        response = submit(client, jpeg(), callback_url="https://example.com/hook", webhook_events=events)
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        stored = stack.redis_client().hget(keys.LEGACY.job_status(job_id), "webhook_events").decode()
        client.delete(f"/jobs/{job_id}")
    assert set(stored.split(",")) == {e.strip() for e in events.split(",")}


def test_default_webhook_events_and_bad_ones(quiet_stack: Stack) -> None:
    stack = quiet_stack
    with stack.client() as client:
        job_id = submit(client, jpeg(), callback_url="https://example.com/hook").json()["job_id"]
        stored = stack.redis_client().hget(keys.LEGACY.job_status(job_id), "webhook_events")
        client.delete(f"/jobs/{job_id}")
        bad = submit(client, jpeg(), webhook_events="completed,exploded")
    assert stored == b"completed,failed,cancelled"
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "webhook_events"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"content": b"not multipart at all", "headers": {"content-type": "text/plain"}}, 400),
        ({"content": b"--xx\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=xx"}}, 400),
        ({"files": {"file": ("a.jpg", b"", "image/jpeg")}}, 400),
        ({"files": {"file": ("a.jpg", jpeg(), "image/jpeg")}, "data": {"priority": "x" * 5000}}, 422),
    ],
)
def test_malformed_bodies_are_client_errors(stack: Stack, kwargs: dict[str, object], status: int) -> None:
    with stack.client() as client:
        response = client.post("/classify", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert set(response.json()) >= {"error", "detail", "timestamp", "request_id"}


def test_two_files_on_single_classify_are_refused(stack: Stack) -> None:
    files = [("file", ("a.jpg", jpeg(), "image/jpeg")), ("file", ("b.jpg", jpeg(), "image/jpeg"))]
    with stack.client() as client:
        response = client.post("/classify", files=files)
    assert response.status_code == 422
