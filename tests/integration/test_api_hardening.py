"""What a hostile client tries against a real `aic api`: oversized request lines and headers (HTTP and WebSocket
handshakes), forged X-Forwarded-For, guessing keys; and the audit trail of the admin role."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import ADMIN_KEY, API_KEY, Stack
from stack import Service

pytestmark = pytest.mark.integration

WS_HEADERS = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
)


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[tuple[Service, int]]:
    with stack.extra_api() as (service, root):
        yield service, int(root.rsplit(":", 1)[1])


def exchange(port: int, request: bytes) -> tuple[bytes, float, bool]:
    """Send raw bytes; the answer, how long it took, and whether the server closed the connection after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(2)
        started = time.monotonic()
        sock.sendall(request)
        answer = b""
        closed = False
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                answer += chunk
        except TimeoutError:
            pass
        return answer, time.monotonic() - started, closed


def headers(count: int, size: int = 1) -> bytes:
    return b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * size) for i in range(count))


WS_PATH = b"GET /api/v1/status/x/ws HTTP/1.1\r\nHost: x\r\n"
LIVEZ = b"GET /livez HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("label", "request_bytes", "status"),
    [
        ("websocket, 10 KB path", b"GET /api/v1/status/" + b"a" * 10_000 + b"/ws HTTP/1.1\r\n" + WS_HEADERS, 414),
        ("websocket, 10 KB header", WS_PATH + b"X-Big: " + b"b" * 10_000 + b"\r\n" + WS_HEADERS, 431),
        ("websocket, 150 headers", WS_PATH + headers(150) + WS_HEADERS, 431),
        ("http, 64 KB of headers", LIVEZ + headers(16, 4000), 431),
        ("http, 200 headers", LIVEZ + headers(200), 431),
        ("http, 9 KB request line", b"GET /livez?q=" + b"q" * 9000 + b" HTTP/1.1\r\nHost: x\r\n", 414),
    ],
)
def test_oversized_requests_and_handshakes_are_refused_at_once(
    api: tuple[Service, int], label: str, request_bytes: bytes, status: int
) -> None:
    _, port = api
    answer, took, closed = exchange(port, request_bytes + b"\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), (label, answer[:200])
    assert b'"error":"HTTP_ERROR"' in body and b'"request_id"' in body, label
    assert took < 1.0 and closed, (label, took, closed)


def test_requests_within_the_bounds_are_served(api: tuple[Service, int]) -> None:
    _, port = api
    fine = b"GET /livez HTTP/1.1\r\nHost: x\r\n" + headers(90, 150) + b"Connection: close\r\n\r\n"
    answer, _, _ = exchange(port, fine)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


# -- the client IP ---------------------------------------------------------------------------------------------

LIMITED = {"RATE_LIMIT_PER_MINUTE": "1", "RATE_LIMIT_BURST": "3", "AUTH_FAILURE_PER_MINUTE": "0"}


def own_keys(count: int) -> tuple[list[str], str]:
    """Keys of these tests' own (their buckets in the shared Redis are no other test's), and API_KEYS for them."""
    keys = [f"proxy{i}-key-0123456789abcdef" for i in range(count)]
    return keys, ",".join(f"proxy{i}:{key}" for i, key in enumerate(keys))


def as_client(root: str, key: str, peer: str, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"X-API-Key": key} | ({"X-Forwarded-For": forwarded_for} if forwarded_for else {})
    with httpx.Client(transport=httpx.HTTPTransport(local_address=peer), timeout=30) as client:
        return client.get(f"{root}/api/v1/models", headers=headers)


def test_a_forged_x_forwarded_for_does_not_escape_the_per_ip_limit(stack: Stack) -> None:
    keys, api_keys = own_keys(6)  # a fresh key per request: only the IP bucket can refuse
    with stack.extra_api(API_KEYS=api_keys, **LIMITED) as (_, root):
        codes = [as_client(root, keys[i], "127.0.0.21", f"198.51.100.{i}").status_code for i in range(6)]
    assert codes == [200, 200, 200, 429, 429, 429], codes


def test_behind_a_trusted_proxy_the_limit_counts_the_real_client(stack: Stack) -> None:
    keys, api_keys = own_keys(20)
    with stack.extra_api(FORWARDED_ALLOW_IPS="127.0.0.22", API_KEYS=api_keys, **LIMITED) as (_, root):
        clients = [as_client(root, keys[i], "127.0.0.22", f"203.0.113.{i}").status_code for i in range(6)]
        one_client = [as_client(root, keys[6 + i], "127.0.0.22", "203.0.113.77").status_code for i in range(4)]
        untrusted = [as_client(root, keys[10 + i], "127.0.0.23", f"203.0.113.{90 + i}").status_code for i in range(4)]
    assert clients == [200] * 6, "six real clients behind one proxy, each within its own bucket"
    assert one_client == [200, 200, 200, 429], "one real client is limited whatever key it rotates through"
    assert untrusted == [200, 200, 200, 429], "a peer that is not the proxy is counted as itself"


# -- guessing keys -----------------------------------------------------------------------------------------------


def test_failed_authentication_is_throttled_per_ip(stack: Stack) -> None:
    with stack.extra_api(RATE_LIMIT_PER_MINUTE="0", AUTH_FAILURE_BURST="3", AUTH_FAILURE_PER_MINUTE="1") as (_, root):
        guesses = [as_client(root, f"guess-{i:016d}", "127.0.0.31") for i in range(4)]
        right_key_now = as_client(root, API_KEY, "127.0.0.31")
        elsewhere = as_client(root, API_KEY, "127.0.0.32")
    assert [r.status_code for r in guesses] == [401, 401, 401, 429]
    assert guesses[-1].json()["error"] == "RATE_LIMITED" and int(guesses[-1].headers["retry-after"]) >= 1
    assert right_key_now.status_code == 429, "a locked-out address is answered 429 whatever it sends"
    assert elsewhere.status_code == 200


# -- the admin role ---------------------------------------------------------------------------------------------


def test_every_admin_action_is_logged_with_the_acting_key_id(stack: Stack) -> None:
    with stack.client(ADMIN_KEY) as admin:
        assert admin.get("/admin/queues").status_code == 200
        assert admin.get("/admin/dead-letters", params={"limit": 5}).status_code == 200
    key_id = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()[:16]
    deadline = time.monotonic() + 10
    while "/admin/dead-letters" not in stack.api.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = stack.api.output()
    assert f"admin action GET /api/v1/admin/queues by key {key_id} (tenant ops)" in log
    assert f"admin action GET /api/v1/admin/dead-letters by key {key_id} (tenant ops)" in log
    assert ADMIN_KEY not in log
