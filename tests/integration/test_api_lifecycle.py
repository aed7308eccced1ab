"""The job lifecycle through the API against the real stack (API, Redis, dispatcher, Triton): the job list, erasure,
deadlines (Cancel-After), retention and usage; bad filters, cursors, durations and dates; tenant isolation."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import ADMIN_KEY, API_KEY, OTHER_TENANT_KEY, Stack
from helpers import jpeg, submit, wait_done
from skimage import data as skdata
from stack import Service
from test_webhooks_e2e import delivered
from webhook_receiver import Receiver

pytestmark = pytest.mark.integration


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def listed(client: httpx.Client, **params: Any) -> list[str]:
    """Every job id the list shows for ``params``, following cursors."""
    ids: list[str] = []
    cursor = None
    while True:
        answer = client.get("/jobs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        ids += [job["job_id"] for job in body["jobs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


def usage(client: httpx.Client, **params: str) -> dict[str, Any]:
    answer = client.get("/usage", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


# -- the list ----------------------------------------------------------------------------------------------------


def test_the_list_pages_through_the_callers_own_jobs_newest_first(stack: Stack) -> None:
    since = now_iso()
    with stack.client() as client, stack.client(OTHER_TENANT_KEY) as other:
        mine = [submit(client, jpeg(), priority=p).json()["job_id"] for p in ("urgent", "low", "urgent")]
        theirs = submit(other, jpeg()).json()["job_id"]
        for job_id in mine:
            wait_done(client, job_id)
        first = client.get("/jobs", params={"created_after": since, "limit": 2}).json()
        assert [job["job_id"] for job in first["jobs"]] == [mine[2], mine[1]]
        assert first["jobs"][0]["status"] == "completed" and first["jobs"][0]["priority"] == "urgent"
        second = client.get("/jobs", params={"created_after": since, "limit": 2, "cursor": first["next_cursor"]})
        assert [job["job_id"] for job in second.json()["jobs"]] == [mine[0]]
        assert second.json()["next_cursor"] is None
        assert listed(client, created_after=since, priority="urgent") == [mine[2], mine[0]]
        assert listed(client, created_after=since, status="completed", model_version="latest") == mine[::-1]
        assert listed(client, created_after=since, status="failed") == []
        assert listed(other, created_after=since) == [theirs]  # never another tenant's
        assert theirs not in listed(client, created_after=since)


def test_the_admin_role_lists_another_tenants_jobs_and_no_one_else_may(stack: Stack) -> None:
    since = now_iso()
    with stack.client() as client, stack.client(ADMIN_KEY) as admin, stack.client(OTHER_TENANT_KEY) as other:
        job_id = submit(client, jpeg()).json()["job_id"]
        assert listed(admin, tenant="acme", created_after=since) == [job_id]
        assert listed(admin, created_after=since) == []  # its own tenant by default
        refused = other.get("/jobs", params={"tenant": "acme"})
        assert refused.status_code == 403 and refused.json()["error"] == "FORBIDDEN"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": "0"}, 422),
        ({"limit": "101"}, 422),
        ({"limit": "many"}, 422),
        ({"status": "sleeping"}, 422),
        ({"priority": "asap"}, 422),
        ({"created_after": "2026-13-45"}, 422),
        ({"created_before": "yesterday"}, 422),
        ({"cursor": "not-a-cursor!"}, 400),
        ({"cursor": "OTk6"}, 400),
        ({"tenant": "*"}, 403),
    ],
)
def test_bad_list_parameters_are_refused_with_an_error_response(
    stack: Stack, params: dict[str, str], status: int
) -> None:
    with stack.client() as client:
        answer = client.get("/jobs", params=params)
    assert answer.status_code == status, answer.text
    assert {"error", "detail", "timestamp", "request_id"} <= set(answer.json())


# -- erasure -------------------------------------------------------------------------------------------------------


def test_purge_erases_a_finished_job_everywhere_and_only_its_owner_may(stack: Stack) -> None:
    since = now_iso()
    with stack.client() as client, stack.client(OTHER_TENANT_KEY) as other:
        job_id = submit(client, jpeg(), metadata='{"order": 1}').json()["job_id"]
        wait_done(client, job_id)
        assert other.delete(f"/jobs/{job_id}", params={"purge": "true"}).status_code == 404
        assert client.get(f"/result/{job_id}").status_code == 200  # untouched by the other tenant
        erased = client.delete(f"/jobs/{job_id}", params={"purge": "true"})
        assert (erased.status_code, erased.content) == (204, b"")
        for path in (f"/status/{job_id}", f"/result/{job_id}", f"/status/{job_id}/events"):
            gone = client.get(path)
            assert (gone.status_code, gone.json()["error"]) == (404, "JOB_NOT_FOUND"), path
        assert client.delete(f"/jobs/{job_id}").status_code == 404
        assert client.delete(f"/jobs/{job_id}", params={"purge": "true"}).status_code == 404
        assert job_id not in listed(client, created_after=since)
    with stack.redis_client() as redis:
        assert redis.keys(f"job:{{{job_id}}}:*") == []


def test_purge_cancels_a_queued_job_first(quiet_stack: Stack) -> None:
    with quiet_stack.client() as client:
        before = usage(client)["tenants"][0]["totals"]["cancelled"]
        job_id = submit(client, jpeg()).json()["job_id"]
        assert client.delete(f"/jobs/{job_id}", params={"purge": "true"}).status_code == 204
        assert client.get(f"/status/{job_id}").status_code == 404
        assert usage(client)["tenants"][0]["totals"]["cancelled"] == before + 1


def test_a_plain_delete_still_only_cancels(quiet_stack: Stack) -> None:
    with quiet_stack.client() as client:
        job_id = submit(client, jpeg()).json()["job_id"]
        cancelled = client.delete(f"/jobs/{job_id}")
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
        assert client.get(f"/status/{job_id}").json()["expires_at"] is not None


# -- deadlines and retention -------------------------------------------------------------------------------------


def test_status_shows_the_deadline_and_once_ended_when_the_job_expires(stack: Stack) -> None:
    with stack.client() as client:
        job_id = submit(client, jpeg(), deadline_s="120", retention_s="60").json()["job_id"]
        pending = client.get(f"/status/{job_id}").json()
        created = datetime.fromisoformat(pending["created_at"])
        assert datetime.fromisoformat(pending["deadline_at"]) - created == timedelta(seconds=120)
        done = wait_done(client, job_id)
    assert done["status"] == "completed"
    assert datetime.fromisoformat(done["expires_at"]) - datetime.fromisoformat(done["updated_at"]) == timedelta(
        seconds=60
    )
    with stack.redis_client() as redis:
        assert 0 < redis.ttl(f"job:{{{job_id}}}:result") <= 60


def test_cancel_after_is_the_deadline_of_a_raw_body_submit(stack: Stack) -> None:
    with stack.client() as client:
        answer = client.post(
            "/classify", content=jpeg(), headers={"Content-Type": "image/jpeg", "Cancel-After": "1h30m"}
        )
        assert answer.status_code == 200, answer.text
        status = client.get(f"/status/{answer.json()['job_id']}").json()
    deadline = datetime.fromisoformat(status["deadline_at"]) - datetime.fromisoformat(status["created_at"])
    assert deadline == timedelta(hours=1, minutes=30)


@pytest.mark.parametrize(
    ("form", "headers", "field"),
    [
        ({"deadline_s": "0"}, {}, "deadline_s"),
        ({"deadline_s": "86401"}, {}, "deadline_s"),
        ({"deadline_s": "soon"}, {}, "deadline_s"),
        ({"retention_s": "0"}, {}, "retention_s"),
        ({"retention_s": "99999999"}, {}, "retention_s"),
        ({}, {"Cancel-After": "2d"}, "Cancel-After"),
        ({}, {"Cancel-After": "25h"}, "Cancel-After"),
        ({"deadline_s": "60"}, {"Cancel-After": "90s"}, "Cancel-After"),
    ],
)
def test_bad_deadlines_and_retentions_are_refused(
    stack: Stack, form: dict[str, str], headers: dict[str, str], field: str
) -> None:
    with stack.client() as client:
        answer = submit(client, jpeg(), headers=headers, **form)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "VALIDATION_ERROR"
    assert field in str(answer.json()["errors"]) or field in answer.json()["detail"]


def test_a_queued_job_past_its_deadline_times_out_never_reaches_triton_and_its_webhook_fires_once(
    quiet_stack: Stack, webhook_receiver: Receiver
) -> None:
    with quiet_stack.client() as client:
        webhook_receiver.secrets = [client.get("/webhooks/secret").json()["secret"]]
        hook = webhook_receiver.url("/deadline")
        late = submit(client, jpeg(), headers={"Cancel-After": "1s"}, callback_url=hook).json()["job_id"]
        on_time = submit(client, jpeg(skdata.coffee())).json()["job_id"]
        deadline = datetime.fromisoformat(client.get(f"/status/{late}").json()["deadline_at"])
        while datetime.now(UTC) <= deadline:  # nothing reads the queue meanwhile: the job waits past its deadline
            time.sleep(0.1)
        dispatcher = Service("dispatcher", {**quiet_stack.env, "DEADLINE_SWEEP_INTERVAL_S": "0.2"}).start()
        try:
            timed_out = wait_done(client, late)
            done = wait_done(client, on_time)
            record = delivered(client, late)
        finally:
            dispatcher.stop()
        by_model = usage(client)["tenants"][0]["totals"]
    assert (timed_out["status"], timed_out["error_code"]) == ("failed", "TIMEOUT")
    assert (timed_out["progress"], timed_out["stage"]) == (0, None)  # never started, so never sent to Triton
    assert done["status"] == "completed"
    assert by_model["timed_out"] >= 1
    assert record["summary"]["state"] == "delivered"
    [got] = webhook_receiver.received(late)  # once
    body = json.loads(got.body)
    assert (body["type"], body["data"]["error_code"]) == ("job.failed", "TIMEOUT")


# -- usage -------------------------------------------------------------------------------------------------------


def test_usage_counts_a_tenants_jobs_bytes_and_inference_time(stack: Stack) -> None:
    image = jpeg()
    with stack.client() as client, stack.client(OTHER_TENANT_KEY) as other, stack.client(ADMIN_KEY) as admin:
        before, theirs = usage(client)["tenants"][0], usage(other)["tenants"][0]["totals"]
        job_id = submit(client, image).json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
        after = usage(client)["tenants"][0]
        by_model = usage(client, group_by="model")["tenants"][0]
        everyone = {t["tenant"] for t in usage(admin, tenant="*")["tenants"]}
        assert usage(other)["tenants"][0]["totals"] == theirs  # another tenant's job is never counted
        today = usage(client, **{"from": datetime.now(UTC).date().isoformat()})
    delta = {k: after["totals"][k] - before["totals"][k] for k in ("submitted", "completed", "image_bytes")}
    assert delta == {"submitted": 1, "completed": 1, "image_bytes": len(image)}
    assert after["totals"]["inference_ms"] > before["totals"]["inference_ms"]
    assert after["days"][-1]["date"] == datetime.now(UTC).date().isoformat()
    assert [m["model"] for m in by_model["models"]] == ["efficientnet-lite0"] and by_model["models"][0]["jobs"] >= 1
    assert {"acme", "globex"} <= everyone
    assert today["from"] == today["to"] == datetime.now(UTC).date().isoformat()


@pytest.mark.parametrize(
    ("params", "key", "status"),
    [
        ({"from": "2026-13-01"}, API_KEY, 422),
        ({"to": "last week"}, API_KEY, 422),
        ({"from": "2026-12-06", "to": "2026-12-01"}, API_KEY, 400),
        ({"from": "2024-01-01", "to": "2026-01-01"}, API_KEY, 400),
        ({"group_by": "week"}, API_KEY, 422),
        ({"tenant": "globex"}, API_KEY, 403),
        ({"tenant": "*"}, OTHER_TENANT_KEY, 403),
    ],
)
def test_bad_usage_requests_are_refused_with_an_error_response(
    stack: Stack, params: dict[str, str], key: str, status: int
) -> None:
    with stack.client(key) as client:
        answer = client.get("/usage", params=params)
    assert answer.status_code == status, answer.text
    assert {"error", "detail", "timestamp", "request_id"} <= set(answer.json())


def test_a_raw_octet_stream_body_is_classified_by_its_bytes(stack: Stack) -> None:
    with stack.client() as client:
        answer = client.post(
            "/classify?priority=high", content=jpeg(), headers={"Content-Type": "application/octet-stream"}
        )
        assert answer.status_code == 200, answer.text
        assert wait_done(client, answer.json()["job_id"])["status"] == "completed"
        refused = client.post(
            "/classify", content=b"not an image", headers={"Content-Type": "application/octet-stream"}
        )
    assert (refused.status_code, refused.json()["error"]) == (400, "INVALID_IMAGE")


def test_the_document_describes_every_new_route_and_option_with_its_errors(stack: Stack) -> None:
    doc = httpx.get(f"{stack.base_url.removesuffix('/api/v1')}/schema/openapi.json").json()
    paths = doc["paths"]
    listing, usage_route = paths["/api/v1/jobs"]["get"], paths["/api/v1/usage"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {
        "status", "priority", "model_version", "created_after", "created_before", "limit", "cursor", "tenant",
    }  # fmt: skip
    assert {p["name"] for p in usage_route["parameters"]} == {"from", "to", "group_by", "tenant"}
    for operation in (listing, usage_route):
        assert {"400", "401", "403", "422", "429"} <= set(operation["responses"])
    erase = paths["/api/v1/jobs/{job_id}"]["delete"]
    assert "purge" in {p["name"] for p in erase["parameters"]} and "204" in erase["responses"]
    classify = paths["/api/v1/classify"]["post"]
    query = {p["name"]: p for p in classify["parameters"] if p["in"] == "query"}
    assert {"deadline_s", "retention_s"} <= set(query) and "Cancel-After" in {p["name"] for p in classify["parameters"]}
    assert all("default" not in p["schema"] for p in query.values())  # a generated client sends an option once
    form = classify["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["priority"]["default"] == "normal" and form["deadline_s"]["maximum"] == 86400
    assert "application/octet-stream" in classify["requestBody"]["content"]
