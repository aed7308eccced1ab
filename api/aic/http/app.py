"""The Litestar application: settings, the stores over one Redis pool, authentication, rate limits and the one
error mapper, wired per process in the lifespan and handed to routes by dependency injection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.routes import HTTPRoute
from litestar.types import ControllerRouterHandler

from aic.core import settings as settings_mod
from aic.core.settings import ApiSettings, ObjectStoreSettings, QueueSettings, RedisSettings, WebhookSettings
from aic.http import errors
from aic.http.auth import ApiKeyMiddleware, FailureThrottle, KeyRing
from aic.http.controllers.account import AccountController
from aic.http.controllers.admin import AdminController
from aic.http.controllers.direct import DirectUploadController
from aic.http.controllers.health import health, livez, readyz
from aic.http.controllers.jobs import JobController
from aic.http.controllers.usage import UsageController
from aic.http.controllers.webhooks import WebhookController
from aic.http.middleware import RequestIdMiddleware, WebSocketErrorMiddleware
from aic.http.observe import METRICS_PATH, metrics, prometheus, tracing_plugins
from aic.http.openapi import security_schemes, submit_operations
from aic.http.page import PATHS as PAGE_PATHS
from aic.http.page import page_routes
from aic.http.ratelimit import RateLimitMiddleware
from aic.http.submissions import Submitter
from aic.http.tokens import signing_secret
from aic.live.hub import EventHub
from aic.store import layout
from aic.store.connection import Probe, connect
from aic.store.direct import DirectUploads
from aic.store.events import EventSubscription
from aic.store.idempotency import IdempotencyStore
from aic.store.jobs import JobStore
from aic.store.listing import JobIndex
from aic.store.objects import StoreProbe, connect_uploads
from aic.store.queue import QueueStats
from aic.store.ratelimit import RateLimiter
from aic.store.routes import RouteStore
from aic.store.sealing import Sealer
from aic.store.usage import UsageStore
from aic.store.webhooks import WebhookStore
from aic.store.workers import Heartbeats

log = logging.getLogger("aic.api")

MULTIPART_OVERHEAD = 64 * 1024  # form fields and part headers around the file
INJECTED = (
    "job_store",
    "job_index",
    "usage_store",
    "submitter",
    "hub",
    "routes",
    "queue_stats",
    "heartbeats",
    "probe",
    "webhook_store",
    "store_probe",
)
"""What the lifespan puts in the app's state and routes receive by name."""


def create_app(api_settings: ApiSettings | None = None, redis_settings: RedisSettings | None = None) -> Litestar:
    api_settings = api_settings or settings_mod.load(ApiSettings)
    redis_settings = redis_settings or settings_mod.load(RedisSettings)
    webhook_settings = settings_mod.load(WebhookSettings)
    key_ring = KeyRing.parse(api_settings.api_keys)
    if not key_ring:
        log.warning("API_KEYS is empty: every authenticated route will answer 401")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = connect(redis_settings)
        # another key layout than the data's: refused (``aic api`` checked before serving; again once Redis answers)
        layout_watch = asyncio.create_task(layout.watch(redis), name="aic-layout-guard")
        state = app.state
        queue_settings = settings_mod.load(QueueSettings)
        object_store = settings_mod.load(ObjectStoreSettings)
        uploads = connect_uploads(object_store)
        state.job_store = JobStore(redis, queue_settings, uploads)
        state.store_probe = StoreProbe(uploads) if uploads is not None else None
        state.job_index = JobIndex(redis)
        state.usage_store = UsageStore(redis)
        state.routes = RouteStore(redis)
        state.queue_stats = QueueStats(redis)
        state.heartbeats = Heartbeats(redis)
        state.probe = Probe(redis)
        state.webhook_store = WebhookStore(redis, Sealer.for_webhooks(webhook_settings))
        state.rate_limiter = RateLimiter(redis, api_settings.rate_limit_per_minute, api_settings.rate_limit_burst)
        state.auth_throttle = FailureThrottle(
            RateLimiter(redis, api_settings.auth_failure_per_minute, api_settings.auth_failure_burst)
        )
        hub = state.hub = EventHub(EventSubscription(redis))
        state.submitter = Submitter(
            jobs=state.job_store,
            queue=queue_settings,
            idempotency=IdempotencyStore(redis),
            routes=state.routes,
            hub=hub,
            settings=api_settings,
            direct=DirectUploads(redis, uploads, object_store.upload_url_ttl_s, object_store.max_upload_size)
            if uploads is not None
            else None,
        )
        await hub.start()
        try:
            yield
        finally:
            layout_watch.cancel()
            await hub.stop()
            await redis.aclose()

    def from_state(name: str) -> Provide:
        def provide(state: State) -> Any:
            return getattr(state, name)

        return Provide(provide, sync_to_thread=False)

    prefix = api_settings.api_prefix
    # /metrics needs no key, as the probes: the chart's Ingress does not route it, only in-cluster scrapers reach it
    open_paths = [f"^{prefix}/health$", "^/schema", "^/livez$", "^/readyz$", f"^{METRICS_PATH}$", *PAGE_PATHS]
    state = {
        "key_ring": key_ring,
        "api_key_header": api_settings.api_key_header,
        "api_settings": api_settings,
        "secret_key": signing_secret(api_settings.secret_key),
    }
    api: list[ControllerRouterHandler] = [
        JobController,
        AccountController,
        AdminController,
        health,
        WebhookController,
        UsageController,
        DirectUploadController,
    ]
    app = Litestar(
        route_handlers=[
            Router(path=prefix, route_handlers=api),
            livez,
            readyz,
            metrics,
            *page_routes(api_settings, settings_mod.load(ObjectStoreSettings)),
        ],
        plugins=tracing_plugins(),
        lifespan=[lifespan],
        state=State(state),
        dependencies={
            **{name: from_state(name) for name in INJECTED},
            "api_settings": Provide(lambda: api_settings, sync_to_thread=False),
            "webhook_settings": Provide(lambda: webhook_settings, sync_to_thread=False),
        },
        middleware=[
            prometheus(api_settings.app_name).middleware,
            RequestIdMiddleware(),
            WebSocketErrorMiddleware(api_settings.max_file_size),
            DefineMiddleware(ApiKeyMiddleware, exclude=open_paths),
            RateLimitMiddleware(exclude=tuple(open_paths)),
        ],
        exception_handlers={Exception: errors.handle},
        # uploads are bounded per part while they stream (aic.http.uploads); this bounds a whole batch
        request_max_body_size=api_settings.batch_max_files * api_settings.max_file_size + MULTIPART_OVERHEAD,
        cors_config=CORSConfig(
            allow_origins=list(api_settings.allowed_hosts),
            allow_headers=[
                api_settings.api_key_header,
                "Authorization",
                "Idempotency-Key",
                "Prefer",
                "Cancel-After",
                "X-Request-ID",
            ],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "RateLimit-Policy",
                "Preference-Applied",
                "Idempotent-Replayed",
            ],
        ),
        openapi_config=OpenAPIConfig(
            title=api_settings.app_name,
            version=api_settings.version,
            components=security_schemes(api_settings.api_key_header),
        ),
        debug=False,
        logging_config=None,  # aic.core.logs configured the process's logging (LOG_FORMAT): Litestar keeps off it
    )
    _describe_submit_bodies(app, api_settings, settings_mod.load(QueueSettings))
    return app


def _describe_submit_bodies(app: Litestar, api_settings: ApiSettings, queue: QueueSettings) -> None:
    """Give the submit routes their request bodies, with this app's limits (their handlers are copies made for
    this app, so another app with other settings is not affected)."""
    operations = submit_operations(api_settings, queue)
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if isinstance(handler.operation_id, str) and handler.operation_id in operations:
                    handler.operation_class = operations[handler.operation_id]
