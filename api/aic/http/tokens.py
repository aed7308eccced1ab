"""Bearer access tokens: short-lived HS256 JWTs signed with ``SECRET_KEY``, exchanged for an API key.

A token names the key it was issued for (a digest prefix, never the key), so removing a key from
``API_KEYS`` also ends every token issued for it; tenant and role are looked up again on each use.
"""

from __future__ import annotations

import logging
import secrets
import time

import jwt

from aic.core.errors import UnauthorizedError

log = logging.getLogger("aic.tokens")

ISSUER = "aic"
AUDIENCE = "aic-api"
ALGORITHM = "HS256"


def signing_secret(configured: str) -> str:
    """``SECRET_KEY``, or a random per-process secret (with a warning) when it is unset: never a fixed default."""
    if configured:
        return configured
    log.warning("SECRET_KEY is unset: access tokens are signed with a random per-process secret (one replica only)")
    return secrets.token_urlsafe(48)


def issue(secret: str, key_id: str, tenant: str, ttl_s: int, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": tenant, "kid": key_id, "iat": issued, "exp": issued + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2


def key_id_of(secret: str, token: str) -> str:
    """The key id a valid token was issued for; UnauthorizedError for a bad, expired or foreign token."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "kid"]},
        )
    except jwt.ExpiredSignatureError:
        raise UnauthorizedError("Access token expired") from None
    except jwt.PyJWTError:
        raise UnauthorizedError("Invalid access token") from None
    return str(claims["kid"])
