"""HTTP routes for webhooks: the tenant's signing secret (fetch, rotate) and a job's delivery attempts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import Parameter

from aic.core.settings import WebhookSettings
from aic.core.timeutil import iso
from aic.http.auth import Principal
from aic.http.openapi import SECURITY, error_responses
from aic.store.jobs import JobStore
from aic.store.webhooks import TenantSecret, WebhookStore, now_ms


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
    security = SECURITY

    @get(
        "/webhooks/secret",
        operation_id="getWebhookSecret",
        summary="The secret webhooks are signed with",
        responses=error_responses(),
    )
    async def secret(
        self, request: Request[Principal, Any, State], webhook_store: NamedDependency[WebhookStore]
    ) -> WebhookSecretResponse:
        return secret_response(await webhook_store.secret(request.user.tenant))

    @post(
        "/webhooks/secret/rotate",
        operation_id="rotateWebhookSecret",
        status_code=200,
        summary="Replace the signing secret; the old one keeps signing alongside for a grace period",
        responses=error_responses(),
    )
    async def rotate(
        self,
        request: Request[Principal, Any, State],
        webhook_store: NamedDependency[WebhookStore],
        webhook_settings: NamedDependency[WebhookSettings],
    ) -> WebhookSecretResponse:
        grace_s = webhook_settings.webhook_secret_grace_s
        return secret_response(await webhook_store.rotate(request.user.tenant, grace_s))

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
        job_store: NamedDependency[JobStore],
        webhook_store: NamedDependency[WebhookStore],
    ) -> JobWebhooksResponse:
        await job_store.get(job_id, request.user.tenant)  # another tenant's job: 404 like an unknown one
        return JobWebhooksResponse(
            job_id=job_id, summary=await webhook_store.summary(job_id), attempts=await webhook_store.attempts(job_id)
        )
