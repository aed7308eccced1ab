"""Presigned direct uploads: an upload id reserved for a tenant with a presigned PUT URL to its object, and the
claim a submit makes on it (single use; size from a HEAD, the first bytes for the type and dimensions, never the
whole object). The upload id is the id of the job the submit creates, so the object is ``<tenant>/<upload id>`` like
any upload and the sweep keeps it while the reservation lives (``aic.store.objects``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from aic.core.errors import BadRequestError, ImageValidationError, JobConflictError, UploadNotFoundError
from aic.store.connection import guarded, keyspace
from aic.store.objects import Uploads, upload_path

HEAD_BYTES = 64 * 1024
"""How much of an uploaded object a submit reads: enough for the type and the dimensions of a JPEG, PNG or WebP
(header and the usual metadata before the frame)."""


@dataclass(frozen=True)
class Reservation:
    """What ``POST /uploads`` answers: where to PUT the image, until when, and how large it may be."""

    upload_id: str
    url: str
    expires_at: str
    max_bytes: int
    method: str = "PUT"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Uploaded:
    """A claimed upload: its object's path, size and first bytes."""

    upload_id: str
    path: str
    size: int
    head: bytes


@guarded
class DirectUploads:
    """Reservations in Redis (``upload:{id}``), objects in the object store."""

    def __init__(self, redis: Redis, uploads: Uploads, ttl_s: float, max_bytes: int) -> None:
        self.redis, self.uploads, self.ttl_s, self.max_bytes = redis, uploads, ttl_s, max_bytes
        self.keys = keyspace(redis)

    async def reserve(self, tenant: str) -> Reservation:
        """A fresh upload id and a presigned PUT URL for it; BadRequestError where the store cannot sign."""
        upload_id = str(uuid.uuid4())
        url = await self.uploads.sign_put(upload_path(tenant, upload_id), self.ttl_s)
        if url is None:
            raise BadRequestError("Direct uploads need an S3, GCS or Azure OBJECT_STORE_URL (file:// signs no URL)")
        # the reservation outlives the URL by one TTL: an upload finished at the last moment can still be submitted
        key = self.keys.direct_upload(upload_id)
        await self.redis.hset(key, mapping={"tenant": tenant})
        await self.redis.expire(key, int(2 * self.ttl_s))
        expires = (datetime.now(UTC) + timedelta(seconds=self.ttl_s)).isoformat().replace("+00:00", "Z")
        return Reservation(upload_id, url, expires, self.max_bytes)

    async def claim(self, tenant: str, upload_id: str) -> Uploaded:
        """Claim an uploaded object for one submit: UploadNotFoundError (unknown, expired, another tenant's),
        JobConflictError (already used), BadRequestError (nothing uploaded yet), ImageValidationError (too large).
        A claim refused for its object is released again, so the client may PUT and submit once more."""
        key = self.keys.direct_upload(upload_id)
        if await self.redis.hget(key, "tenant") != tenant.encode():
            raise UploadNotFoundError(upload_id)
        if not await self.redis.hsetnx(key, "claimed", "1"):
            raise JobConflictError(f"Upload {upload_id} was already submitted; reserve a new one")
        path = upload_path(tenant, upload_id)
        try:
            size = await self.uploads.size(path)
            if size is None:
                raise BadRequestError(f"Nothing was uploaded for {upload_id} yet: PUT the image to its URL first")
            if size > self.max_bytes:
                raise ImageValidationError(f"File size exceeds limit of {self.max_bytes} bytes")
            head = await self.uploads.first_bytes(path, min(size, HEAD_BYTES)) if size else b""
        except BaseException:
            await self.release(upload_id)
            raise
        return Uploaded(upload_id, path, size, head)

    async def release(self, upload_id: str) -> None:
        """Make a claimed upload submittable again (its submit was refused before a job was created)."""
        await self.redis.hdel(self.keys.direct_upload(upload_id), "claimed")
