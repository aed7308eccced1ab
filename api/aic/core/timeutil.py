"""Timestamps as the API shows them: ISO 8601, UTC, with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso(offset_s: float = 0.0) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=offset_s))
