"""Authentication: API keys from ``API_KEYS`` (kept only as SHA-256 digests) and the JWTs exchanged for them.

``API_KEYS`` entries are ``tenant:key`` or ``tenant:key:admin`` (the admin role may call ``/admin``).
A credential arrives as ``X-API-Key``, ``Authorization: Bearer`` (a key or a token) or, for WebSockets
from browsers, which cannot set headers, as the subprotocol ``aic.auth.<credential>`` next to ``aic.v1``.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from aic.core import logs
from aic.core.errors import RateLimitedError, StoreError, UnauthorizedError
from aic.core.settings import SettingsError
from aic.http import tokens
from aic.http.ratelimit import identity
from aic.store.ratelimit import RateLimiter

WS_PROTOCOL = "aic.v1"
WS_AUTH_PREFIX = "aic.auth."


class Role(StrEnum):
    CLIENT = "client"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: every job belongs to the tenant that submitted it."""

    tenant: str
    key_id: str = ""
    """Digest prefix naming the API key (rate limits, tokens); never the key itself."""
    role: Role = Role.CLIENT
    via_token: bool = False


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(digest: bytes) -> str:
    return digest.hex()[:16]


class KeyRing:
    """Maps presented keys to principals by the SHA-256 digest of the key: one dictionary lookup, whatever the
    number of keys (a digest reveals nothing of the key, so the lookup's timing reveals nothing either)."""

    def __init__(self, pairs: dict[bytes, Principal]) -> None:
        self._pairs = pairs
        self._by_id = {p.key_id: p for p in pairs.values()}

    @classmethod
    def parse(cls, api_keys: str) -> KeyRing:
        pairs: dict[bytes, Principal] = {}
        for item in filter(None, (part.strip() for part in api_keys.split(","))):
            tenant, sep, key = item.partition(":")
            role = Role.CLIENT
            if key.endswith(":" + Role.ADMIN):
                key, role = key.removesuffix(":" + Role.ADMIN), Role.ADMIN
            if not sep or not tenant or len(key) < 16 or ":" in key:
                # the key itself is never echoed: it is a secret
                raise SettingsError(
                    f"API_KEYS entry for tenant {tenant!r} must be 'tenant:key' or 'tenant:key:admin', key >= 16 chars"
                )
            digest = _digest(key)
            pairs[digest] = Principal(tenant=tenant, key_id=key_id(digest), role=role)
        return cls(pairs)

    def principal_for(self, key: str) -> Principal | None:
        return self._pairs.get(_digest(key))

    def tenant_for(self, key: str) -> str | None:
        principal = self.principal_for(key)
        return principal.tenant if principal else None

    def by_key_id(self, kid: str) -> Principal | None:
        return self._by_id.get(kid)

    def __len__(self) -> int:
        return len(self._pairs)


def ws_credential(protocols_header: str) -> str | None:
    """The credential a browser WebSocket offers as the subprotocol ``aic.auth.<credential>``."""
    for item in protocols_header.split(","):
        item = item.strip()
        if item.startswith(WS_AUTH_PREFIX) and len(item) > len(WS_AUTH_PREFIX):
            return item[len(WS_AUTH_PREFIX) :]
    return None


def presented_key(headers: dict[str, str], header_name: str) -> str | None:
    """The credential sent as ``X-API-Key: <key>``, ``Authorization: Bearer <key or token>`` or WS subprotocol."""
    key = headers.get(header_name.lower())
    if key:
        return key.strip()
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return ws_credential(headers.get("sec-websocket-protocol", ""))


def authenticate(ring: KeyRing, secret: str, credential: str) -> Principal:
    """A key or a token to its principal, or UnauthorizedError."""
    if tokens.looks_like_jwt(credential):
        principal = ring.by_key_id(tokens.key_id_of(secret, credential))
        if principal is None:
            raise UnauthorizedError("Invalid access token")
        return Principal(principal.tenant, principal.key_id, principal.role, via_token=True)
    found = ring.principal_for(credential)
    if found is None:
        raise UnauthorizedError("Invalid API key")
    return found


class FailureThrottle:
    """Failed authentications per client IP: each one takes a token from the IP's bucket in Redis (shared by every
    replica). The failure that finds the bucket empty answers 429 with Retry-After, and the process that counted
    it answers that IP 429 for the same time whatever credential it sends, without a Redis call; another replica
    lets a valid key through and refuses the IP's next failure from the shared bucket."""

    MAX_REMEMBERED = 10_000

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self._locked: OrderedDict[str, float] = OrderedDict()

    def check(self, ip: str) -> None:
        until = self._locked.get(ip)
        if until is None:
            return
        left = until - time.monotonic()
        if left <= 0:
            del self._locked[ip]
            return
        raise _throttled(left)

    async def failed(self, ip: str) -> None:
        """Count a failure; raises RateLimitedError when it was one too many."""
        if not self.limiter.enabled:
            return
        try:
            decision = await self.limiter.failed_authentication(ip)
        except StoreError:
            return  # without Redis the 401 stands; the request limits fail open the same way
        if not decision.allowed:
            self._locked[ip] = time.monotonic() + decision.retry_after_s
            while len(self._locked) > self.MAX_REMEMBERED:
                self._locked.popitem(last=False)
            raise _throttled(decision.retry_after_s)


def _throttled(seconds: float) -> RateLimitedError:
    retry = str(max(1, int(seconds + 0.999)))
    return RateLimitedError(
        "Too many failed authentications from this address; retry later", headers={"Retry-After": retry}
    )


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Rejects any request without a valid key or token with 401 in the ErrorResponse shape; throttles an IP's
    failed attempts (429) so keys cannot be guessed at speed."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        state = connection.app.state
        throttle: FailureThrottle = state.auth_throttle
        ip, _ = identity(connection.scope)  # the same client IP as the rate limits
        throttle.check(ip)
        header_name: str = state.api_key_header
        credential = presented_key(dict(connection.headers), header_name)
        if credential is None:
            raise UnauthorizedError(
                f"Missing credentials: send '{header_name}: <key>' or 'Authorization: Bearer <key or token>'"
            )
        try:
            principal = authenticate(state.key_ring, state.secret_key, credential)
        except UnauthorizedError:
            await throttle.failed(ip)
            raise
        # the rest of the request runs in this context: RequestIdMiddleware's block around it ends the binding
        logs.bind(tenant=principal.tenant)
        return AuthenticationResult(user=principal, auth=None)
