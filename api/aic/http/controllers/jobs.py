"""Job routes (seed section 4): submit one image or a batch, status, live progress (SSE, WebSocket), result,
cancel; and the tenant's job list and erasure (``GET /jobs``, ``DELETE /jobs/{id}?purge=true``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, WebSocket, delete, get, post, websocket
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter, Parameter, PathParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from aic.core.enums import JobStatus
from aic.core.errors import JobConflictError
from aic.core.schemas import (
    BatchResponse,
    ClassificationResponse,
    ClassificationResult,
    JobListResponse,
    JobStatusResponse,
)
from aic.http.auth import WS_PROTOCOL, Principal
from aic.http.lifecycle import JobQuery, parse_job_query, tenant_scope
from aic.http.middleware import websocket_errors
from aic.http.observe import JOBS_CANCELLED
from aic.http.openapi import SECURITY, error_responses
from aic.http.submissions import FORM_FIELDS, UPLOAD_FIELDS, URL_FIELDS, Submitter
from aic.live.follow import follow
from aic.live.hub import EventHub
from aic.store.jobs import JobStore
from aic.store.listing import JobIndex

JobId = Annotated[str, Parameter(description="The id returned by /classify", max_length=64)]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(name="Idempotency-Key", description="Same key + same request: the same job, created once (24 h)"),
]
IncludeMetadata = Annotated[bool, QueryParameter(description="Also return the metadata the job was submitted with")]
Prefer = Annotated[
    str | None, HeaderParameter(name="Prefer", description="wait=N (N <= 60): hold the response until the job ends")
]
CancelAfter = Annotated[
    str | None,
    HeaderParameter(
        name="Cancel-After",
        description="A deadline as a duration (30s, 5m, 1h30m): not finished by then, the job fails with TIMEOUT. "
        "The same as deadline_s (send one, or both equal).",
        max_length=32,
    ),
]
Purge = Annotated[
    bool,
    QueryParameter(
        description="Erase the job: cancel it if still live, then delete its status, result, metadata, upload and "
        "webhook log; 204, and 404 everywhere afterwards"
    ),
]


class JobController(Controller):
    path = "/"
    tags = ["jobs"]  # noqa: RUF012 - Litestar reads these as class attributes
    security = SECURITY

    @post(
        "/classify",
        operation_id="classify",
        summary="Submit an image for classification",
        status_code=200,
        responses=error_responses(400, 404, 409, 422, 503),
    )
    async def classify(
        self,
        request: Request[Principal, Any, State],
        submitter: NamedDependency[Submitter],
        idempotency_key: IdempotencyKey = None,
        prefer: Prefer = None,
        cancel_after: CancelAfter = None,
    ) -> Response[ClassificationResponse]:
        jobs, headers = await _submit(request, submitter, idempotency_key, prefer, cancel_after, batch=False)
        return Response(jobs[0], headers=headers)

    @post(
        "/classify/batch",
        operation_id="classifyBatch",
        summary="Submit up to BATCH_MAX_FILES images; all are validated before any job is created",
        status_code=200,
        responses=error_responses(400, 404, 409, 422, 503),
    )
    async def classify_batch(
        self,
        request: Request[Principal, Any, State],
        submitter: NamedDependency[Submitter],
        idempotency_key: IdempotencyKey = None,
        prefer: Prefer = None,
        cancel_after: CancelAfter = None,
    ) -> Response[BatchResponse]:
        jobs, headers = await _submit(request, submitter, idempotency_key, prefer, cancel_after, batch=True)
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
        job_store: NamedDependency[JobStore],
        include_metadata: IncludeMetadata = False,
    ) -> JobStatusResponse:
        job = await job_store.get(job_id, request.user.tenant)
        metadata = await job_store.metadata(job_id) if include_metadata else None
        return msgspec.structs.replace(job.status_response(), metadata=metadata)

    @get(
        "/status/{job_id:str}/events",
        operation_id="streamStatus",
        summary="Every status change as Server-Sent Events (event: status); ends after a terminal state",
        responses=error_responses(404),
        media_type="text/event-stream",
    )
    async def events(
        self,
        request: Request[Principal, Any, State],
        job_id: JobId,
        job_store: NamedDependency[JobStore],
        hub: NamedDependency[EventHub],
    ) -> ServerSentEvent:
        tenant = request.user.tenant
        await job_store.get(job_id, tenant)  # 404 as JSON before the stream starts

        async def stream() -> AsyncIterator[ServerSentEventMessage]:
            async for change in follow(hub, job_store, job_id, tenant):
                if change is None:
                    yield ServerSentEventMessage(comment="keep-alive")
                else:
                    yield ServerSentEventMessage(data=msgspec.json.encode(change).decode(), event="status")

        return ServerSentEvent(stream(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @websocket("/status/{job_id:str}/ws")
    async def status_ws(
        self,
        socket: WebSocket[Principal, Any, State],
        job_id: Annotated[str, PathParameter(description="The id returned by /classify")],
        job_store: NamedDependency[JobStore],
        hub: NamedDependency[EventHub],
    ) -> None:
        """Every status change as a JSON text message; closes (1000) after a terminal state. Errors (4404 for an
        unknown job) are the ErrorResponse as a message, then a close with code 4000 + status."""
        offered = socket.scope.get("subprotocols") or []
        await socket.accept(subprotocols=WS_PROTOCOL if WS_PROTOCOL in offered else None)
        async with websocket_errors(socket):
            async for change in follow(hub, job_store, job_id, socket.user.tenant):
                if change is not None:
                    await socket.send_data(msgspec.json.encode(change).decode())
            await socket.close(code=1000)

    @get(
        "/jobs",
        operation_id="listJobs",
        summary="The caller's jobs, newest first, a page at a time",
        responses=error_responses(403),
        dependencies={"job_query": Provide(parse_job_query, sync_to_thread=False)},
    )
    async def list_jobs(
        self,
        request: Request[Principal, Any, State],
        job_index: NamedDependency[JobIndex],
        job_query: NamedDependency[JobQuery],
    ) -> JobListResponse:
        tenant = tenant_scope(request.user, job_query.tenant)
        jobs, position = await job_index.page(tenant, job_query.limit, job_query.where(), job_query.after())
        return JobListResponse(
            jobs=[job.status_response() for job in jobs], next_cursor=position.cursor() if position else None
        )

    @delete(
        "/jobs/{job_id:str}",
        operation_id="cancelJob",
        summary="Cancel a pending or processing job; with purge=true erase it",
        status_code=200,
        responses={
            **error_responses(404, 409),
            204: ResponseSpec(None, description="Erased (purge=true)", generate_examples=False),
        },
    )
    async def cancel(
        self,
        request: Request[Principal, Any, State],
        job_id: JobId,
        job_store: NamedDependency[JobStore],
        purge: Purge = False,
    ) -> Response[JobStatusResponse | None]:
        tenant = request.user.tenant
        job = await job_store.get(job_id, tenant)
        if purge:
            await job_store.purge(job)
            return Response(None, status_code=204)
        await job_store.cancel(job)
        JOBS_CANCELLED.labels(job.model_version, str(job.priority)).inc()
        return Response((await job_store.get(job_id, tenant)).status_response())

    @get(
        "/result/{job_id:str}",
        operation_id="getResult",
        summary="Predictions of a completed job",
        responses=error_responses(404, 409),
    )
    async def result(
        self, request: Request[Principal, Any, State], job_id: JobId, job_store: NamedDependency[JobStore]
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


async def _submit(
    request: Request[Principal, Any, State],
    submitter: NamedDependency[Submitter],
    idempotency_key: str | None,
    prefer: str | None,
    cancel_after: str | None,
    *,
    batch: bool,
) -> tuple[list[ClassificationResponse], dict[str, str]]:
    return await submitter.submit(
        request.stream(),
        request.headers.get("content-type", ""),
        request.user.tenant,
        batch=batch,
        idempotency_key=idempotency_key,
        prefer=prefer,
        traceparent=request.headers.get("traceparent"),
        query={
            name: request.query_params[name]
            for name in (*FORM_FIELDS, *UPLOAD_FIELDS, *URL_FIELDS)
            if name in request.query_params
        },
        cancel_after=cancel_after,
    )
