"""API-key authentication: keys come from ``API_KEYS`` (``tenant:key`` pairs) and are kept only as hashes."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from aic.errors import UnauthorizedError
from aic.settings import SettingsError


@dataclass(frozen=True)
class Principal:
    """Who is calling: every job belongs to the tenant that submitted it."""

    tenant: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """Maps presented keys to tenants, comparing SHA-256 digests in constant time."""

    def __init__(self, pairs: dict[bytes, str]) -> None:
        self._pairs = pairs

    @classmethod
    def parse(cls, api_keys: str) -> KeyRing:
        pairs: dict[bytes, str] = {}
        for item in filter(None, (part.strip() for part in api_keys.split(","))):
            tenant, sep, key = item.partition(":")
            if not sep or not tenant or len(key) < 16:
                # the key itself is never echoed: it is a secret
                raise SettingsError(f"API_KEYS entry for tenant {tenant!r} must be 'tenant:key', key >= 16 chars")
            pairs[_digest(key)] = tenant
        return cls(pairs)

    def tenant_for(self, key: str) -> str | None:
        presented = _digest(key)
        found = None
        for digest, tenant in self._pairs.items():
            if hmac.compare_digest(digest, presented):
                found = tenant
        return found

    def __len__(self) -> int:
        return len(self._pairs)


def presented_key(headers: dict[str, str], header_name: str) -> str | None:
    """The key sent as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``."""
    key = headers.get(header_name.lower())
    if key:
        return key.strip()
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Rejects any request without a valid key with 401 in the ErrorResponse shape."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        ring: KeyRing = connection.app.state.key_ring
        header_name: str = connection.app.state.api_key_header
        key = presented_key(dict(connection.headers), header_name)
        if key is None:
            raise UnauthorizedError(f"Missing API key: send '{header_name}: <key>' or 'Authorization: Bearer <key>'")
        tenant = ring.tenant_for(key)
        if tenant is None:
            raise UnauthorizedError("Invalid API key")
        return AuthenticationResult(user=Principal(tenant=tenant), auth=None)
