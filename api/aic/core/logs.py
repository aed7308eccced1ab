"""Structured logs for every process: one handler on the root logger writing JSON lines or readable console lines.

Each line carries the context of the request or job it belongs to: ``request_id``, ``job_id`` and ``tenant``,
bound with ``bind``/``bound`` (context variables, so one asyncio task's context never reaches another) or given
per call as ``extra={"job_id": ...}`` (which wins), and ``trace_id``/``span_id`` of the current OpenTelemetry
span. Before a line is written its text is redacted: the configured secret values (API keys, SECRET_KEY, the
Redis password, the webhook sealing keys) and anything shaped like a credential (a JWT, ``Bearer <token>``, a
webhook secret ``whsec_...``, ``X-API-Key: <key>``, the password of a ``scheme://user:password@host`` URL)
become ``[REDACTED]``; a bytes argument is shown as ``<N bytes>``, never rendered.

The work happens in the handler, so a record the level filters out costs what the standard library's check costs.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, Final, TextIO
from urllib.parse import unquote, urlsplit

import msgspec

from aic.core import telemetry
from aic.core.settings import ApiSettings, RedisSettings, SettingsError, WebhookSettings

REDACTED: Final = "[REDACTED]"
FORMATS: Final = ("json", "console")
CONTEXT_FIELDS: Final = ("request_id", "job_id", "tenant")
TRACE_FIELDS: Final = ("trace_id", "span_id")
_FIELDS: Final = CONTEXT_FIELDS + TRACE_FIELDS

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("aic_log_context", default=_EMPTY)

_CREDENTIALS: Final = re.compile(
    # a scheme or header name kept, the credential after it masked
    r"(?P<keep>(?i:\bbearer\s+)(?=[A-Za-z0-9._~+/=-]{8})|(?i:\bx-api-key\b)['\"]?\s*[:=,]\s*b?['\"]?)[^\s\"',;]+"
    r"|(?P<url>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s/@]+(?=@)"  # scheme://user:PASSWORD@host
    r"|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"  # a JWT: base64url of '{"' opens its header
    r"|\bwhsec_[A-Za-z0-9+/=_-]+"  # a webhook signing secret (aic.core.webhooks.SECRET_PREFIX)
)
_BYTES: Final = (bytes, bytearray, memoryview)


# -- context -------------------------------------------------------------------------------------------------------


def bind(
    *, request_id: str | None = None, job_id: str | None = None, tenant: str | None = None
) -> Token[Mapping[str, str]]:
    """Add fields to the current context's log fields (None: left as they are) until ``reset(token)``, or until
    a ``bound`` block around this call ends."""
    given = {"request_id": request_id, "job_id": job_id, "tenant": tenant}
    current = _context.get()
    return _context.set({**current, **{k: v for k, v in given.items() if v is not None}})


def reset(token: Token[Mapping[str, str]]) -> None:
    """Restore the log fields of before the ``bind`` that returned ``token``."""
    _context.reset(token)


@contextmanager
def bound(*, request_id: str | None = None, job_id: str | None = None, tenant: str | None = None) -> Iterator[None]:
    """``bind`` for the block; on exit the fields are those of before it, whatever was bound inside."""
    token = bind(request_id=request_id, job_id=job_id, tenant=tenant)
    try:
        yield
    finally:
        _context.reset(token)


def current() -> Mapping[str, str]:
    """The log fields bound in the current context."""
    return _context.get()


# -- redaction -----------------------------------------------------------------------------------------------------


def _mask(match: re.Match[str]) -> str:
    return (match.group("keep") or match.group("url") or "") + REDACTED


class Redactor:
    """Masks the given secret values and credential-shaped text as ``[REDACTED]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if s}, key=len, reverse=True)  # the longest first: no partial leftovers
        self._literal = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, text: str) -> str:
        if self._literal is not None:
            text = self._literal.sub(REDACTED, text)
        return _CREDENTIALS.sub(_mask, text)


def settings_secrets(
    api: ApiSettings, redis: RedisSettings | None = None, webhooks: WebhookSettings | None = None
) -> list[str]:
    """The secret values in the settings: the keys of ``API_KEYS``, ``SECRET_KEY``, the Redis password (setting
    and URL) and ``WEBHOOK_SECRETS_KEY``/``_PREVIOUS``."""
    found = [api.secret_key]
    for item in filter(None, (part.strip() for part in api.api_keys.split(","))):
        _, sep, key = item.partition(":")  # tenant:key or tenant:key:role
        found.append(key.rsplit(":", 1)[0] if ":" in key else key if sep else item)
    if redis is not None:
        found.append(redis.redis_password or "")
        try:
            password = urlsplit(redis.redis_url).password or ""
        except ValueError:
            password = ""
        found += [password, unquote(password)]
    if webhooks is not None:
        found += [webhooks.webhook_secrets_key, webhooks.webhook_secrets_key_previous, webhooks.secret_key]
    return [value for value in found if value]


# -- formatting ----------------------------------------------------------------------------------------------------


class _Size(str):
    """What a bytes argument is shown as, by ``%s`` and ``%r`` alike."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def _shown(value: object) -> object:
    if isinstance(value, memoryview):
        return _Size(f"<{value.nbytes} bytes>")
    return _Size(f"<{len(value)} bytes>") if isinstance(value, (bytes, bytearray)) else value


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()`` with bytes arguments shown as their size; never raises."""
    msg: Any = _shown(record.msg)
    args: Any = record.args
    if not args:
        return str(msg)
    if isinstance(args, tuple):
        if any(isinstance(a, _BYTES) for a in args):
            args = tuple(_shown(a) for a in args)
    elif isinstance(args, Mapping) and any(isinstance(a, _BYTES) for a in args.values()):
        args = {k: _shown(v) for k, v in args.items()}
    try:
        text: str = str(msg) % args
    except Exception as exc:  # the standard library's handleError would print the raw arguments
        return f"{msg} [arguments not formatted: {type(exc).__name__}]"
    return text


def _time(record: logging.LogRecord) -> str:
    """RFC 3339, UTC, milliseconds: ``2026-12-01T16:40:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> Iterator[tuple[str, str]]:
    values = record.__dict__
    for key in _FIELDS:
        value = values.get(key)
        if value is not None:
            yield key, str(_shown(value))


class ContextFilter(logging.Filter):
    """Puts the bound fields and the current span's ids on each record the handler writes, where the call's
    ``extra`` did not give them."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = record.__dict__
        for key, value in _context.get().items():
            if values.get(key) is None:
                values[key] = value
        if values.get("trace_id") is None:
            ids = telemetry.ids()
            if ids is not None:
                values["trace_id"], values["span_id"] = ids
        return True


class _Formatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def _exception(self, record: logging.LogRecord) -> str | None:
        if record.exc_info and record.exc_info[1] is not None:
            if record.exc_text is None:
                record.exc_text = self.formatException(record.exc_info)
            return record.exc_text
        return record.exc_text or None


class JsonFormatter(_Formatter):
    """One JSON object per line: time, level, logger, message, the context fields, exception."""

    _encode = msgspec.json.Encoder().encode

    def format(self, record: logging.LogRecord) -> str:
        redact = self.redact
        line = {"time": _time(record), "level": record.levelname, "logger": record.name}
        line["message"] = redact(_message(record))
        for key, value in _fields(record):
            line[key] = redact(value)
        exception = self._exception(record)
        if exception:
            line["exception"] = redact(exception)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return self._encode(line).decode()


def _quoted(value: str) -> str:
    return msgspec.json.encode(value).decode() if not value or any(c.isspace() or c == '"' for c in value) else value


class ConsoleFormatter(_Formatter):
    """``2026-12-01T16:40:00.123Z INFO  aic.dispatcher  message  job_id=... trace_id=...``"""

    def format(self, record: logging.LogRecord) -> str:
        redact = self.redact
        line = f"{_time(record)} {record.levelname:<5} {record.name}  {redact(_message(record))}"
        fields = " ".join(f"{key}={_quoted(redact(value))}" for key, value in _fields(record))
        if fields:
            line += "  " + fields
        exception = self._exception(record)
        if exception:
            line += "\n" + redact(exception)
        if record.stack_info:
            line += "\n" + redact(self.formatStack(record.stack_info))
        return line


class _Handler(logging.StreamHandler[TextIO]):
    """The handler ``configure`` installs (and replaces on the next call)."""


def log_format(fmt: str, stream: TextIO) -> str:
    """``json`` or ``console``; empty: console when ``stream`` is a terminal, else JSON. SettingsError otherwise."""
    name = fmt.strip().lower()
    if not name:
        isatty = getattr(stream, "isatty", None)
        return "console" if isatty is not None and isatty() else "json"
    if name not in FORMATS:
        raise SettingsError(f"LOG_FORMAT must be 'json' or 'console' (empty: console on a terminal), got {fmt!r}")
    return name


def log_level(level: str) -> int:
    """The level named by ``LOG_LEVEL`` (any case), or SettingsError."""
    found = logging.getLevelNamesMapping().get(level.strip().upper())
    if found is None:
        raise SettingsError(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {level!r}")
    return found


def configure(level: str, fmt: str, *, stream: TextIO | None = None, secrets: Iterable[str] = ()) -> logging.Handler:
    """One handler on the root logger, replacing any earlier one: ``fmt`` lines (``json``, ``console`` or empty:
    see ``log_format``) to ``stream`` (default: stderr) at ``level`` and above, context added, ``secrets``
    redacted. Raises SettingsError for a level or format it does not know, changing nothing then."""
    stream = sys.stderr if stream is None else stream
    number, name = log_level(level), log_format(fmt, stream)
    redact = Redactor(secrets)
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter(redact) if name == "json" else ConsoleFormatter(redact))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        if isinstance(old, _Handler):
            old.close()
    root.addHandler(handler)
    root.setLevel(number)
    return handler
