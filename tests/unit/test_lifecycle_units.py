"""Pure parts of the job lifecycle: cursors, durations, deadline and retention options, who may read whose jobs."""

from __future__ import annotations

import base64
import io

import pytest
from aic.client.models import Status, Usage
from aic.console.view import TerminalView
from aic.core.errors import BadRequestError, ForbiddenError, RequestValidationError
from aic.core.schemas import TenantUsage, UsageCounts, UsageDay
from aic.core.settings import QueueSettings
from aic.http.auth import Principal, Role
from aic.http.lifecycle import tenant_scope
from aic.http.submissions import deadline_of, options_of, parse_duration, parse_seconds
from aic.store.listing import Position
from rich.console import Console


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_cursor_names_the_position_it_was_made_from() -> None:
    assert Position.from_cursor(Position(17, "ab-12").cursor()) == Position(17, "ab-12")


@pytest.mark.parametrize("raw", ["", "not-base64!", _b64("99:"), _b64("-1:abc"), _b64("5:a:b"), _b64("x:abc"), "%%%"])
def test_a_cursor_this_service_did_not_hand_out_is_refused(raw: str) -> None:
    with pytest.raises(BadRequestError):
        Position.from_cursor(raw)


@pytest.mark.parametrize(("raw", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1h", 3600), ("2m5s", 125)])
def test_cancel_after_durations(raw: str, seconds: int) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "5", "1d", "m", "1.5s", "30s5m", "-5s", "5 m"])
def test_a_duration_in_another_shape_is_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


def test_deadline_from_the_option_or_the_header_and_both_must_agree() -> None:
    assert deadline_of({"deadline_s": "90"}, None, 3600) == 90
    assert deadline_of({}, "1m30s", 3600) == 90
    assert deadline_of({"deadline_s": "90"}, "90s", 3600) == 90
    assert deadline_of({}, None, 3600) is None
    for options, header in (({"deadline_s": "60"}, "90s"), ({}, "2h"), ({}, "0s"), ({}, "soon")):
        with pytest.raises(RequestValidationError) as refused:
            deadline_of(options, header, 3600)
        assert refused.value.errors[0]["field"] == "Cancel-After"


@pytest.mark.parametrize("raw", ["0", "-1", "1.5", "abc", "86401", "9" * 20])
def test_seconds_outside_one_to_the_maximum_are_refused(raw: str) -> None:
    with pytest.raises(RequestValidationError):
        parse_seconds("retention_s", raw, QueueSettings().max_deadline_s)


def test_an_option_sent_twice_with_one_value_is_accepted_and_with_two_refused() -> None:
    assert options_of({"priority": "high"}, {"priority": "high"}) == {"priority": "high"}
    with pytest.raises(RequestValidationError):
        options_of({"priority": "high"}, {"priority": "low"})


def test_only_the_admin_role_reads_another_tenant() -> None:
    client, admin = Principal("acme"), Principal("ops", role=Role.ADMIN)
    assert tenant_scope(client, None) == tenant_scope(client, "acme") == "acme"
    with pytest.raises(ForbiddenError):
        tenant_scope(client, "globex")
    with pytest.raises(ForbiddenError):
        tenant_scope(client, "*", allow_all=True)
    assert tenant_scope(admin, "globex") == "globex"
    assert tenant_scope(admin, "*", allow_all=True) == "*"
    with pytest.raises(BadRequestError):
        tenant_scope(admin, "*")


def test_the_terminal_shows_a_job_list_and_a_usage_table() -> None:
    out = io.StringIO()
    view = TerminalView(5, console=Console(file=out, width=160, force_terminal=False))
    failed = Status(
        job_id="0881adff-1", status="failed", progress=0, stage=None, updated_at="2026-12-06T10:00:00.000Z",
        error_code="TIMEOUT", error_message="Deadline exceeded", created_at="2026-12-06T09:59:00.000Z",
        priority="high", model_version="latest",
    )  # fmt: skip
    view.show_jobs([failed])
    day = UsageDay(date="2026-12-06", submitted=3, completed=2, timed_out=1, failed=1, inference_ms=12.5)
    totals = UsageCounts(submitted=3, completed=2, timed_out=1, failed=1, inference_ms=12.5)
    view.show_usage(Usage(from_date="2026-12-06", to_date="2026-12-06", group_by="day",
                          tenants=[TenantUsage(tenant="acme", totals=totals, days=[day])]))  # fmt: skip
    text = out.getvalue()
    assert "0881adff-1" in text and "TIMEOUT: Deadline exceeded" in text and "2026-12-06 09:59:00" in text
    assert "acme · 2026-12-06 to 2026-12-06" in text and "12.5" in text and "total" in text
