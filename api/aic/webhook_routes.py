"""HTTP routes for webhooks: the tenant's signing secret (fetch, rotate) and a job's delivery attempts."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from redis.asyncio import Redis

from aic import settings as settings_mod
from aic.auth import Principal
from aic.controllers import error_responses
from aic.jobs import JobStore
from aic.settings import WebhookSettings
from aic.timeutil import iso
from aic.webhook_store import TenantSecret, WebhookStore, now_ms


class WebhookSecretResponse(msgspec.Struct, kw_only=True):
    secret: str
    """``whsec_<base64>``: verify ``webhook-signature`` with it as the Standard Webhooks libraries do."""
    previous_valid_until: str | None = None
    """Until then webhooks also carry a signature made with the previous secret."""


class JobWebhooksResponse(msgspec.Struct, kw_only=True):
    job_id: str
    summary: dict[str, Any] | None
    """The latest delivery's state: pending, retrying, delivered, failed (gave up) or refused (unsafe URL)."""
    attempts: list[dict[str, Any]]
    """Every attempt: attempt, at, event, status_code or error, duration_ms."""


@functools.cache
def webhook_settings() -> WebhookSettings:
    return settings_mod.load(WebhookSettings)


def secret_response(secret: TenantSecret) -> WebhookSecretResponse:
    until = secret.previous_until_ms
    valid = until is not None and until > now_ms()
    return WebhookSecretResponse(
        secret=secret.current,
        previous_valid_until=iso(datetime.fromtimestamp(until / 1000, UTC)) if valid and until else None,
    )


class WebhookController(Controller):
    path = "/"
    tags = ["webhooks"]  # noqa: RUF012 - Litestar reads these as class attributes
    security = [{"ApiKey": []}, {"BearerKey": []}]  # noqa: RUF012

    @get(
        "/webhooks/secret",
        operation_id="getWebhookSecret",
        summary="The secret webhooks are signed with",
        responses=error_responses(),
    )
    async def secret(self, request: Request[Principal, Any, State], redis: Redis) -> WebhookSecretResponse:
        return secret_response(await WebhookStore(redis).secret(request.user.tenant))

    @post(
        "/webhooks/secret/rotate",
        operation_id="rotateWebhookSecret",
        status_code=200,
        summary="Replace the signing secret; the old one keeps signing alongside for a grace period",
        responses=error_responses(),
    )
    async def rotate(self, request: Request[Principal, Any, State], redis: Redis) -> WebhookSecretResponse:
        grace_s = webhook_settings().webhook_secret_grace_s
        return secret_response(await WebhookStore(redis).rotate(request.user.tenant, grace_s))

    @get(
        "/jobs/{job_id:str}/webhooks",
        operation_id="getJobWebhooks",
        summary="Webhook deliveries of a job",
        responses=error_responses(404),
    )
    async def job_webhooks(
        self,
        request: Request[Principal, Any, State],
        job_id: Annotated[str, Parameter(description="The id returned by /classify", max_length=64)],
        job_store: JobStore,
    ) -> JobWebhooksResponse:
        await job_store.get(job_id, request.user.tenant)  # another tenant's job: 404 like an unknown one
        store = WebhookStore(job_store.redis)
        return JobWebhooksResponse(
            job_id=job_id, summary=await store.summary(job_id), attempts=await store.attempts(job_id)
        )
