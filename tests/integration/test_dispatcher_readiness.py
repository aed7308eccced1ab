"""A dispatcher checks that Triton serves every published model as its spec says, and reports not-ready (in its
heartbeat and through ``/health``) while one does not match."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import msgspec
import pytest
from aic.core.modelspec import Layout, ModelSpec
from aic.core.settings import RedisSettings
from aic.local.ports import free_port
from aic.local.triton import LocalTriton
from aic.modelrepo import layout
from aic.store.connection import connect
from aic.store.routes import RouteStore
from aic.store.workers import Heartbeat, Heartbeats
from stack import RunningRedis, Service, stop_all, wait_for_http

pytestmark = pytest.mark.integration


def publish(redis_url: str, spec: ModelSpec) -> None:
    async def run() -> None:
        redis = connect(RedisSettings(redis_url=redis_url))
        try:
            await RouteStore(redis).publish(spec)
        finally:
            await redis.aclose()

    asyncio.run(run())


def beats(redis_url: str) -> list[Heartbeat]:
    async def run() -> list[Heartbeat]:
        redis = connect(RedisSettings(redis_url=redis_url))
        try:
            return await Heartbeats(redis).live()
        finally:
            await redis.aclose()

    return asyncio.run(run())


def until(check: Any, timeout_s: float, why: Any) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(why())


def test_a_spec_that_does_not_match_its_model_makes_the_dispatcher_not_ready(
    own_redis: RunningRedis, triton_server: LocalTriton
) -> None:
    served = layout.load(triton_server.repository / "efficientnet-lite0")
    float_input = msgspec.structs.replace(served.input, data_type="FP32", dims=(3, 224, 224))
    wrong = msgspec.structs.replace(
        served,
        input=float_input,
        preprocessing=msgspec.structs.replace(served.preprocessing, layout=Layout.NCHW, dtype="FP32"),
    )
    publish(own_redis.url, wrong)
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": own_redis.url,
        "TRITON_URL": triton_server.grpc_url,
        "HEARTBEAT_INTERVAL_S": "1",
        "API_PORT": str(port),
        "API_KEYS": "acme:readiness-test-key-0123456789",
    }
    dispatcher = Service("dispatcher", env).start()
    api = Service("api", env).start()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/livez", 60, api)
        [beat] = until(lambda: beats(own_redis.url), 60, dispatcher.output)
        assert not beat.ready
        assert "input 'input' is UINT8, the spec says FP32" in " ".join(beat.problems), beat.problems
        health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health").json()
        assert health["status"] == "degraded"
        assert health["services"]["dispatchers"].startswith("degraded: 1 of 1 dispatchers not ready"), health
        assert "efficientnet-lite0" in health["services"]["dispatchers"]
        publish(own_redis.url, served)  # the operator corrects the spec: the next heartbeat is ready
        until(lambda: [b for b in beats(own_redis.url) if b.ready], 30, dispatcher.output)
        healthy = httpx.get(f"http://127.0.0.1:{port}/api/v1/health").json()
        assert healthy["services"]["dispatchers"] == "healthy (1 dispatchers)", healthy
        assert "model not servable as published" in dispatcher.output()
    finally:
        stop_all([api, dispatcher])


# --- /livez and /readyz on the metrics port ------------------------------------------------------------------


def probe(port: int, path: str) -> tuple[int, dict[str, Any]] | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.TransportError:
        return None
    return response.status_code, response.json()


def probes_env(redis_url: str, triton_url: str, **extra: str) -> tuple[int, dict[str, str]]:
    port = free_port()
    return port, {**os.environ, "REDIS_URL": redis_url, "TRITON_URL": triton_url, "METRICS_PORT": str(port), **extra}


def test_readyz_follows_redis_and_triton_while_livez_holds(own_redis: RunningRedis, triton_server: LocalTriton) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    port, env = probes_env(own_redis.url, triton_server.grpc_url)
    dead_port, dead_env = probes_env(f"redis://{nowhere}", nowhere)  # neither answers
    serving, stranded = Service("dispatcher", env).start(), Service("dispatcher", dead_env).start()
    try:
        ready = until(lambda: (probe(port, "/readyz") or (0, {}))[0] == 200, 60, serving.output)
        assert ready and probe(port, "/readyz") == (200, {"status": "ok", "loop": "ok", "redis": "ok", "triton": "ok"})
        assert probe(port, "/livez") == (200, {"status": "ok", "loop": "ok"})
        assert "aic_dispatcher_ready" in httpx.get(f"http://127.0.0.1:{port}/metrics").text  # still the metrics

        def checked() -> tuple[int, dict[str, Any]] | None:
            found = probe(dead_port, "/readyz")
            return found if found and "not checked yet" not in found[1].values() else None

        status, body = until(checked, 60, stranded.output)
        assert (status, body["status"], body["loop"]) == (503, "unavailable", "ok"), body
        assert body["redis"].startswith("unreachable: ") and "Connection refused" in body["redis"], body
        assert "unavailable" in body["triton"].lower() or "connect" in body["triton"].lower(), body
        assert probe(dead_port, "/livez") == (200, {"status": "ok", "loop": "ok"})  # waiting for Redis is not wedged
    finally:
        stop_all([serving, stranded])


WEDGE = (
    "import signal, sys, time; signal.signal(signal.SIGUSR1, lambda *_: time.sleep(600)); "
    "from aic.cli import main; sys.exit(main())"
)
"""`aic dispatcher` as it is, plus the fault: SIGUSR1 runs a blocking sleep on the main thread, which runs the event
loop, as a synchronous call in a coroutine would. The metrics listener's thread goes on: the case a liveness probe
is for (SIGSTOP would stop that thread too, and a slow Redis or Triton only slows awaits, which is not wedged)."""


def test_a_wedged_event_loop_fails_livez_while_the_listener_still_answers(
    own_redis: RunningRedis, triton_server: LocalTriton
) -> None:
    port, env = probes_env(own_redis.url, triton_server.grpc_url, LOOP_STALL_S="2")
    log = Service("dispatcher", env).log
    with log.open("ab") as out:
        wedged = subprocess.Popen(
            [sys.executable, "-c", WEDGE, "dispatcher"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        until(lambda: (probe(port, "/readyz") or (0, {}))[0] == 200, 60, log.read_text)
        wedged.send_signal(signal.SIGUSR1)
        status, body = until(lambda: (found := probe(port, "/livez")) and found[0] != 200 and found, 30, log.read_text)
        assert (status, body["status"]) == (503, "unavailable"), body
        assert body["loop"].startswith("stalled for ") and body["loop"].endswith("(the limit is 2 s)"), body
        assert probe(port, "/readyz") is not None and probe(port, "/readyz")[0] == 503  # type: ignore[index]
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200  # the thread answers
        assert wedged.poll() is None
    finally:
        wedged.kill()  # its loop cannot take a SIGTERM any more
        wedged.wait(10)
