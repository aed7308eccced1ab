"""``POST /classify`` with the image itself as the body (options in the query string): the same job, limits and
errors as the multipart form, against the real stack."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from conftest import Stack
from helpers import jpeg, png, submit

pytestmark = pytest.mark.integration


def raw(stack: Stack, body: bytes, content_type: str = "image/jpeg", **query: str) -> dict[str, object]:
    with stack.client() as client:
        response = client.post(
            "/classify", content=body, params=query, headers={"Content-Type": content_type, "Prefer": "wait=60"}
        )
    return {"status": response.status_code, "body": response.json()}


def test_a_raw_jpeg_is_classified_with_its_query_options(stack: Stack) -> None:
    answer = raw(stack, jpeg(), priority="high", metadata='{"order": "A-17"}', model_version="latest")
    assert answer["status"] == 200, answer
    body = answer["body"]
    assert isinstance(body, dict) and body["status"] == "completed"
    assert body["result"]["predictions"][0]["class_name"] == "Egyptian cat"
    assert body["result"]["image_metadata"]["format"] == "JPEG"
    with stack.client() as client:
        status = client.get(f"/status/{body['job_id']}", params={"include_metadata": "true"}).json()
    assert status["metadata"] == {"order": "A-17"}


def test_a_raw_png_is_accepted(stack: Stack) -> None:
    pixels = np.random.default_rng(3).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    answer = raw(stack, png(pixels), "image/png")
    assert answer["status"] == 200 and answer["body"]["result"]["image_metadata"]["size"] == [80, 64]  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b"GIF89a not an image we take", "image/jpeg", "Unsupported file type"),
        (b"", "image/webp", "Unsupported file type"),
        (jpeg(), "image/png", "Content-Type image/png does not match the image, which is JPEG"),
        (png(np.zeros((16, 16, 3), dtype=np.uint8)), "image/png", "Image too small: 16x16"),
    ],
)
def test_bad_raw_images_are_400_invalid_image(stack: Stack, body: bytes, content_type: str, detail: str) -> None:
    answer = raw(stack, body, content_type)
    assert answer["status"] == 400, answer
    error = answer["body"]
    assert isinstance(error, dict) and error["error"] == "INVALID_IMAGE" and error["request_id"]
    assert error["detail"].startswith(detail), error


def test_a_raw_body_over_the_limit_gets_the_forms_error(stack: Stack) -> None:
    too_big = jpeg() + b"\0" * (10 * 1024 * 1024)
    as_raw = raw(stack, too_big)
    with stack.client() as client:
        as_form = submit(client, too_big)
    assert as_raw["status"] == as_form.status_code == 400
    assert as_raw["body"]["error"] == as_form.json()["error"] == "INVALID_IMAGE"  # type: ignore[index]
    assert "File size exceeds limit of" in as_raw["body"]["detail"]  # type: ignore[index]


def test_query_options_are_validated_like_form_fields(stack: Stack) -> None:
    assert raw(stack, jpeg(), priority="soon")["status"] == 422
    unknown = raw(stack, jpeg(), model_version="v9")
    assert unknown["status"] == 400 and "Unknown model_version 'v9'" in unknown["body"]["detail"]  # type: ignore[index]
    with stack.client() as client:
        both = client.post("/classify", params={"priority": "low"}, files={"file": ("a.jpg", jpeg())},
                           data={"priority": "high"})  # fmt: skip
        from_query = client.post("/classify", params={"priority": "low"}, files={"file": ("a.jpg", jpeg())})
    assert both.status_code == 422 and both.json()["errors"][0]["field"] == "priority"
    assert from_query.status_code == 200


def test_the_batch_route_takes_forms_only(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/classify/batch", content=jpeg(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 400 and "multipart/form-data" in response.json()["detail"]


def test_a_raw_body_and_a_form_of_the_same_image_are_one_request_for_idempotency(stack: Stack) -> None:
    key = {"Idempotency-Key": f"raw-{uuid.uuid4()}"}
    with stack.client() as client:
        first = client.post("/classify", content=jpeg(), headers={"Content-Type": "image/jpeg", **key})
        again = submit(client, jpeg(), headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
