"""Operator routes (admin role only): queue depth and age per priority, dead letters, retrying a dead job."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers import BaseRouteHandler
from litestar.params import Parameter

from aic.core.errors import ForbiddenError
from aic.core.schemas import DeadLettersResponse, JobStatusResponse, QueuesResponse
from aic.http.auth import Role
from aic.http.openapi import SECURITY, error_responses
from aic.store.jobs import JobStore
from aic.store.queue import QueueStats

audit = logging.getLogger("aic.audit")


def require_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: only principals with the admin role pass (OPTIONS, which is not authenticated, says what is allowed).

    The admin role is global: it sees and retries every tenant's dead letters. Every admin action is logged with
    the acting key's id (a digest prefix, never the key).
    """
    if connection.scope.get("method") == "OPTIONS":
        return
    user = connection.scope.get("user")
    if getattr(user, "role", None) != Role.ADMIN:
        raise ForbiddenError("This route needs an admin key (API_KEYS entry 'tenant:key:admin')")
    audit.info(
        "admin action %s %s by key %s (tenant %s)",
        connection.scope.get("method"),
        connection.scope.get("path"),
        getattr(user, "key_id", "?"),
        getattr(user, "tenant", "?"),
    )


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]  # noqa: RUF012
    guards = [require_admin]  # noqa: RUF012
    security = SECURITY

    @get(
        "/queues",
        operation_id="adminQueues",
        summary="Depth and oldest age per priority",
        responses=error_responses(403),
    )
    async def queues(self, queue_stats: NamedDependency[QueueStats]) -> QueuesResponse:
        infos = await queue_stats.infos()
        return QueuesResponse(
            queues=infos,
            in_flight=sum(q.in_flight for q in infos),
            dead_letters=await queue_stats.dead_letter_count(),
        )

    @get(
        "/dead-letters",
        operation_id="adminDeadLetters",
        summary="Jobs that failed for good, newest first",
        responses=error_responses(403),
    )
    async def dead_letters(
        self,
        queue_stats: NamedDependency[QueueStats],
        limit: Annotated[int, Parameter(ge=1, le=1000, description="Most entries")] = 100,
    ) -> DeadLettersResponse:
        return DeadLettersResponse(
            dead_letters=await queue_stats.dead_letters(limit), total=await queue_stats.dead_letter_count()
        )

    @post(
        "/jobs/{job_id:str}/retry",
        operation_id="adminRetryJob",
        summary="Put a dead-lettered job back on its queue (needs its upload still stored)",
        status_code=200,
        responses=error_responses(403, 404, 409),
    )
    async def retry(
        self, job_id: Annotated[str, Parameter(max_length=64)], job_store: NamedDependency[JobStore]
    ) -> JobStatusResponse:
        await job_store.retry_dead(await job_store.get(job_id))
        return (await job_store.get(job_id)).status_response()
