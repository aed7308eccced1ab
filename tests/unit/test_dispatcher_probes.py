"""A dispatcher's /livez and /readyz as data (a clock of our own), and how the metrics listener answers a probe."""

from __future__ import annotations

import json
from typing import Any

from aic.core.metrics import with_probes
from aic.dispatch.health import PROBE_INTERVAL_S, PROBE_TIMEOUT_S, Health


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_live_while_the_loop_pulses_and_not_once_it_has_stalled_longer_than_the_limit() -> None:
    clock = Clock()
    health = Health(stall_s=15, clock=clock)
    clock.now += 14.9
    assert health.live() == (True, {"loop": "ok"})
    clock.now += 0.2
    assert health.live() == (False, {"loop": "stalled for 15.1 s (the limit is 15 s)"})
    health.pulse()
    assert health.live()[0]


def test_ready_needs_a_recent_check_that_found_redis_and_triton_fine_and_a_live_loop() -> None:
    clock = Clock()
    health = Health(stall_s=15, clock=clock)
    assert health.ready() == (False, {"loop": "ok", "redis": "not checked yet", "triton": "not checked yet"})
    health.probed({"triton": "unavailable: connection refused"})
    assert health.ready() == (False, {"loop": "ok", "redis": "ok", "triton": "unavailable: connection refused"})
    health.probed({})
    assert health.ready() == (True, {"loop": "ok", "redis": "ok", "triton": "ok"})
    clock.now += 15 + PROBE_INTERVAL_S + 2 * PROBE_TIMEOUT_S + 0.1  # no check since, and no pulse either
    health.pulse()
    assert health.ready() == (False, {"loop": "ok", "redis": "no recent check", "triton": "no recent check"})
    health.probed({})
    clock.now += 15.1
    assert health.ready()[0] is False  # fresh enough, but the loop has stalled


def call(app: Any, path: str) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen.update(status=status, headers=dict(headers))

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
    return seen["status"], seen["headers"], body


def test_a_probe_answers_200_or_503_with_json_and_any_other_path_is_the_metrics() -> None:
    def metrics(_environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"aic_metric 1\n"]

    def broken() -> tuple[bool, dict[str, Any]]:
        raise RuntimeError("cannot tell")

    probes = {"/livez": lambda: (True, {"loop": "ok"}), "/readyz": lambda: (False, {"redis": "down"}), "/x": broken}
    app = with_probes(metrics, probes)
    status, headers, body = call(app, "/livez")
    assert (status, headers["Content-Type"], json.loads(body)) == (
        "200 OK",
        "application/json",
        {"status": "ok", "loop": "ok"},
    )
    status, _, body = call(app, "/readyz")
    assert (status, json.loads(body)) == ("503 Service Unavailable", {"status": "unavailable", "redis": "down"})
    status, _, body = call(app, "/x")
    assert (status, json.loads(body)) == (
        "503 Service Unavailable",
        {"status": "unavailable", "error": "RuntimeError: cannot tell"},
    )
    assert call(app, "/metrics") == ("200 OK", {"Content-Type": "text/plain"}, b"aic_metric 1\n")
