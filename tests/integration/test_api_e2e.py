"""The vertical slice end to end: real photos through the API, Redis, a dispatcher and Triton."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from aic.store import keys
from conftest import API_KEY, OTHER_TENANT_KEY, Stack
from helpers import EventRecorder, jpeg, submit, wait_done
from PIL import Image
from skimage import data as skdata

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("photo", "class_id", "name"),
    [(skdata.chelsea, 285, "Egyptian cat"), (skdata.coffee, 967, "espresso")],
)
def test_real_photo_is_classified_with_status_moving_forward(
    any_stack: Stack, photo: Any, class_id: int, name: str
) -> None:
    stack = any_stack
    recorder = EventRecorder(stack.redis.url)
    with stack.client() as client:
        accepted = submit(client, jpeg(photo()))
        assert accepted.status_code == 200, accepted.text
        job = accepted.json()
        assert job["status"] == "pending"
        assert set(job) >= {"job_id", "status", "created_at", "estimated_completion"}
        final = wait_done(client, job["job_id"])
        assert final["status"] == "completed", final
        assert final["progress"] == 100 and final["stage"] == "completed"
        result = client.get(f"/result/{job['job_id']}")
    events = [e for e in recorder.close() if e["job_id"] == job["job_id"]]

    assert result.status_code == 200
    body = result.json()
    assert set(body) == {"job_id", "predictions", "processing_time", "model_version", "image_metadata", "created_at"}
    assert body["job_id"] == job["job_id"]
    assert body["model_version"] == "latest"
    assert len(body["predictions"]) == 5
    top = body["predictions"][0]
    assert top["class_id"] == class_id
    assert name.lower() in top["class_name"].lower()
    confidences = [p["confidence"] for p in body["predictions"]]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert body["processing_time"] > 0
    assert body["image_metadata"]["format"] == "JPEG"

    statuses = [e["status"] for e in events]
    assert statuses[0] == "processing" and statuses[-1] == "completed"
    assert set(statuses) == {"processing", "completed"}
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and len(set(progress)) == len(progress), progress
    assert [e["stage"] for e in events] == ["initializing", "preprocessing", "inference", "completed"]
    stack.wait_upload_deleted(job["job_id"])


def test_completed_job_keeps_status_as_long_as_result(stack: Stack) -> None:
    with stack.client() as client:
        job_id = submit(client, jpeg(skdata.astronaut())).json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
    r = stack.redis_client()
    assert r.ttl(keys.LEGACY.job_status(job_id)) > keys.JOB_STATUS_TTL_S
    assert abs(r.ttl(keys.LEGACY.job_status(job_id)) - r.ttl(keys.LEGACY.job_result(job_id))) <= 2
    assert not r.exists(keys.LEGACY.job_image(job_id)), "the upload is deleted once the job is done"
    assert r.xlen(keys.LEGACY.queue("normal")) == 0 or all(
        fields[b"job_id"].decode() != job_id for _, fields in r.xrange(keys.LEGACY.queue("normal"))
    )


def test_priority_metadata_and_png_are_accepted(stack: Stack) -> None:
    buf = io.BytesIO()
    Image.fromarray(skdata.chelsea()).convert("P").save(buf, format="PNG")
    with stack.client() as client:
        accepted = client.post(
            "/classify",
            files={"file": ("cat.png", buf.getvalue(), "application/octet-stream")},
            data={"priority": "urgent", "metadata": json.dumps({"user_id": "12345"})},
        )
        assert accepted.status_code == 200, accepted.text
        job_id = accepted.json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
        with_meta = client.get(f"/status/{job_id}", params={"include_metadata": "true"}).json()
        assert with_meta["metadata"] == {"user_id": "12345"}
        assert client.get(f"/status/{job_id}").json()["metadata"] is None
        assert client.get(f"/result/{job_id}").json()["predictions"][0]["class_id"] in range(281, 286)


def test_missing_or_wrong_key_is_401_in_error_shape(stack: Stack) -> None:
    for client in (stack.client(key=None), stack.client(key="not-a-valid-key-000000")):
        with client:
            for response in (submit(client, jpeg(skdata.chelsea())), client.get(f"/status/{uuid.uuid4()}")):
                assert response.status_code == 401
                body = response.json()
                assert body["error"] == "UNAUTHORIZED"
                assert set(body) >= {"error", "detail", "timestamp", "request_id"}
                assert response.headers["x-request-id"] == body["request_id"]


def test_bearer_key_is_accepted(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        assert client.get(f"/status/{uuid.uuid4()}").status_code == 404


def test_health_is_open_and_reports_dependencies(stack: Stack) -> None:
    response = httpx.get(f"{stack.base_url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy", body
    assert body["services"]["redis"] == "healthy"
    assert body["services"]["dispatchers"].startswith("healthy (1 ")
    assert set(body) == {"status", "timestamp", "services", "version", "uptime"}


def test_unknown_job_is_404(stack: Stack) -> None:
    with stack.client() as client:
        for path in ("status", "result"):
            response = client.get(f"/{path}/{uuid.uuid4()}")
            assert response.status_code == 404
            assert "Job not found" in response.json()["detail"]
            assert response.json()["error"] == "JOB_NOT_FOUND"


def test_another_tenants_job_answers_like_an_unknown_one(stack: Stack) -> None:
    with stack.client() as owner, stack.client(key=OTHER_TENANT_KEY) as other:
        job_id = submit(owner, jpeg(skdata.chelsea())).json()["job_id"]
        for path in ("status", "result"):
            response = other.get(f"/{path}/{job_id}")
            assert response.status_code == 404
            assert response.json()["detail"] == f"Job not found: {job_id}"


def test_result_before_completion_is_409(quiet_stack: Stack) -> None:
    with quiet_stack.client() as client:  # no dispatcher reads this stack's queue: the job stays pending
        job_id = submit(client, jpeg(skdata.coffee())).json()["job_id"]
        early = client.get(f"/result/{job_id}")
    assert early.status_code == 409, early.text
    assert early.json()["detail"] == "Job not completed. Current status: pending"
    assert early.json()["error"] == "CONFLICT"
    with quiet_stack.own_dispatcher(), quiet_stack.client() as client:
        assert wait_done(client, job_id)["status"] == "completed"
        assert client.get(f"/result/{job_id}").status_code == 200


def test_text_file_is_400_unsupported_type(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/classify", files={"file": ("test.txt", b"not an image", "text/plain")})
    assert response.status_code == 400
    assert "Unsupported file type" in response.json()["detail"]
    assert response.json()["error"] == "INVALID_IMAGE"


def test_text_file_named_like_a_jpeg_is_still_refused(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/classify", files={"file": ("cat.jpg", b"GIF89a not really", "image/jpeg")})
    assert response.status_code == 400
    assert "Unsupported file type" in response.json()["detail"]


def test_11_mb_upload_is_400_exceeds_limit(stack: Stack) -> None:
    large = b"\xff\xd8\xff" + b"\0" * (11 * 1024 * 1024)
    with stack.client() as client:
        response = client.post("/classify", files={"file": ("large.jpg", large, "image/jpeg")})
    assert response.status_code == 400
    assert "exceeds limit" in response.json()["detail"]


def test_file_just_over_the_limit_is_refused_too(stack: Stack) -> None:
    near = b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024 - 2)  # 10 MiB + 1 byte: fits the body allowance
    with stack.client() as client:
        response = client.post("/classify", files={"file": ("near.jpg", near, "image/jpeg")})
    assert response.status_code == 400
    assert "exceeds limit" in response.json()["detail"]


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"priority": "whenever"}, "priority"),
        ({"metadata": "[1, 2]"}, "metadata"),
        ({"metadata": json.dumps({"k": "x" * 2000})}, "metadata"),
        ({"callback_url": "http://example.com/hook"}, "callback_url"),
    ],
)
def test_bad_form_fields_are_422_with_field_errors(stack: Stack, form: dict[str, str], field: str) -> None:
    with stack.client() as client:
        response = submit(client, jpeg(skdata.chelsea()), **form)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "VALIDATION_ERROR"
    assert body["errors"][0]["field"] == field


def test_unknown_model_version_is_400(stack: Stack) -> None:
    with stack.client() as client:
        response = submit(client, jpeg(skdata.chelsea()), model_version="v9.9")
    assert response.status_code == 400
    assert "Unknown model_version" in response.json()["detail"]


def test_missing_file_is_a_client_error(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/classify", data={"priority": "low"}, files={"other": ("x", b"y")})
    assert response.status_code in (400, 422)
    assert response.json()["error"] in ("VALIDATION_ERROR", "INVALID_IMAGE")


def test_undecodable_image_fails_with_invalid_image(stack: Stack) -> None:
    # valid JPEG header (passes the API's checks) but the scan data is cut off
    whole = jpeg(skdata.chelsea())
    broken = whole[: len(whole) // 2]
    with stack.client() as client:
        response = submit(client, broken)
        assert response.status_code == 200, response.text
        final = wait_done(client, response.json()["job_id"])
        assert final["status"] == "failed"
        assert final["error_code"] == "INVALID_IMAGE"
        conflict = client.get(f"/result/{final['job_id']}")
        assert conflict.status_code == 409
        assert conflict.json()["detail"].startswith("Job failed:")


def test_aic_selftest_classifies_the_bundled_photo_and_says_so_by_exit_code(stack: Stack) -> None:
    """What `helm test` runs: 0 when the top-1 class is the expected one, 1 when not, 2 when unreachable."""

    def selftest(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "aic.cli", "selftest", "--url", url, *extra]
        env = {**os.environ, "AIC_API_KEY": API_KEY}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    passed = selftest(stack.base_url)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert json.loads(passed.stdout) == {"ok": True, "status_code": 200, "status": "completed", "top": "Egyptian cat"}
    wrong = selftest(stack.base_url, "--expect", "espresso")
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["top"] == "Egyptian cat"
    away = selftest("http://127.0.0.1:9/api/v1")
    assert away.returncode == 2 and json.loads(away.stdout)["ok"] is False
