"""Structured logs (aic.core.logs): line shapes, context fields, trace ids, redaction, LOG_FORMAT, task isolation."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aic import cli
from aic.core import logs
from aic.core.settings import ApiSettings, RedisSettings, SettingsError, WebhookSettings
from aic.core.webhooks import new_secret
from aic.http import tokens
from aic.http.auth import ApiKeyMiddleware, FailureThrottle, KeyRing
from aic.http.middleware import RequestIdMiddleware
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.testing import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

log = logging.getLogger("aic.test")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KEY_A = "aaaaaaaaaaaaaaaa-key-one"
KEY_B = "bbbbbbbbbbbbbbbb-key-two"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def root_logger() -> Iterator[None]:
    """Each test's configure() replaces the root handlers (pytest's own too): put them back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    token = logs.bind()
    yield
    logs.reset(token)
    logging.captureWarnings(False)  # cli._logging() turns it on
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def configured(fmt: str = "json", level: str = "DEBUG", secrets: tuple[str, ...] = ()) -> io.StringIO:
    stream = io.StringIO()
    logs.configure(level, fmt, stream=stream, secrets=secrets)
    return stream


# -- shapes --------------------------------------------------------------------------------------------------------


def test_a_json_line_has_time_level_logger_message_in_that_order() -> None:
    stream = configured("json")
    before = time.time()
    log.info("hello %s", "world")
    (line,) = json_lines(stream)
    assert list(line) == ["time", "level", "logger", "message"]
    assert line["level"] == "INFO" and line["logger"] == "aic.test" and line["message"] == "hello world"
    assert TIME.match(line["time"]), line["time"]
    assert line["time"][:19] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(before)))  # UTC, not local


def test_a_json_line_carries_the_formatted_exception() -> None:
    stream = configured("json")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    (line,) = json_lines(stream)
    assert line["message"] == "it failed"
    assert line["exception"].startswith("Traceback (most recent call last)")
    assert line["exception"].endswith("ValueError: boom")
    assert line["level"] == "ERROR"


def test_a_console_line_is_readable() -> None:
    stream = configured("console")
    with logs.bound(job_id="j-1"):
        log.warning("queue %s is full", "high")
        log.info("plain")
    first, second = stream.getvalue().splitlines()
    stamp, rest = first.split(" ", 1)
    assert TIME.match(stamp)
    assert rest == "WARNING aic.test  queue high is full  job_id=j-1"
    assert second.split(" ", 1)[1] == "INFO  aic.test  plain  job_id=j-1"


def test_the_level_filters_before_anything_is_formatted() -> None:
    class Costly:
        def __str__(self) -> str:
            raise AssertionError("formatted although filtered out")

    stream = configured("json", level="warning")
    log.info("not shown %s", Costly())
    log.debug("not shown %s", Costly())
    log.warning("shown")
    assert [line["message"] for line in json_lines(stream)] == ["shown"]
    stream = configured("json", level="debug")
    log.debug("shown at debug")
    assert [line["message"] for line in json_lines(stream)] == ["shown at debug"]


# -- context -------------------------------------------------------------------------------------------------------


def test_bound_fields_and_extra_appear_and_extra_wins() -> None:
    stream = configured("json")
    with logs.bound(request_id="r-1", tenant="acme"):
        log.info("one")
        with logs.bound(job_id="j-1", tenant=None):  # None: the tenant stays
            log.info("two")
            log.info("three", extra={"job_id": "j-2"})
        log.info("four")
    log.info("five")
    one, two, three, four, five = json_lines(stream)
    assert list(one) == ["time", "level", "logger", "message", "request_id", "tenant"]
    assert (two["request_id"], two["job_id"], two["tenant"]) == ("r-1", "j-1", "acme")
    assert three["job_id"] == "j-2"
    assert "job_id" not in four and four["tenant"] == "acme"
    assert not {"request_id", "job_id", "tenant"} & set(five)


def test_nested_bound_restores_the_previous_values_even_after_bind_inside() -> None:
    with logs.bound(request_id="outer"):
        with logs.bound(request_id="inner"):
            logs.bind(tenant="acme")
            assert logs.current() == {"request_id": "inner", "tenant": "acme"}
        assert logs.current() == {"request_id": "outer"}
    assert logs.current() == {}


async def test_two_tasks_never_see_each_others_fields() -> None:
    stream = configured("json")
    both_bound = asyncio.Barrier(2)

    async def request(rid: str, tenant: str) -> dict[str, str]:
        logs.bind(request_id=rid)
        await both_bound.wait()
        logs.bind(tenant=tenant)
        await asyncio.sleep(0)
        log.info("handled %s", rid)
        return dict(logs.current())

    first, second = await asyncio.gather(request("r-1", "acme"), request("r-2", "globex"))
    assert first == {"request_id": "r-1", "tenant": "acme"}
    assert second == {"request_id": "r-2", "tenant": "globex"}
    assert logs.current() == {}  # nothing came back to the caller's context
    lines = {line["message"]: line for line in json_lines(stream)}
    assert (lines["handled r-1"]["request_id"], lines["handled r-1"]["tenant"]) == ("r-1", "acme")
    assert (lines["handled r-2"]["request_id"], lines["handled r-2"]["tenant"]) == ("r-2", "globex")


# -- trace ids -----------------------------------------------------------------------------------------------------


def test_lines_inside_a_span_carry_its_trace_and_span_ids() -> None:
    stream = configured("json")
    tracer = TracerProvider().get_tracer("test")  # a local provider: the global one stays as it is
    with tracer.start_as_current_span("job") as span:
        log.info("inside")
    log.info("outside")
    inside, outside = json_lines(stream)
    found = span.get_span_context()
    assert inside["trace_id"] == format(found.trace_id, "032x")
    assert inside["span_id"] == format(found.span_id, "016x")
    assert "trace_id" not in outside and "span_id" not in outside


def test_trace_ids_follow_the_context_fields_in_console_lines_too() -> None:
    stream = configured("console")
    span = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    with trace.use_span(span), logs.bound(job_id="j-1"):
        log.info("step")
    assert stream.getvalue().rstrip("\n").endswith(f"step  job_id=j-1 trace_id={0xABC:032x} span_id={0xDEF:016x}")


# -- redaction -----------------------------------------------------------------------------------------------------


def settings_secrets() -> list[str]:
    return logs.settings_secrets(
        ApiSettings(api_keys=f"acme:{KEY_A}:admin, globex:{KEY_B}", secret_key="jwt-signing-secret-1"),
        RedisSettings(redis_url="redis://default:url%2Fpass@redis:6379/0", redis_password="redis-password-1"),
        WebhookSettings(webhook_secrets_key="sealing-key-now", webhook_secrets_key_previous="sealing-key-before"),
    )


@pytest.mark.parametrize(
    "secret",
    [KEY_A, KEY_B, "jwt-signing-secret-1", "redis-password-1", "url%2Fpass", "url/pass", "sealing-key-now"],
)
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_configured_secrets_are_masked(secret: str, fmt: str) -> None:
    stream = configured(fmt, secrets=tuple(settings_secrets()))
    log.info("connecting with %s", secret)
    out = stream.getvalue()
    assert secret not in out and "[REDACTED]" in out


def test_the_settings_secrets_are_the_values_only() -> None:
    found = set(settings_secrets())
    assert {KEY_A, KEY_B, "redis-password-1", "url%2Fpass", "url/pass", "sealing-key-before"} <= found
    assert not {"acme", "globex", "admin", f"{KEY_A}:admin", "default"} & found


_JWT = tokens.issue("s" * 32, "kid-0123456789ab", "acme", 60)
_WHSEC = new_secret()


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (f"token {_JWT} issued", _JWT, "token [REDACTED] issued"),
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678", "Authorization: Bearer [REDACTED]"),
        (f"secret rotated to {_WHSEC}", _WHSEC[6:], "secret rotated to [REDACTED]"),
        ("X-API-Key: plain-key-9999", "plain-key-9999", "X-API-Key: [REDACTED]"),
        ("headers {'x-api-key': 'dict-key-9999'}", "dict-key-9999", "headers {'x-api-key': '[REDACTED]'}"),
        ("redis://user:hunter2hunter2@cache:6379 down", "hunter2hunter2", "redis://user:[REDACTED]@cache:6379 down"),
    ],
)
def test_credential_shapes_are_masked_without_being_configured(text: str, secret: str, kept: str) -> None:
    stream = configured("json")
    log.warning(text)
    (line,) = json_lines(stream)
    assert secret not in stream.getvalue()
    assert line["message"] == kept


def test_ordinary_text_is_left_alone() -> None:
    text = "GET http://api:8080/api/v1/jobs answered 200; the bearer of bad news; eyJ is not a token"
    assert logs.Redactor([])(text) == text


def test_secrets_in_tracebacks_and_context_are_masked() -> None:
    stream = configured("json", secrets=(KEY_A,))
    try:
        raise RuntimeError(f"auth with {KEY_A} failed")
    except RuntimeError:
        log.exception("failed", extra={"tenant": f"t-{KEY_A}"})
    assert KEY_A not in stream.getvalue()
    (line,) = json_lines(stream)
    assert line["exception"].endswith("RuntimeError: auth with [REDACTED] failed")
    assert line["tenant"] == "t-[REDACTED]"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_bytes_arguments_are_never_rendered(fmt: str) -> None:
    stream = configured(fmt)
    image = b"\xff\xd8\xff\xe0JFIF-secret-pixels" * 10  # 220 bytes
    log.info("got %s and %r", image, bytearray(b"abc"))
    log.info("view %s", memoryview(image))
    log.info("%(image)s", {"image": image})
    log.info(image)
    out = stream.getvalue()
    assert "JFIF" not in out and "abc" not in out and "\\xff" not in out
    assert "got <220 bytes> and <3 bytes>" in out  # %r as %s
    assert out.count("<220 bytes>") == 4


def test_an_unformattable_message_does_not_print_its_arguments() -> None:
    stream = configured("json")
    log.info("%d images", b"raw-pixels")
    (line,) = json_lines(stream)
    assert "raw-pixels" not in stream.getvalue()
    assert line["message"].startswith("%d images [arguments not formatted")


# -- LOG_FORMAT, LOG_LEVEL and the command ---------------------------------------------------------------------------


def test_log_format_default_is_console_on_a_terminal_else_json() -> None:
    tty = Tty()
    logs.configure("INFO", "", stream=tty)
    log.info("to a terminal")
    assert TIME.match(tty.getvalue().split(" ", 1)[0]) and not tty.getvalue().startswith("{")
    pipe = configured("")
    log.info("to a pipe")
    assert json_lines(pipe)[0]["message"] == "to a pipe"
    assert logs.log_format(" JSON ", Tty()) == "json"


@pytest.mark.parametrize(("fmt", "level"), [("xml", "INFO"), ("json", "LOUD")])
def test_a_bad_format_or_level_is_a_settings_error_that_changes_nothing(fmt: str, level: str) -> None:
    before = logging.getLogger().handlers[:]
    with pytest.raises(SettingsError, match="LOG_FORMAT" if fmt == "xml" else "LOG_LEVEL") as info:
        logs.configure(level, fmt, stream=io.StringIO())
    assert repr(fmt if fmt == "xml" else level) in str(info.value)
    assert logging.getLogger().handlers == before


def test_configure_replaces_the_earlier_handler() -> None:
    first = configured("json")
    second = configured("json")
    log.info("once")
    assert first.getvalue() == "" and len(json_lines(second)) == 1
    assert len(logging.getLogger().handlers) == 1


def test_the_command_exits_2_on_a_bad_log_format(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: Any) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("LOG_FORMAT", "yaml")
    with pytest.raises(SystemExit) as info:
        cli.main(["api"])
    assert info.value.code == 2
    assert "aic: LOG_FORMAT must be 'json' or 'console'" in capsys.readouterr().err


def test_the_command_redacts_the_secrets_of_its_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "debug",
        "API_KEYS": f"acme:{KEY_A}",
        "SECRET_KEY": "cli-signing-secret",
        "REDIS_URL": "redis://:cli-redis-pass@redis:6379",
        "WEBHOOK_SECRETS_KEY_PREVIOUS": "cli-sealing-old",
    }.items():
        monkeypatch.setenv(name, value)
    cli._logging()
    assert logging.getLogger().level == logging.DEBUG
    log.debug("%s %s %s %s", KEY_A, "cli-signing-secret", "cli-redis-pass", "cli-sealing-old")
    (line,) = [json.loads(text) for text in capsys.readouterr().err.splitlines()]
    assert line["message"] == " ".join(["[REDACTED]"] * 4)


# -- the HTTP request's fields ---------------------------------------------------------------------------------------


async def test_request_id_middleware_binds_for_the_request_and_resets_after() -> None:
    seen: dict[str, str] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        logs.bind(tenant="acme")  # as ApiKeyMiddleware does
        seen.update(logs.current())

    async def nothing(*_: Any) -> None:
        return None

    scope: Any = {"type": "http", "headers": [(b"x-request-id", b"req-123")], "state": {}}
    await RequestIdMiddleware().handle(scope, nothing, nothing, app)
    assert seen == {"request_id": "req-123", "tenant": "acme"}
    assert logs.current() == {}


class _NoLimits:
    enabled = False


def test_a_request_s_lines_carry_its_request_id_and_tenant() -> None:
    stream = configured("json")

    @get("/who", sync_to_thread=False)
    def who() -> dict[str, str]:
        log.info("handling")
        return dict(logs.current())

    state = {
        "key_ring": KeyRing.parse(f"acme:{KEY_A}"),
        "api_key_header": "X-API-Key",
        "secret_key": "s" * 32,
        "auth_throttle": FailureThrottle(_NoLimits()),  # type: ignore[arg-type]
    }
    app = Litestar(
        route_handlers=[who],
        state=State(state),
        middleware=[RequestIdMiddleware(), DefineMiddleware(ApiKeyMiddleware)],
        logging_config=None,  # Litestar's default would replace the root logger's handler with its own
    )
    with TestClient(app) as client:
        answer = client.get("/who", headers={"X-API-Key": KEY_A, "X-Request-ID": "req-7"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"request_id": "req-7", "tenant": "acme"}
    (line,) = [line for line in json_lines(stream) if line["message"] == "handling"]
    assert (line["request_id"], line["tenant"]) == ("req-7", "acme")
    assert KEY_A not in stream.getvalue()
