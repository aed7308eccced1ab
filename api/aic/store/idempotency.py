"""``Idempotency-Key`` on submit, with Stripe's semantics: the same tenant, key and request content answer
with the jobs of the first request and create nothing; the same key with other content is refused.

One ``SET NX`` claims a key for a request fingerprint and the job ids it will create, so two concurrent
retries cannot both create jobs. Keys are kept only as SHA-256 digests, for 24 h.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis

from aic.core.errors import JobConflictError, RequestValidationError
from aic.store import keys
from aic.store.connection import guarded

KEY_MAX_LENGTH = 255


class _Record(msgspec.Struct):
    fingerprint: str
    job_ids: list[str]


@dataclass(frozen=True)
class Claim:
    """Outcome of claiming a key: ``fresh`` means this request owns it and must create ``job_ids``."""

    fresh: bool
    job_ids: list[str]


def _redis_key(tenant: str, idempotency_key: str) -> str:
    return keys.idempotency(tenant, hashlib.sha256(idempotency_key.encode()).hexdigest())


def check_key(idempotency_key: str) -> None:
    if not idempotency_key.strip() or len(idempotency_key) > KEY_MAX_LENGTH:
        raise RequestValidationError(
            "Request validation failed",
            [{"field": "Idempotency-Key", "message": f"must be 1 to {KEY_MAX_LENGTH} characters"}],
        )


@guarded
class IdempotencyStore:
    """Claims of one tenant's Idempotency-Keys, shared by every API replica."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def claim(self, tenant: str, idempotency_key: str, fingerprint: str, job_ids: list[str]) -> Claim:
        """Claim ``idempotency_key`` for a request, or learn the jobs of the earlier request that claimed it.

        RequestValidationError (422) when the key is malformed or was used for a request with other content.
        """
        check_key(idempotency_key)
        name = _redis_key(tenant, idempotency_key)
        record = msgspec.json.encode(_Record(fingerprint, job_ids))
        while True:
            if await self.redis.set(name, record, nx=True, ex=keys.IDEMPOTENCY_TTL_S):
                return Claim(True, job_ids)
            raw = await self.redis.get(name)
            if raw is not None:  # else it expired between the two calls: this request may claim it after all
                break
        earlier = msgspec.json.decode(raw, type=_Record)
        if earlier.fingerprint != fingerprint:
            raise RequestValidationError(
                "Idempotency-Key reused with a different request",
                [
                    {
                        "field": "Idempotency-Key",
                        "message": "this key was used for a request with other content; use a new key",
                    }
                ],
            )
        return Claim(False, earlier.job_ids)

    async def release(self, tenant: str, idempotency_key: str) -> None:
        """Forget a claim whose jobs could not be created, so a retry may try again."""
        await self.redis.delete(_redis_key(tenant, idempotency_key))


def replay_missing() -> JobConflictError:
    return JobConflictError(
        "The request with this Idempotency-Key is still being processed or its jobs have expired; retry shortly"
    )
