"""The rate-limit middleware: every authenticated request takes a token from its IP's and its key's bucket
(``aic.store.ratelimit``), or is refused with 429, ``Retry-After`` and ``RateLimit-*`` headers."""

from __future__ import annotations

import logging
from typing import Any

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from aic.core.errors import RateLimitedError, StoreError
from aic.store.ratelimit import RateLimiter

log = logging.getLogger("aic.ratelimit")


def identity(scope: Scope) -> tuple[str, str | None]:
    """The client IP (the TCP peer) and the key id of the authenticated caller, if any."""
    client = scope.get("client")
    user: Any = scope.get("user")
    return (client[0] if client else "unknown"), (getattr(user, "key_id", "") or None)


class RateLimitMiddleware(ASGIMiddleware):
    """Runs after authentication; health, probes and the schema are excluded where it is configured."""

    scopes = ("http",)  # type: ignore[assignment]

    def __init__(self, exclude: tuple[str, ...] = ()) -> None:
        self.exclude_path_pattern = exclude

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        limiter: RateLimiter | None = getattr(scope["app"].state, "rate_limiter", None)
        if limiter is None or not limiter.enabled:
            await next_app(scope, receive, send)
            return
        try:
            decision = await limiter.take(*identity(scope))
        except StoreError:
            log.warning("rate limiter cannot reach Redis; request let through")
            await next_app(scope, receive, send)
            return
        headers = limiter.headers(decision)
        if not decision.allowed:
            raise RateLimitedError("Rate limit exceeded; retry after the Retry-After seconds", headers=headers)
        encoded = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *encoded]
            await send(message)

        await next_app(scope, receive, send_with_headers)
