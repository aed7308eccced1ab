"""Health and probes, open to everyone: ``/health`` (Redis, dispatchers, models, the object store when one is
configured), ``/livez``, ``/readyz`` (Redis only: an object store away makes submits answer 503 while status,
results and cancels still work, so it must not take every replica out of service at once)."""

from __future__ import annotations

import time

from litestar import get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from aic.core.errors import ServiceUnavailableError, StoreError
from aic.core.schemas import ErrorResponse, HealthResponse, ProbeResponse
from aic.core.settings import ApiSettings
from aic.core.timeutil import now_iso
from aic.store.connection import Probe
from aic.store.objects import StoreProbe
from aic.store.routes import RouteStore
from aic.store.workers import Heartbeats

_STARTED = time.monotonic()


def dispatchers_health(beats: list[tuple[bool, list[str]]]) -> tuple[str, bool]:
    """What ``/health`` says of the dispatchers (each: ready, problems), and whether that is healthy."""
    if not beats:
        return "no active dispatchers", False
    not_ready = [problems for ready, problems in beats if not ready]
    if not not_ready:
        return f"healthy ({len(beats)} dispatchers)", True
    first = next((p[0] for p in not_ready if p), "not ready")
    return f"degraded: {len(not_ready)} of {len(beats)} dispatchers not ready ({first})", False


@get(
    "/health",
    operation_id="health",
    summary="Health of the API and what it depends on",
    tags=["health"],
    exclude_from_auth=True,
)
async def health(
    probe: NamedDependency[Probe],
    heartbeats: NamedDependency[Heartbeats],
    routes: NamedDependency[RouteStore],
    api_settings: NamedDependency[ApiSettings],
    store_probe: NamedDependency[StoreProbe | None],
) -> HealthResponse:
    services: dict[str, str] = {}
    overall = "healthy"
    try:
        await probe.ping()
        services["redis"] = "healthy"
        beats = [(beat.ready, beat.problems) for beat in await heartbeats.live()]
        services["dispatchers"], fine = dispatchers_health(beats)
        if not fine:
            overall = "degraded"
        published = await routes.aliases()
        if published:
            services["models"] = f"healthy ({', '.join(sorted(published))})"
        else:
            services["models"] = "no models published"
            overall = "degraded"
    except StoreError as exc:
        services["redis"] = f"unhealthy: {type(exc).__name__}"
        overall = "unhealthy"
    if store_probe is not None:  # uploads in an object store (OBJECT_STORE_URL): submits need it
        problem = await store_probe.problem()
        services["object_store"] = "healthy" if problem is None else f"unhealthy: {problem}"
        if problem is not None and overall == "healthy":
            overall = "degraded"
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
async def readyz(probe: NamedDependency[Probe]) -> ProbeResponse:
    try:
        await probe.ping()
    except StoreError:
        raise ServiceUnavailableError("Redis is unreachable") from None
    return ProbeResponse(status="ready")
