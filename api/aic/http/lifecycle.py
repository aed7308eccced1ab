"""The query parameters of ``GET /jobs`` and ``GET /usage``, parsed into what the store takes, and whose jobs or
usage a caller may read (its own tenant's; the admin role any tenant's)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from litestar.params import QueryParameter

from aic.core.enums import JobStatus, Priority
from aic.core.errors import BadRequestError, ForbiddenError, RequestValidationError
from aic.http.auth import Principal, Role
from aic.store.listing import JobFilter, Position
from aic.store.usage import MAX_DAYS

audit = logging.getLogger("aic.audit")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
ALL_TENANTS = "*"
USAGE_DEFAULT_DAYS = 30


def tenant_scope(user: Principal, tenant: str | None, *, allow_all: bool = False) -> str:
    """The tenant a request reads: the caller's own; another one (or ``*``, all) only for the admin role."""
    if tenant is None or tenant == user.tenant:
        return user.tenant
    if user.role is not Role.ADMIN:
        raise ForbiddenError("Only an admin key may read another tenant's jobs or usage (tenant=)")
    if tenant == ALL_TENANTS and not allow_all:
        raise BadRequestError("tenant=* (all tenants) is for GET /usage; list one tenant's jobs at a time")
    audit.info("admin read of tenant %s by key %s (tenant %s)", tenant, user.key_id, user.tenant)
    return tenant


def _moment(field: str, raw: str | None) -> int | None:
    """An ISO 8601 date or date-time (UTC when it names no offset) as epoch ms."""
    if raw is None or raw == "":
        return None
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(raw.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    raise RequestValidationError(
        "Request validation failed",
        [{"field": field, "message": "must be an ISO 8601 date or date-time, e.g. 2026-12-06T10:00:00Z"}],
    )


@dataclass(frozen=True)
class JobQuery:
    limit: int
    cursor: str | None
    status: JobStatus | None
    priority: Priority | None
    model_version: str | None
    created_after_ms: int | None
    created_before_ms: int | None
    tenant: str | None

    def where(self) -> JobFilter:
        return JobFilter(self.status, self.priority, self.model_version, self.created_after_ms, self.created_before_ms)

    def after(self) -> Position | None:
        return Position.from_cursor(self.cursor) if self.cursor is not None else None


_Moment = Annotated[
    str | None,
    QueryParameter(description="ISO 8601 date or date-time (UTC unless it says otherwise)", max_length=64),
]


def parse_job_query(
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Jobs per page")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, QueryParameter(description="next_cursor of the previous page", max_length=128)
    ] = None,
    status: Annotated[JobStatus | None, QueryParameter(description="Only jobs in this status")] = None,
    priority: Annotated[Priority | None, QueryParameter(description="Only jobs of this priority")] = None,
    model_version: Annotated[
        str | None, QueryParameter(description="Only jobs submitted with this alias", max_length=128)
    ] = None,
    created_after: Annotated[_Moment, QueryParameter(description="Only jobs created at or after this moment")] = None,
    created_before: Annotated[_Moment, QueryParameter(description="Only jobs created before this moment")] = None,
    tenant: Annotated[
        str | None, QueryParameter(description="Admin role only: another tenant's jobs", max_length=128)
    ] = None,
) -> JobQuery:
    query = JobQuery(
        limit=limit,
        cursor=cursor,
        status=status,
        priority=priority,
        model_version=model_version,
        created_after_ms=_moment("created_after", created_after),
        created_before_ms=_moment("created_before", created_before),
        tenant=tenant,
    )
    query.after()  # a bad cursor answers 400 before anything is read
    return query


class GroupBy(StrEnum):
    DAY = "day"
    MODEL = "model"


@dataclass(frozen=True)
class UsageQuery:
    start: date
    end: date
    group_by: GroupBy
    tenant: str | None


def parse_usage_query(
    from_: Annotated[
        date | None,
        QueryParameter(name="from", description=f"First UTC day, YYYY-MM-DD (default: {USAGE_DEFAULT_DAYS} days ago)"),
    ] = None,
    to: Annotated[date | None, QueryParameter(description="Last UTC day, YYYY-MM-DD (default: today)")] = None,
    group_by: Annotated[GroupBy, QueryParameter(description="Rows per day or per served model version")] = GroupBy.DAY,
    tenant: Annotated[
        str | None,
        QueryParameter(description="Admin role only: another tenant, or * for every tenant", max_length=128),
    ] = None,
) -> UsageQuery:
    end = to or datetime.now(UTC).date()
    start = from_ or end - timedelta(days=USAGE_DEFAULT_DAYS - 1)
    if start > end:
        raise BadRequestError(f"from ({start}) is after to ({end})")
    if (end - start).days + 1 > MAX_DAYS:
        raise BadRequestError(f"A usage report covers at most {MAX_DAYS} days (usage is kept that long)")
    return UsageQuery(start, end, group_by, tenant)
