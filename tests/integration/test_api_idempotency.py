"""Idempotency-Key and Prefer: wait on submit, against the real stack."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from aic.live.follow import INBOX_RECHECK_S
from aic.store import keys
from conftest import OTHER_TENANT_KEY, Stack
from helpers import jpeg, submit
from skimage import data as skdata

pytestmark = pytest.mark.integration


def queued(stack: Stack) -> int:
    r = stack.redis_client()
    return sum(r.xlen(keys.LEGACY.queue(p)) for p in ("urgent", "high", "normal", "low"))


def test_same_key_and_content_answers_the_same_job_once(quiet_stack: Stack) -> None:
    stack = quiet_stack  # nothing consumes its queue: the count below is this test's alone
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    with stack.client() as client:
        before = queued(stack)
        first = submit(client, jpeg(), headers=key, priority="high")
        second = submit(client, jpeg(), headers=key, priority="high")
        after = queued(stack)
        client.delete(f"/jobs/{first.json()['job_id']}")
    assert first.status_code == second.status_code == 200
    assert second.json()["job_id"] == first.json()["job_id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert after == before + 1, "one job, however often the request is retried"


def test_concurrent_retries_create_one_job(quiet_stack: Stack) -> None:
    stack = quiet_stack
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
    content = jpeg(skdata.coffee())
    with stack.client() as client:
        before = queued(stack)
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: submit(client, content, headers=key), range(4)))
        after = queued(stack)
    ok = [r for r in responses if r.status_code == 200]
    assert ok and all(r.status_code in (200, 409) for r in responses), [r.text for r in responses]
    assert len({r.json()["job_id"] for r in ok}) == 1
    assert after == before + 1


def test_same_key_with_other_content_is_422(stack: Stack) -> None:
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    with stack.client() as client:
        assert submit(client, jpeg(), headers=key).status_code == 200
        other_image = submit(client, jpeg(skdata.coffee()), headers=key)
        other_option = submit(client, jpeg(), headers=key, priority="low")
    for response in (other_image, other_option):
        assert response.status_code == 422
        body = response.json()
        assert body["error"] == "VALIDATION_ERROR"
        assert body["errors"][0]["field"] == "Idempotency-Key"
        assert "different request" in body["detail"]


def test_keys_are_per_tenant_and_kept_hashed_for_a_day(stack: Stack) -> None:
    raw = f"shared-{uuid.uuid4()}"
    with stack.client() as acme, stack.client(key=OTHER_TENANT_KEY) as globex:
        a = submit(acme, jpeg(), headers={"Idempotency-Key": raw}).json()["job_id"]
        b = submit(globex, jpeg(), headers={"Idempotency-Key": raw}).json()["job_id"]
    assert a != b
    r = stack.redis_client()
    stored = list(r.scan_iter(match="idempotency:acme:*", count=1000))
    assert stored and all(raw.encode() not in name for name in stored)
    assert all(keys.IDEMPOTENCY_TTL_S - 60 < r.ttl(name) <= keys.IDEMPOTENCY_TTL_S for name in stored)


def test_batch_idempotency(stack: Stack) -> None:
    key = {"Idempotency-Key": f"batch-{uuid.uuid4()}"}
    files = [("files", ("a.jpg", jpeg(), "image/jpeg")), ("files", ("b.jpg", jpeg(skdata.coffee()), "image/jpeg"))]
    with stack.client() as client:
        first = client.post("/classify/batch", files=files, headers=key).json()["jobs"]
        second = client.post("/classify/batch", files=files, headers=key).json()["jobs"]
    assert [j["job_id"] for j in first] == [j["job_id"] for j in second]


def test_prefer_wait_answers_with_the_finished_job(stack: Stack) -> None:
    with stack.client() as client:
        response = submit(client, jpeg(skdata.coffee()), headers={"Prefer": "wait=60"})
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=60"
    body = response.json()
    assert body["status"] == "completed"
    assert body["result"]["predictions"][0]["class_id"] == 967


def subscribes(stack: Stack) -> int:
    """SUBSCRIBE commands Redis has run since it started (its INFO commandstats)."""
    return int(stack.redis_client().info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0))


def test_prefer_wait_is_told_of_the_end_on_the_api_inbox_without_a_subscription(stack: Stack) -> None:
    with stack.client() as client:
        submit(client, jpeg(), headers={"Prefer": "wait=60"})  # the API's hub has its inbox confirmed by now
        before = subscribes(stack)
        responses = [submit(client, jpeg(skdata.coffee()), headers={"Prefer": "wait=60"}) for _ in range(3)]
        after = subscribes(stack)
    assert [r.json()["status"] for r in responses] == ["completed"] * 3
    assert after == before, "a waiting submit subscribed to its job's events instead of being told on the inbox"
    job = stack.redis_client().hgetall(keys.LEGACY.job_status(responses[0].json()["job_id"]))
    assert job[b"waiter"].startswith(b"aic:hub:"), "the job does not name the inbox of the API waiting for it"


def test_a_submit_without_prefer_wait_names_no_waiter(stack: Stack) -> None:
    with stack.client() as client:
        job_id = submit(client, jpeg()).json()["job_id"]
    assert b"waiter" not in stack.redis_client().hgetall(keys.LEGACY.job_status(job_id))


def waiting_submit(stack: Stack, pool: ThreadPoolExecutor, client: httpx.Client, wait_s: int) -> Waiting:
    """A submit with ``Prefer: wait=wait_s`` on a stack whose queue nothing consumes, once its job is queued."""
    before = queued(stack)
    started = time.monotonic()
    answer = pool.submit(submit, client, jpeg(), headers={"Prefer": f"wait={wait_s}"})
    deadline = time.monotonic() + 10
    while queued(stack) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    [(entry_id, fields)] = stack.redis_client().xrevrange(keys.LEGACY.queue("normal"), count=1)
    return Waiting(answer, fields[b"job_id"].decode(), entry_id, started)


@dataclass(frozen=True)
class Waiting:
    answer: Future[httpx.Response]
    job_id: str
    entry_id: bytes
    started: float

    def result(self) -> tuple[httpx.Response, float]:
        """The answer and the seconds from the submit to it."""
        response = self.answer.result(timeout=60)
        return response, time.monotonic() - self.started


def test_prefer_wait_ends_as_soon_as_the_job_is_cancelled(quiet_stack: Stack) -> None:
    """cancel.lua tells the waiting API too: without it the answer would come when the 20 s wait ran out."""
    with ThreadPoolExecutor(1) as pool, quiet_stack.client() as client:  # no dispatcher: pending until cancelled
        waiting = waiting_submit(quiet_stack, pool, client, 20)
        assert client.delete(f"/jobs/{waiting.job_id}").status_code == 200
        answer, elapsed = waiting.result()
    assert answer.status_code == 200 and answer.json()["job_id"] == waiting.job_id
    assert answer.json()["status"] == "cancelled"
    assert elapsed < 10, f"the wait did not end with the cancel ({elapsed:.1f} s)"


def test_prefer_wait_learns_of_an_end_nobody_told_the_inbox_within_the_recheck(quiet_stack: Stack) -> None:
    """A dispatcher of an older version (a rolling upgrade) ends jobs without telling the inbox: the waiting submit
    reads its jobs' states every INBOX_RECHECK_S, so the answer comes that much later, not when the wait runs out."""
    r = quiet_stack.redis_client()
    with ThreadPoolExecutor(1) as pool, quiet_stack.client() as client:
        waiting = waiting_submit(quiet_stack, pool, client, 30)
        r.hset(keys.LEGACY.job_status(waiting.job_id), "status", "cancelled")  # ended, with no word on any channel
        answer, elapsed = waiting.result()
    r.xdel(keys.LEGACY.queue("normal"), waiting.entry_id)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert elapsed < INBOX_RECHECK_S + 5, f"the wait ran out instead of rechecking ({elapsed:.1f} s)"


def test_prefer_wait_returns_the_current_status_when_time_is_up(quiet_stack: Stack) -> None:
    with quiet_stack.client() as client:
        response = submit(client, jpeg(), headers={"Prefer": "respond-async, wait=1"})
        client.delete(f"/jobs/{response.json()['job_id']}")
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=1"
    assert response.json()["status"] == "pending" and response.json()["result"] is None


def test_prefer_wait_is_capped_and_garbage_is_ignored(quiet_stack: Stack) -> None:
    with quiet_stack.client() as client:
        capped = submit(client, jpeg(), headers={"Prefer": "wait=0"})
        ignored = submit(client, jpeg(), headers={"Prefer": "wait=soon"})
        for r in (capped, ignored):
            client.delete(f"/jobs/{r.json()['job_id']}")
    assert capped.headers["preference-applied"] == "wait=0"
    assert ignored.status_code == 200 and "preference-applied" not in ignored.headers
