"""``GET /usage``: a tenant's job counts, upload bytes and inference time per day or per model version."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from aic.core.schemas import UsageResponse
from aic.http.auth import Principal
from aic.http.lifecycle import ALL_TENANTS, UsageQuery, parse_usage_query, tenant_scope
from aic.http.openapi import SECURITY, error_responses
from aic.store.usage import UsageStore


class UsageController(Controller):
    path = "/usage"
    tags = ["usage"]  # noqa: RUF012 - Litestar reads these as class attributes
    security = SECURITY

    @get(
        "/",
        operation_id="getUsage",
        summary="Jobs submitted, completed, failed, cancelled and timed out, image bytes and inference time",
        responses=error_responses(403),
        dependencies={"usage_query": Provide(parse_usage_query, sync_to_thread=False)},
    )
    async def usage(
        self,
        request: Request[Principal, Any, State],
        usage_store: NamedDependency[UsageStore],
        usage_query: NamedDependency[UsageQuery],
    ) -> UsageResponse:
        tenant = tenant_scope(request.user, usage_query.tenant, allow_all=True)
        tenants = await usage_store.tenants() if tenant == ALL_TENANTS else [tenant]
        return UsageResponse(
            from_date=usage_query.start.isoformat(),
            to_date=usage_query.end.isoformat(),
            group_by=str(usage_query.group_by),
            tenants=await usage_store.report(tenants, usage_query.start, usage_query.end, str(usage_query.group_by)),
        )
