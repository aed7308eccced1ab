"""A dispatcher checks that Triton serves every published model as its spec says, and reports not-ready (in its
heartbeat and through ``/health``) while one does not match."""

from __future__ import annotations

import asyncio
import os
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
