"""Pure parts of webhooks: Standard Webhooks signing, payloads, the retry schedule and SSRF address classification."""

from __future__ import annotations

import ipaddress
import json
import random
from datetime import UTC, datetime

import pytest
from aic.core import webhooks as vocabulary
from aic.core.retry import RetryPolicy, parse_retry_after
from aic.store.webhooks import TenantSecret
from aic.webhooks import message as webhooks
from aic.webhooks.sender import WebhookRefused, parse_callback, refusal_reason

# The test vector the Standard Webhooks reference libraries publish (and svix uses).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_spec_test_vector() -> None:
    assert webhooks.sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_secret_prefix_is_optional_when_signing() -> None:
    bare = SPEC_SECRET.removeprefix("whsec_")
    assert webhooks.sign(bare, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_rotation_header_carries_one_signature_per_secret_and_each_verifies() -> None:
    other = vocabulary.new_secret()
    header = webhooks.signature_header([other, SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    first, second = header.split(" ")
    assert second == SPEC_SIGNATURE
    assert first != SPEC_SIGNATURE and first.startswith("v1,")
    assert webhooks.verify(other, header, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert webhooks.verify(SPEC_SECRET, header, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert not webhooks.verify(vocabulary.new_secret(), header, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert not webhooks.verify(SPEC_SECRET, header, SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY)


def test_new_secret_is_whsec_base64_of_32_random_bytes() -> None:
    secret = vocabulary.new_secret()
    assert secret.startswith("whsec_")
    assert len(webhooks.secret_key(secret)) == 32
    assert secret != vocabulary.new_secret()


def test_previous_secret_signs_only_during_its_grace_period() -> None:
    secret = TenantSecret(current="whsec_new", previous="whsec_old", previous_until_ms=1_000)
    assert secret.signing(999) == ["whsec_new", "whsec_old"]
    assert secret.signing(1_000) == ["whsec_new"]
    assert TenantSecret("whsec_only", None, None).signing(0) == ["whsec_only"]


def test_webhook_id_is_stable_per_job_event() -> None:
    assert vocabulary.webhook_id("j1", "completed") == vocabulary.webhook_id("j1", "completed")
    assert vocabulary.webhook_id("j1", "completed") != vocabulary.webhook_id("j1", "started")


def test_completed_payload_carries_the_result_and_the_event_time() -> None:
    occurred = webhooks.entry_time("1700000000123-0")
    assert occurred == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    result = {"job_id": "j1", "predictions": [{"class_name": "Egyptian cat", "confidence": 0.8, "class_id": 285}]}
    body = json.loads(webhooks.payload("completed", occurred, {"job_id": "j1"}, result))
    assert body == {
        "type": "job.completed",
        "timestamp": "2023-11-14T22:13:20.123Z",
        "data": {"job_id": "j1", "status": "completed", "result": result},
    }


def test_failed_and_started_payloads() -> None:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    job = {"job_id": "j2", "error": "bad image", "error_code": "INVALID_IMAGE"}
    failed = json.loads(webhooks.payload("failed", at, job, None))
    assert failed["type"] == "job.failed"
    assert failed["data"] == {
        "job_id": "j2",
        "status": "failed",
        "error_message": "bad image",
        "error_code": "INVALID_IMAGE",
    }
    started = json.loads(webhooks.payload("started", at, job, None))
    assert started["type"] == "job.started" and started["data"] == {"job_id": "j2", "status": "processing"}
    assert json.loads(webhooks.payload("cancelled", at, job, None))["type"] == "job.cancelled"


POLICY = RetryPolicy(max_attempts=5, base_delay_s=10, factor=4, max_delay_s=600, jitter=0.2)


def test_backoff_schedule_grows_exponentially_and_is_capped() -> None:
    assert POLICY.schedule_s() == [10, 40, 160, 600]
    assert [POLICY.retries_left(n) for n in range(1, 6)] == [True, True, True, True, False]


def test_jitter_only_shortens_the_nominal_delay() -> None:
    rng = random.Random(7)
    delays = [POLICY.delay_s(2, rng=rng) for _ in range(200)]
    assert all(32.0 <= d <= 40.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # actually random, not a constant


def test_retry_after_wins_over_backoff_but_stays_capped() -> None:
    assert POLICY.delay_s(1, retry_after_s=3) == 3
    assert POLICY.delay_s(1, retry_after_s=86_400) == 600
    assert POLICY.delay_s(4, retry_after_s=0) == 0


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now) == 30
    assert parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("224.0.1.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "private"),  # documentation range: never a real receiver
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:a9fe:a9fe::1", "cloud metadata"),  # 6to4 around the metadata address
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 around it
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_classification(address: str, reason: str | None) -> None:
    got = refusal_reason(ipaddress.ip_address(address))
    if reason is None:
        assert got is None
    else:
        assert got is not None and got.startswith(reason), got


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_allow_loopback_lets_loopback_through(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address), allow_loopback=True) is None


@pytest.mark.parametrize("address", ["10.0.0.1", "169.254.169.254", "192.168.0.1", "fd00:ec2::254", "0.0.0.0"])
def test_allow_loopback_lets_nothing_else_through(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address), allow_loopback=True) is not None


@pytest.mark.parametrize("url", ["http://example.com/hook", "ftp://example.com/", "https:///nohost", "hook"])
def test_only_absolute_https_urls_are_accepted(url: str) -> None:
    with pytest.raises(WebhookRefused):
        parse_callback(url)
