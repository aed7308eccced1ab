"""HTTP and WebSocket routes of the job API (seed section 4). Bodies stay thin: parsing and work live in
``submissions``, ``idempotency``, ``live`` and the job store."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, WebSocket, delete, get, post, websocket
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from redis.asyncio import Redis

from aic import idempotency, keys, live, routing, submissions
from aic.auth import WS_PROTOCOL, Principal
from aic.enums import JobStatus
from aic.errors import AppError, ForbiddenError, JobConflictError, JobNotFoundError, ServiceUnavailableError
from aic.jobs import Job, JobStore
from aic.live import EventHub
from aic.openapi_forms import BatchOperation, ClassifyOperation
from aic.schemas import (
    BatchResponse,
    ClassificationResponse,
    ClassificationResult,
    ErrorResponse,
    HealthResponse,
    JobStatusResponse,
    ModelInfo,
    ModelsResponse,
    ProbeResponse,
    TokenResponse,
)
from aic.settings import ApiSettings
from aic.timeutil import now_iso
from aic.tokens import issue

_ERROR_DESCRIPTIONS = {
    400: "Invalid image, unsupported type, oversized file, malformed body or unknown model_version",
    # 422 also covers malformed path, query and header parameters
    401: "Missing or invalid API key or token",
    403: "The caller's role may not do this",
    404: "Job not found (or owned by another tenant)",
    409: "Job not in a state that allows this",
    422: "Request validation failed (per-field errors)",
    429: "Rate limit exceeded (see Retry-After)",
    503: "A dependency is unavailable or the queue is full",
}

JobId = Annotated[str, Parameter(description="The id returned by /classify", max_length=64)]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(name="Idempotency-Key", description="Same key + same request: the same job, created once (24 h)"),
]
Prefer = Annotated[
    str | None, HeaderParameter(name="Prefer", description="wait=N (N <= 60): hold the response until the job ends")
]
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])")


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the ErrorResponse bodies a route can answer with."""
    return {
        c: ResponseSpec(ErrorResponse, description=_ERROR_DESCRIPTIONS[c], generate_examples=False)
        for c in sorted({400, 401, 422, 429, *codes})
    }


def prefer_wait(header: str | None, ceiling_s: int) -> int | None:
    """Seconds asked for by ``Prefer: wait=N`` (RFC 7240), capped; None when not asked."""
    found = _PREFER_WAIT.search(header or "")
    return min(int(found.group(1)), ceiling_s) if found else None


async def accepted(job_store: JobStore, job: Job) -> ClassificationResponse:
    result = None
    if job.status is JobStatus.COMPLETED:
        body = await job_store.result(job.job_id)
        result = msgspec.json.decode(body, type=ClassificationResult) if body else None
    return ClassificationResponse(
        job_id=job.job_id,
        status=job.status,
        created_at=job.created_at,
        estimated_completion=job.estimated_completion,
        result=result,
    )


async def submit(
    request: Request[Principal, Any, State],
    job_store: JobStore,
    hub: EventHub,
    api_settings: ApiSettings,
    idempotency_key: str | None,
    prefer: str | None,
    *,
    batch: bool,
) -> tuple[list[ClassificationResponse], dict[str, str]]:
    """Validate every file, create the jobs once (per Idempotency-Key), optionally wait for them to end."""
    tenant = request.user.tenant
    redis = job_store.redis
    submission = await submissions.read_submission(
        request.stream(), request.headers.get("content-type", ""), api_settings, redis, batch=batch
    )
    job_ids = submissions.new_job_ids(submission)
    fresh = True
    if idempotency_key is not None:
        claim = await idempotency.claim(redis, tenant, idempotency_key, submission.fingerprint(), job_ids)
        fresh, job_ids = claim.fresh, claim.job_ids
    if fresh:
        await job_store.admit(len(job_ids))  # backpressure: 503 + Retry-After above QUEUE_MAX_DEPTH
        try:
            await submissions.create_jobs(job_store, submission, job_ids, tenant, request.headers.get("traceparent"))
        except BaseException:
            if idempotency_key is not None:
                await idempotency.release(redis, tenant, idempotency_key)
            raise
    headers: dict[str, str] = {}
    wait_s = prefer_wait(prefer, api_settings.prefer_wait_max_s)
    if wait_s is not None:
        await live.wait_until_done(hub, job_store, job_ids, tenant, wait_s)
        headers["Preference-Applied"] = f"wait={wait_s}"
    if not fresh:
        headers["Idempotent-Replayed"] = "true"
    jobs = []
    for job_id in job_ids:
        try:
            jobs.append(await job_store.get(job_id, tenant))
        except JobNotFoundError:
            raise idempotency.replay_missing() from None
    return [await accepted(job_store, job) for job in jobs], headers


class JobController(Controller):
    path = "/"
    tags = ["jobs"]  # noqa: RUF012 - Litestar reads these as class attributes
    security = [{"ApiKey": []}, {"Bearer": []}]  # noqa: RUF012

    @post(
        "/classify",
        operation_id="classify",
        summary="Submit an image for classification",
        status_code=200,
        responses=error_responses(400, 409, 422, 503),
        operation_class=ClassifyOperation,
    )
    async def classify(
        self,
        request: Request[Principal, Any, State],
        job_store: JobStore,
        hub: EventHub,
        api_settings: ApiSettings,
        idempotency_key: IdempotencyKey = None,
        prefer: Prefer = None,
    ) -> Response[ClassificationResponse]:
        jobs, headers = await submit(request, job_store, hub, api_settings, idempotency_key, prefer, batch=False)
        return Response(jobs[0], headers=headers)

    @post(
        "/classify/batch",
        operation_id="classifyBatch",
        summary="Submit up to 10 images; all are validated before any job is created",
        status_code=200,
        responses=error_responses(400, 409, 422, 503),
        operation_class=BatchOperation,
    )
    async def classify_batch(
        self,
        request: Request[Principal, Any, State],
        job_store: JobStore,
        hub: EventHub,
        api_settings: ApiSettings,
        idempotency_key: IdempotencyKey = None,
        prefer: Prefer = None,
    ) -> Response[BatchResponse]:
        jobs, headers = await submit(request, job_store, hub, api_settings, idempotency_key, prefer, batch=True)
        return Response(BatchResponse(jobs=jobs), headers=headers)

    @get(
        "/status/{job_id:str}",
        operation_id="getStatus",
        summary="Current status and progress of a job",
        responses=error_responses(404),
    )
    async def status(
        self,
        request: Request[Principal, Any, State],
        job_id: JobId,
        job_store: JobStore,
        include_metadata: bool = False,
    ) -> JobStatusResponse:
        job = await job_store.get(job_id, request.user.tenant)
        metadata = await job_store.metadata(job_id) if include_metadata else None
        return msgspec.structs.replace(live.as_status(job), metadata=metadata)

    @get(
        "/status/{job_id:str}/events",
        operation_id="streamStatus",
        summary="Every status change as Server-Sent Events (event: status); ends after a terminal state",
        responses=error_responses(404),
        media_type="text/event-stream",
    )
    async def events(
        self, request: Request[Principal, Any, State], job_id: JobId, job_store: JobStore, hub: EventHub
    ) -> ServerSentEvent:
        tenant = request.user.tenant
        await job_store.get(job_id, tenant)  # 404 as JSON before the stream starts

        async def stream() -> AsyncIterator[ServerSentEventMessage]:
            async for change in live.follow(hub, job_store, job_id, tenant):
                if change is None:
                    yield ServerSentEventMessage(comment="keep-alive")
                else:
                    yield ServerSentEventMessage(data=msgspec.json.encode(change).decode(), event="status")

        return ServerSentEvent(stream(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @websocket("/status/{job_id:str}/ws")
    async def status_ws(self, socket: WebSocket[Principal, Any, State], job_id: str, job_store: JobStore) -> None:
        """Every status change as a JSON text message; closes (1000) after a terminal state, 4404 if unknown."""
        offered = socket.scope.get("subprotocols") or []
        await socket.accept(subprotocols=WS_PROTOCOL if WS_PROTOCOL in offered else None)
        hub: EventHub = socket.app.state.hub
        try:
            async for change in live.follow(hub, job_store, job_id, socket.user.tenant):
                if change is not None:
                    await socket.send_data(msgspec.json.encode(change).decode())
        except AppError as exc:
            body = ErrorResponse(error=exc.error_code, detail=exc.detail, timestamp=now_iso())
            await socket.send_data(msgspec.json.encode(body).decode())
            await socket.close(code=4000 + exc.status_code, reason=exc.detail[:120])
            return
        await socket.close(code=1000)

    @delete(
        "/jobs/{job_id:str}",
        operation_id="cancelJob",
        summary="Cancel a pending or processing job",
        status_code=200,
        responses=error_responses(404, 409),
    )
    async def cancel(
        self, request: Request[Principal, Any, State], job_id: JobId, job_store: JobStore
    ) -> JobStatusResponse:
        job = await job_store.get(job_id, request.user.tenant)
        outcome = await job_store.cancel(job)
        if outcome == "":
            raise JobNotFoundError(job_id)
        if outcome != "ok":
            raise JobConflictError(f"Job already {outcome}: only pending or processing jobs can be cancelled")
        return live.as_status(await job_store.get(job_id, request.user.tenant))

    @get(
        "/result/{job_id:str}",
        operation_id="getResult",
        summary="Predictions of a completed job",
        responses=error_responses(404, 409),
    )
    async def result(
        self,
        request: Request[Principal, Any, State],
        job_id: JobId,
        job_store: JobStore,
    ) -> ClassificationResult:
        job = await job_store.get(job_id, request.user.tenant)
        if job.status is JobStatus.FAILED:
            raise JobConflictError(f"Job failed: {job.error}")
        if job.status is not JobStatus.COMPLETED:
            raise JobConflictError(f"Job not completed. Current status: {job.status}")
        body = await job_store.result(job_id)
        if body is None:
            raise JobConflictError("Results not found")
        return msgspec.json.decode(body, type=ClassificationResult)


class AccountController(Controller):
    path = "/"
    tags = ["auth"]  # noqa: RUF012
    security = [{"ApiKey": []}, {"Bearer": []}]  # noqa: RUF012

    @post(
        "/auth/token",
        operation_id="issueToken",
        summary="Exchange an API key for a short-lived Bearer token (JWT)",
        status_code=200,
        responses=error_responses(403),
    )
    async def token(self, request: Request[Principal, Any, State], api_settings: ApiSettings) -> TokenResponse:
        principal = request.user
        if principal.via_token:
            raise ForbiddenError("Send an API key, not a token, to get a token")
        ttl_s = api_settings.access_token_expire_minutes * 60
        secret: str = request.app.state.secret_key
        return TokenResponse(
            access_token=issue(secret, principal.key_id, principal.tenant, ttl_s),
            token_type="bearer",  # noqa: S106 - the scheme's name, not a secret
            expires_in=ttl_s,
        )

    @get(
        "/models",
        operation_id="listModels",
        summary="Model versions and aliases clients may use",
        responses=error_responses(),
    )
    async def models(self, redis: Redis) -> ModelsResponse:
        by_model: dict[str, list[str]] = {}
        for alias, name in sorted((await routing.aliases(redis)).items()):
            by_model.setdefault(name, []).append(alias)
        return ModelsResponse(
            models=[ModelInfo(name=name, aliases=aliases) for name, aliases in sorted(by_model.items())],
            default="latest",
        )


_STARTED = time.monotonic()


@get(
    "/health",
    operation_id="health",
    summary="Health of the API and what it depends on",
    tags=["health"],
    exclude_from_auth=True,
)
async def health(redis: Redis, api_settings: ApiSettings) -> HealthResponse:
    services: dict[str, str] = {}
    overall = "healthy"
    try:
        await redis.ping()
        services["redis"] = "healthy"
        dispatchers = [k async for k in redis.scan_iter(match=keys.WORKER_STATUS_PATTERN, count=100)]
        if dispatchers:
            services["dispatchers"] = f"healthy ({len(dispatchers)} dispatchers)"
        else:
            services["dispatchers"] = "no active dispatchers"
            overall = "degraded"
        published = await routing.aliases(redis)
        if published:
            services["models"] = f"healthy ({', '.join(sorted(published))})"
        else:
            services["models"] = "no models published"
            overall = "degraded"
    except Exception as exc:
        services["redis"] = f"unhealthy: {type(exc).__name__}"
        overall = "unhealthy"
    return HealthResponse(
        status=overall,
        timestamp=now_iso(),
        services=services,
        version=api_settings.version,
        uptime=round(time.monotonic() - _STARTED, 3),
    )


@get("/livez", operation_id="livez", summary="Liveness probe: the process serves requests", tags=["health"],
     exclude_from_auth=True)  # fmt: skip
async def livez() -> ProbeResponse:
    return ProbeResponse(status="ok")


@get(
    "/readyz",
    operation_id="readyz",
    summary="Readiness probe: 200 when Redis answers, else 503",
    tags=["health"],
    exclude_from_auth=True,
    responses={503: ResponseSpec(ErrorResponse, description="Redis unreachable", generate_examples=False)},
)
async def readyz(redis: Redis) -> ProbeResponse:
    try:
        await redis.ping()
    except Exception:
        raise ServiceUnavailableError("Redis is unreachable") from None
    return ProbeResponse(status="ready")
