"""Images by URL (``image_url``): the dispatcher's vetted fetch against a real HTTPS server, and submits by URL
against the real stack with uploads in Redis and in S3."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from aic.client import AsyncClient, BadRequest, Client
from aic.core.netguard import make_client
from aic.dispatch.fetch import FetchRefused, FetchUnavailable, ImageFetcher
from conftest import API_KEY, Stack, WebhookCA
from helpers import jpeg, submit, wait_done
from image_server import ImageServer


@pytest.fixture
async def fetcher(webhook_ca: WebhookCA) -> AsyncIterator[ImageFetcher]:
    found = ImageFetcher(make_client(webhook_ca.bundle, 5, 10), max_bytes=200_000, timeout_s=10, allow_loopback=True)
    try:
        yield found
    finally:
        await found.close()


def redirect(server: ImageServer, to: str) -> str:
    return server.url(f"/redirect?to={quote(to, safe='')}")


# -- the fetch -------------------------------------------------------------------------------------------------


async def test_a_fetch_returns_the_bytes_through_up_to_three_redirects(
    fetcher: ImageFetcher, image_server: ImageServer
) -> None:
    image = jpeg()
    url = image_server.serve("fetch.jpg", image)
    assert await fetcher.fetch(url) == image
    assert await fetcher.fetch(redirect(image_server, redirect(image_server, redirect(image_server, url)))) == image
    with pytest.raises(FetchRefused, match="redirected more than 3 times"):
        await fetcher.fetch(
            redirect(image_server, redirect(image_server, redirect(image_server, redirect(image_server, url))))
        )


async def test_a_4xx_is_refused_and_a_5xx_is_worth_another_try(
    fetcher: ImageFetcher, image_server: ImageServer
) -> None:
    with pytest.raises(FetchRefused, match="answered 404"):
        await fetcher.fetch(image_server.url("/missing"))
    with pytest.raises(FetchUnavailable, match="answered 503"):
        await fetcher.fetch(image_server.url(f"/down/{uuid.uuid4()}"))


async def test_a_body_over_the_limit_is_given_up_while_streaming(
    fetcher: ImageFetcher, image_server: ImageServer
) -> None:
    with pytest.raises(FetchRefused, match="exceeds the limit of 200000 bytes"):
        await fetcher.fetch(image_server.url("/big"))


async def test_a_body_is_never_decompressed(fetcher: ImageFetcher, image_server: ImageServer) -> None:
    image_server.serve("packed.jpg", jpeg())
    body = await fetcher.fetch(image_server.url("/gzip/packed.jpg"))
    assert body == gzip.compress(image_server.images["packed.jpg"])  # as sent: validated (and refused) as such


@pytest.mark.parametrize(
    ("to", "reason"),
    [
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        ("https://10.1.2.3/cat.jpg", "private address"),
        ("https://[fe80::1]/cat.jpg", "link-local address"),
        ("https://[::ffff:192.168.0.1]/cat.jpg", "private address"),
        ("http://localhost/cat.jpg", "must be https"),
    ],
)
async def test_a_redirect_is_vetted_again_before_any_connection(
    fetcher: ImageFetcher, image_server: ImageServer, to: str, reason: str
) -> None:
    with pytest.raises(FetchRefused, match=reason):
        await fetcher.fetch(redirect(image_server, to))


async def test_without_the_test_setting_loopback_is_refused_before_connecting(
    webhook_ca: WebhookCA, image_server: ImageServer
) -> None:
    strict = ImageFetcher(make_client(webhook_ca.bundle, 5, 10), max_bytes=200_000, timeout_s=10)
    try:
        url = image_server.serve("strict.jpg", jpeg())
        with pytest.raises(FetchRefused, match="image host resolves to a loopback address"):
            await strict.fetch(url)
        assert image_server.asked("/img/strict.jpg") == 0
    finally:
        await strict.close()


# -- submits by URL, against the stack -------------------------------------------------------------------------


def test_a_job_by_url_is_classified_from_a_form_json_or_the_query(any_stack: Stack, image_server: ImageServer) -> None:
    url = image_server.serve("cat.jpg", jpeg())
    with any_stack.client() as client:
        answers = [
            client.post("/classify", files={"image_url": (None, url)}),  # a multipart form's text field
            client.post("/classify", json={"image_url": url, "priority": "high"}),
            client.post("/classify", params={"image_url": url}),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            job_id = answer.json()["job_id"]
            assert wait_done(client, job_id)["status"] == "completed", client.get(f"/status/{job_id}").json()
            result = client.get(f"/result/{job_id}").json()
            assert result["predictions"]
            assert result["image_metadata"]["format"] == "JPEG"
        batch = client.post("/classify/batch", json={"image_urls": [url, url]})
        assert batch.status_code == 200, batch.text
        for job in batch.json()["jobs"]:
            assert wait_done(client, job["job_id"])["status"] == "completed"


def test_while_its_image_is_fetched_a_job_is_in_the_downloading_stage(stack: Stack, image_server: ImageServer) -> None:
    image_server.serve("held.jpg", jpeg())
    key = str(uuid.uuid4())
    gate = image_server.hold(key)
    with stack.client() as client:
        job_id = client.post("/classify", json={"image_url": image_server.url(f"/gate/{key}/held.jpg")}).json()[
            "job_id"
        ]
        deadline = time.monotonic() + 60
        while (status := client.get(f"/status/{job_id}").json())["stage"] != "downloading":
            assert time.monotonic() < deadline and status["status"] in ("pending", "processing"), status
            time.sleep(0.05)
        assert (status["status"], status["progress"]) == ("processing", 20)
        gate.set()  # the server answers now
        assert wait_done(client, job_id)["status"] == "completed"


def test_a_url_answering_404_or_not_an_image_fails_the_job_as_invalid_image(
    any_stack: Stack, image_server: ImageServer
) -> None:
    text = image_server.serve("notes.jpg", b"not an image at all" * 10)
    with any_stack.client() as client:
        gone = image_server.url("/missing")
        missing = client.post("/classify", files={"image_url": (None, gone)}).json()["job_id"]
        wrong = client.post("/classify", files={"image_url": (None, text)}).json()["job_id"]
        ended = wait_done(client, missing)
        assert (ended["status"], ended["error_code"]) == ("failed", "INVALID_IMAGE")
        assert "answered 404" in ended["error_message"]
        ended = wait_done(client, wrong)
        assert (ended["status"], ended["error_code"]) == ("failed", "INVALID_IMAGE")
        assert "Unsupported file type" in ended["error_message"]


def test_a_url_answering_503_is_retried_until_it_answers(any_stack: Stack, image_server: ImageServer) -> None:
    image_server.serve("later.jpg", jpeg())
    key = str(uuid.uuid4())
    with any_stack.client() as client:
        flaky = image_server.url(f"/flaky/{key}/later.jpg")
        job_id = client.post("/classify", files={"image_url": (None, flaky)}).json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
    assert image_server.asked(f"/flaky/{key}/") == 2


def test_the_api_checks_the_urls_form_and_idempotency_covers_it(stack: Stack, image_server: ImageServer) -> None:
    url = image_server.serve("same.jpg", jpeg())
    with stack.client() as client:
        for bad in (
            "http://example.com/cat.jpg",
            "https://",
            "https://user:pw@example.com/a.jpg",
            "https://x/" + "a" * 2048,
        ):
            answer = client.post("/classify", files={"image_url": (None, bad)})
            assert answer.status_code == 422, answer.text
            assert answer.json()["errors"][0]["field"] == "image_url"
        both = submit(client, jpeg(), image_url=url)
        assert both.status_code == 422 and "not more than one" in both.text
        key = {"Idempotency-Key": f"url-{uuid.uuid4()}"}
        first = client.post("/classify", json={"image_url": url}, headers=key)
        again = client.post("/classify", json={"image_url": url}, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.json()["job_id"] == first.json()["job_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        other = client.post("/classify", json={"image_url": url + "?v=2"}, headers=key)
        assert other.status_code == 422, other.text


# -- the client and the CLI ------------------------------------------------------------------------------------


def test_the_client_submits_by_url_and_by_a_direct_upload_it_made(s3_stack: Stack, image_server: ImageServer) -> None:
    url = image_server.serve("client.jpg", jpeg())
    with Client(s3_stack.base_url, API_KEY) as client:
        by_url = client.submit(image_url=url, priority="high")
        upload_id = client.upload(jpeg())
        by_upload = client.submit(upload_id=upload_id)
        assert by_upload.job_id == upload_id  # a direct upload's job takes its id
        batch = client.submit_batch(image_urls=[url, url])
        for job in [by_url, by_upload, *batch]:
            assert client.wait(job.job_id, timeout_s=120).status == "completed"
            assert client.result(job.job_id).predictions[0].class_name == "Egyptian cat"
        with pytest.raises(ValueError, match="exactly one"):
            client.submit(jpeg(), image_url=url)
        with pytest.raises(BadRequest):  # the API checks the URL's form
            client.submit(image_url="http://example.com/cat.jpg")


async def test_the_async_client_submits_by_url(stack: Stack, image_server: ImageServer) -> None:
    url = image_server.serve("async.jpg", jpeg())
    async with AsyncClient(stack.base_url, API_KEY) as client:
        job = await client.submit(image_url=url)
        assert (await client.wait(job.job_id, timeout_s=120)).status == "completed"


def test_aic_classify_takes_an_https_url(stack: Stack, image_server: ImageServer, tmp_path: Path) -> None:
    url = image_server.serve("cli.jpg", jpeg())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIC_")}
    env |= {"XDG_CONFIG_HOME": str(tmp_path), "AIC_URL": stack.base_url, "AIC_API_KEY": API_KEY}
    done = subprocess.run(
        [sys.executable, "-m", "aic.cli", "classify", url], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    [line] = [json.loads(text) for text in done.stdout.splitlines() if text.strip()]
    assert (line["file"], line["status"]) == (url, "completed")
    assert line["predictions"][0]["class_name"] == "Egyptian cat"


class Recording(httpx.HTTPTransport):
    """The default transport, keeping the method, path and status of every exchange the client had with the API."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []
        self.upload_ids: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.sent.append(f"{request.method} {request.url.path.removeprefix('/api/v1')} {response.status_code}")
        if request.url.path.endswith("/uploads") and response.status_code == 200:
            response.read()
            self.upload_ids.append(response.json()["upload_id"])
        return response


@pytest.mark.parametrize("direct", [True, False], ids=["s3", "no-store"])
def test_a_file_over_the_threshold_goes_through_a_direct_upload_when_the_service_offers_one(
    request: pytest.FixtureRequest, direct: bool
) -> None:
    target: Stack = request.getfixturevalue("s3_stack" if direct else "stack")
    image = jpeg()
    transport = Recording()
    with Client(target.base_url, API_KEY, transport=transport, direct_upload_above=len(image) - 1) as client:
        job = client.submit(image)
        assert client.wait(job.job_id, timeout_s=120).status == "completed"
        keyed = client.submit(image, idempotency_key=str(uuid.uuid4()))  # never with a key: a retry must be the same
        assert client.wait(keyed.job_id, timeout_s=120).status == "completed"
        small = Client(target.base_url, API_KEY, transport=transport, direct_upload_above=len(image))
        with small:
            small.submit(image)  # not over the threshold
    assert [line for line in transport.sent if line.startswith("POST")] == [
        f"POST /uploads {200 if direct else 400}",
        "POST /classify 200",
        "POST /classify 200",
        "POST /classify 200",
    ]
    # with a store the job is the upload (the file went to the store, not through the API); without one the
    # service got the file itself
    assert (transport.upload_ids == [job.job_id]) is direct
