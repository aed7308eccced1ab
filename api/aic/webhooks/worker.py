"""The webhook delivery worker: an extra asyncio task inside every dispatcher process.

Two loops share one ``httpx.AsyncClient``. Intake reads ``webhooks:outbox`` through the consumer group
``webhooks`` (reclaiming entries a crashed reader left behind) and moves each into the schedule. Delivery claims
due entries from the schedule, sends them with at most ``webhook_concurrency`` in flight and records every attempt
on the job. Inference never waits for it: it only awaits network and Redis I/O on the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from aic.core import telemetry
from aic.core.errors import StoreError
from aic.core.retry import parse_retry_after
from aic.core.settings import WebhookSettings
from aic.core.timeutil import now_iso
from aic.core.webhooks import EVENT_TYPES
from aic.store.sealing import SealedSecretError
from aic.store.webhooks import Delivery, WebhookStore, now_ms
from aic.webhooks import metrics
from aic.webhooks.message import entry_time, payload, retry_policy, signature_header
from aic.webhooks.sender import Outcome, WebhookRefused, make_client, send

log = logging.getLogger("aic.webhooks")

USER_AGENT = "aic-webhooks/1"
_tracer = telemetry.tracer("aic.webhooks")


class WebhookWorker:
    def __init__(self, store: WebhookStore, settings: WebhookSettings, consumer: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.policy = retry_policy(settings)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # a claimed delivery is someone else's again once a whole attempt could have run twice over
        self.lease_ms = int(settings.webhook_timeout_s * 2000) + 5000
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self.client = make_client(
            settings.webhook_ca_bundle, settings.webhook_connect_timeout_s, settings.webhook_timeout_s
        )

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Deliver until ``stop()``; attempts in flight finish, then the HTTP client is closed."""
        try:
            await self._ensure_group()
            with telemetry.untraced():  # polls are no job's; each attempt runs in its job's trace (_delivery_span)
                await asyncio.gather(self._intake(), self._deliver())
        finally:
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=self.settings.webhook_timeout_s + 1)
            await self.client.aclose()

    async def _ensure_group(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.store.ensure_outbox_group()
                return
            except StoreError as exc:
                log.warning("webhooks: redis unavailable, retrying: %s", exc)
                await self._sleep(1.0)

    # -- intake: outbox stream -> schedule -------------------------------------------------------------

    async def _intake(self) -> None:
        while not self._stopping.is_set():
            try:
                moved = await self._intake_once()
            except StoreError as exc:
                log.warning("webhook intake: redis unavailable, retrying: %s", exc)
                await self._sleep(1.0)
                continue
            if moved:
                self._wake.set()

    async def _intake_once(self) -> int:
        entries = await self.store.read_outbox(
            self.consumer, self.settings.webhook_claim_idle_ms, count=50, block_ms=1000
        )
        for entry in entries:
            await self.store.enqueue(entry.entry_id, entry.job_id, entry.event, entry.names)
        return len(entries)

    # -- delivery: schedule -> receiver ----------------------------------------------------------------

    async def _deliver(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before claiming, so new work arriving meanwhile is not slept through
            free = self.settings.webhook_concurrency - len(self._in_flight)
            try:
                due = await self.store.claim_due(free, self.lease_ms) if free > 0 else []
            except StoreError as exc:
                log.warning("webhook schedule: redis unavailable, retrying: %s", exc)
                due = []
            for delivery in due:
                task = asyncio.create_task(self._attempt(delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._done)
            if free <= 0 or len(due) < free:  # wait for new work, a finished attempt or the next poll
                await self._sleep(self.settings.webhook_poll_ms / 1000, wake=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()

    async def _sleep(self, seconds: float, *, wake: bool = False) -> None:
        event = self._wake if wake else self._stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            await self._attempt_once(delivery)
        except SealedSecretError as exc:  # this process's WEBHOOK_SECRETS_KEY differs: kept and retried later
            log.error("webhook %s: cannot sign: %s", delivery.webhook_id, exc)
        except Exception:
            # the claim's lease runs out and the delivery is tried again; nothing is lost
            log.exception("webhook %s: attempt could not be completed", delivery.webhook_id)

    async def _attempt_once(self, delivery: Delivery) -> None:
        job = await self.store.job(delivery.job_id, delivery.names)
        number = delivery.attempts + 1
        if not job.get("callback_url"):  # the job expired meanwhile: nothing to send, nowhere to record
            await self.store.record(delivery, {"attempt": number}, {}, None)
            return
        if delivery.event not in EVENT_TYPES:  # a writer newer than this reader: drop it, never loop on it
            error = f"unknown event {delivery.event!r}"
            dropped = {"event": delivery.event, "webhook_id": delivery.webhook_id, "state": "failed"}
            await self.store.record(delivery, {"attempt": number, "at": now_iso(), "error": error}, dropped, None)
            return
        with _delivery_span(delivery, job, number) as span:
            await self._attempt_traced(delivery, job, number, span)

    async def _attempt_traced(self, delivery: Delivery, job: dict[str, str], number: int, span: Span | None) -> None:
        result = await self.store.result(delivery.job_id, delivery.names) if delivery.event == "completed" else None
        body = payload(delivery.event, entry_time(delivery.entry_id), job, result)
        outcome, refused = await self._send(delivery, job, body)
        metrics.DELIVERY_DURATION.observe(outcome.duration_ms / 1000, telemetry.exemplar())
        attempt: dict[str, Any] = {
            "attempt": number,
            "at": now_iso(),
            "event": delivery.event,
            "duration_ms": outcome.duration_ms,
        }
        attempt.update({"status_code": outcome.status_code} if outcome.status_code else {"error": outcome.error})
        summary: dict[str, Any] = {
            "event": delivery.event,
            "webhook_id": delivery.webhook_id,
            "attempts": number,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
        }
        next_due: int | None = None
        if outcome.delivered:
            summary["state"] = "delivered"
        elif refused:
            summary["state"] = "refused"
        elif self.policy.retries_left(number):
            delay_s = self.policy.delay_s(number, parse_retry_after(outcome.retry_after))
            next_due = now_ms() + int(delay_s * 1000)
            summary.update(state="retrying", next_attempt_at=now_iso(delay_s))
        else:
            summary["state"] = "failed"
        metrics.DELIVERIES.labels(delivery.event, summary["state"]).inc()
        if span is not None:
            if outcome.status_code:
                span.set_attribute("http.response.status_code", outcome.status_code)
            span.set_attribute("aic.webhook.outcome", summary["state"])
            if not outcome.delivered:
                span.set_status(StatusCode.ERROR, str(outcome.error or outcome.status_code))
        await self._record_sent(delivery, attempt, summary, next_due)
        # the URL stays out of the log: it may carry the receiver's own token
        context = {"job_id": delivery.job_id, "tenant": job.get("tenant", "")}
        log.info(
            "webhook %s attempt %d: %s",
            delivery.webhook_id,
            number,
            outcome.status_code or outcome.error,
            extra=context,
        )

    async def _record_sent(
        self, delivery: Delivery, attempt: dict[str, Any], summary: dict[str, Any], next_due: int | None
    ) -> None:
        """Record an attempt that reached the receiver, waiting out a short Redis outage: a record given up would
        let the lease run out and the receiver get the webhook again. Given up after half the lease."""
        deadline = time.monotonic() + self.lease_ms / 2000
        while True:
            try:
                await self.store.record(delivery, attempt, summary, next_due)
                return
            except StoreError as exc:
                if time.monotonic() + 0.5 > deadline:
                    raise
                log.warning("webhook %s: recording the attempt, redis unavailable: %s", delivery.webhook_id, exc)
                await asyncio.sleep(0.5)

    async def _send(self, delivery: Delivery, job: dict[str, str], body: bytes) -> tuple[Outcome, bool]:
        secret = await self.store.secret(job.get("tenant", ""))
        timestamp = int(time.time())
        signing = secret.signing(now_ms())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(signing, delivery.webhook_id, timestamp, body),
        }
        try:
            outcome = await send(
                self.client,
                job["callback_url"],
                body,
                headers,
                allow_loopback=self.settings.webhook_allow_loopback,
                total_timeout_s=self.settings.webhook_timeout_s,
                max_response_bytes=self.settings.webhook_max_response_bytes,
            )
        except WebhookRefused as exc:
            return Outcome(None, f"refused: {exc}", 0), True
        return outcome, False


@contextlib.contextmanager
def _delivery_span(delivery: Delivery, job: dict[str, str], number: int) -> Iterator[Span | None]:
    """A CLIENT span per attempt in the job's trace (its stored context), current for the attempt's calls. The
    URL's path and query stay out of it: they may carry the receiver's own token."""
    if not telemetry.enabled():
        yield None
        return
    target = urlsplit(job.get("callback_url", ""))
    span = _tracer.start_span(
        "POST",
        context=telemetry.context_of(job.get("traceparent"), job.get("tracestate")),
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": "POST",
            "server.address": target.hostname or "",
            "server.port": target.port or (443 if target.scheme == "https" else 80),
            "url.scheme": target.scheme,
            "aic.job_id": delivery.job_id,
            "aic.webhook.id": delivery.webhook_id,
            "aic.webhook.event": delivery.event,
            "aic.webhook.attempt": number,
        },
    )
    with telemetry.active(span), trace.use_span(span, end_on_exit=True):
        yield span
