"""Pure units of the API: guards, header parsing, tokens, key roles and the streaming multipart reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aic.core.errors import ForbiddenError, ImageValidationError, RequestValidationError, UnauthorizedError
from aic.core.settings import SettingsError
from aic.http import tokens, uploads
from aic.http.auth import KeyRing, Principal, Role, authenticate, presented_key, ws_credential
from aic.http.controllers.admin import require_admin
from aic.http.submissions import parse_webhook_events, prefer_wait

SECRET = "unit-secret-0123456789abcdef0123456789"


def test_admin_guard_passes_admins_only() -> None:
    def connection(user: object, method: str = "GET") -> Any:
        return SimpleNamespace(scope={"user": user, "method": method})

    require_admin(connection(Principal("ops", "k", Role.ADMIN)), None)  # type: ignore[arg-type]
    require_admin(connection(None, "OPTIONS"), None)  # type: ignore[arg-type]
    for user in (Principal("acme", "k"), None):
        with pytest.raises(ForbiddenError):
            require_admin(connection(user), None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("wait=5", 5),
        ("respond-async, wait=10", 10),
        ("wait=600", 60),
        ("wait=abc", None),
        ("handling=lenient", None),
    ],
)
def test_prefer_wait(header: str | None, expected: int | None) -> None:
    assert prefer_wait(header, 60) == expected


def test_admin_role_from_api_keys_and_colons_refused() -> None:
    ring = KeyRing.parse("acme:aaaaaaaaaaaaaaaa1,ops:bbbbbbbbbbbbbbbb2:admin")
    assert ring.principal_for("aaaaaaaaaaaaaaaa1").role is Role.CLIENT  # type: ignore[union-attr]
    assert ring.principal_for("bbbbbbbbbbbbbbbb2").role is Role.ADMIN  # type: ignore[union-attr]
    with pytest.raises(SettingsError):
        KeyRing.parse("acme:aaaa:bbbbbbbbbbbbbbbbbb")


def test_tokens_round_trip_and_follow_the_key_ring() -> None:
    ring = KeyRing.parse("acme:aaaaaaaaaaaaaaaa1")
    principal = ring.principal_for("aaaaaaaaaaaaaaaa1")
    assert principal is not None
    token = tokens.issue(SECRET, principal.key_id, "acme", 60)
    assert authenticate(ring, SECRET, token) == Principal("acme", principal.key_id, Role.CLIENT, via_token=True)
    with pytest.raises(UnauthorizedError, match="expired"):
        authenticate(ring, SECRET, tokens.issue(SECRET, principal.key_id, "acme", 60, now=0))
    with pytest.raises(UnauthorizedError):
        authenticate(KeyRing.parse(""), SECRET, token)  # the key was removed: its tokens die with it
    with pytest.raises(UnauthorizedError):
        authenticate(ring, "another-secret-0123456789abcdef0123", token)


def test_unset_secret_is_random_per_process() -> None:
    assert tokens.signing_secret("") != tokens.signing_secret("")
    assert tokens.signing_secret("given") == "given"


def test_credentials_from_headers_and_websocket_subprotocol() -> None:
    assert ws_credential("aic.v1, aic.auth.abc.def.ghi") == "abc.def.ghi"
    assert ws_credential("aic.v1") is None
    assert presented_key({"sec-websocket-protocol": "aic.v1, aic.auth.k3"}, "X-API-Key") == "k3"
    assert presented_key({"x-api-key": "k1", "sec-websocket-protocol": "aic.auth.k3"}, "X-API-Key") == "k1"


def test_webhook_events_parse() -> None:
    assert parse_webhook_events(None) == "completed,failed,cancelled"
    assert parse_webhook_events("cancelled, started") == "started,cancelled"
    with pytest.raises(RequestValidationError):
        parse_webhook_events("done")


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, filename, body in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


class CountingStream:
    """An upload arriving in 64 KiB chunks, counting how many the reader pulled."""

    def __init__(self, body: bytes) -> None:
        self.chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


def read(stream: Any, **kwargs: Any) -> uploads.Form:
    options = {"file_field": "file", "max_files": 1, "max_file_size": 1024 * 1024, **kwargs}
    return asyncio.run(uploads.read_form(stream, "multipart/form-data; boundary=b0undary", **options))


def test_oversized_file_is_refused_while_streaming() -> None:
    stream = CountingStream(multipart([("file", "big.jpg", b"\xff" * (8 * 1024 * 1024))]))
    with pytest.raises(ImageValidationError, match=r"big\.jpg: File size exceeds limit"):
        read(stream)
    assert stream.pulled <= 1024 * 1024 // 65536 + 2, "stopped right after the limit, not at the end of the body"


def test_form_fields_and_files_are_collected() -> None:
    form = read(CountingStream(multipart([("priority", None, b"high"), ("file", "a.jpg", b"\xff\xd8\xff")])))
    assert form.fields == {"priority": "high"}
    assert [(f.filename, f.content) for f in form.files] == [("a.jpg", b"\xff\xd8\xff")]


@pytest.mark.parametrize(
    "parts",
    [
        [("file", "a.jpg", b"x"), ("file", "b.jpg", b"y")],  # too many files
        [("other", "a.jpg", b"x")],  # a file under another name
        [("metadata", None, b"x" * 5000)],  # an oversized text field
    ],
)
def test_form_limits(parts: list[tuple[str, str | None, bytes]]) -> None:
    with pytest.raises(RequestValidationError):
        read(CountingStream(multipart(parts)))
