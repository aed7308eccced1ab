"""Uploads by reference (``OBJECT_STORE_URL``): each upload is one object ``<prefix>/<tenant>/<job id>`` in S3, GCS,
Azure or a shared ``file://`` volume, through obstore; Redis keeps only its path.

An object cannot be deleted inside a Lua step, so its life follows the job's like this: written before the job is
created (no job without its object); deleted after the atomic finish or cancel (``aic.store.transitions``,
``aic.store.jobs``); kept while a dead letter can be retried (``job:{id}:image`` holds the path as long as it
would hold the bytes); and ``sweep`` removes what a crash between two steps left behind: objects older than
``UPLOAD_STRAY_AGE_S`` whose ``job:{id}:image`` is gone. A bucket lifecycle rule is the backstop (README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import AzureStore, GCSStore, LocalStore, S3Store, from_url
from redis.asyncio import Redis

from aic.core.errors import StoreError, StoreUnavailable
from aic.core.settings import ObjectStoreSettings
from aic.store import keys
from aic.store.connection import boundary, keyspace

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, RetryConfig

log = logging.getLogger("aic.store")

NOT_FOUND = (NotFoundError, FileNotFoundError)
"""obstore reports a missing object as its ``NotFoundError`` or as Python's own ``FileNotFoundError``."""

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
"""Where an S3-compatible server (MinIO, Ceph, moto) is named; an ``http://`` one is allowed plain HTTP."""


def open_store(settings: ObjectStoreSettings, env: Mapping[str, str] = os.environ) -> ObjectStore | None:
    """The object store ``OBJECT_STORE_URL`` names (None when unset); nothing is contacted yet."""
    url = settings.object_store_url
    if not url:
        return None
    if url.startswith("file://"):
        root = Path(unquote(urlsplit(url).path))
        root.mkdir(parents=True, exist_ok=True)
        return LocalStore(root, automatic_cleanup=True)  # a job's directory goes with its last upload
    endpoint = next((env[name] for name in ENDPOINT_VARIABLES if env.get(name)), "")
    timeout = timedelta(seconds=settings.object_store_timeout_s)
    client: ClientConfig = {
        "timeout": timeout,
        "connect_timeout": min(timeout, timedelta(seconds=5)),
        "allow_http": endpoint.startswith("http://"),
    }
    # obstore's default retries a failing call for 3 minutes: a submit would hang that long instead of a 503
    retry: RetryConfig = {
        "max_retries": 3,
        "retry_timeout": timedelta(seconds=settings.object_store_retry_timeout_s),
        "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1), "base": 2},
    }
    return from_url(url, client_options=client, retry_config=retry)


def upload_path(tenant: str, job_id: str) -> str:
    """Where a job's upload is kept, under the store's prefix (a tenant name is one path segment, whatever it holds)."""
    return f"{quote(tenant, safe='')}/{job_id}"


class Uploads:
    """The uploads of one process's object store. Every call leaves as ``StoreUnavailable`` when the store does not
    answer; "not found" is an answer (None)."""

    def __init__(self, store: ObjectStore, max_bytes: int = ObjectStoreSettings.max_upload_size) -> None:
        self.store = store
        self.max_bytes = max_bytes
        """Largest object ``get`` reads: a presigned URL stays valid after its submit, so the object a job names
        may have been replaced by a larger one since the submit checked it."""

    async def put(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write each (path, bytes), concurrently; StoreUnavailable unless every one was written."""
        with boundary():
            await asyncio.gather(*(obstore.put_async(self.store, path, data) for path, data in items))

    async def get(self, paths: Sequence[str | None]) -> list[bytes | None]:
        """Each upload's bytes, in order (None: no path, or no such object)."""
        with boundary():
            return list(await asyncio.gather(*(self._get(path) for path in paths)))

    async def _get(self, path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            found = await obstore.get_async(self.store, path)
            if found.meta["size"] > self.max_bytes:  # never read into memory: it fails as no image
                log.warning("upload %s has %d bytes, over %d: not read", path, found.meta["size"], self.max_bytes)
                return b""
            return bytes(await found.bytes_async())
        except NOT_FOUND:
            return None

    async def delete(self, paths: Sequence[str]) -> None:
        """Delete each object, best effort: one the store could not delete now is left to ``sweep``."""
        outcomes = await asyncio.gather(*(self._delete(path) for path in paths), return_exceptions=True)
        errors = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
        if errors:  # obstore's message carries a whole debug dump: its first line says what happened
            first = (str(errors[0]).splitlines() or [""])[0]
            kind = type(errors[0]).__name__
            log.warning("%d uploads not deleted (left to the sweep): %s: %s", len(errors), kind, first)

    async def _delete(self, path: str) -> None:
        with contextlib.suppress(*NOT_FOUND):
            await obstore.delete_async(self.store, path)

    async def sign_put(self, path: str, ttl_s: float) -> str | None:
        """A presigned PUT URL to ``path``, valid ``ttl_s``; None where the store cannot sign (``file://``)."""
        if not isinstance(self.store, S3Store | GCSStore | AzureStore):  # what obstore can sign for
            return None
        with boundary():
            return await obstore.sign_async(self.store, "PUT", path, timedelta(seconds=ttl_s))

    async def size(self, path: str) -> int | None:
        """The object's size from a HEAD (None: nothing there)."""
        try:
            with boundary():
                return int((await obstore.head_async(self.store, path))["size"])
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, NOT_FOUND):
                return None
            raise

    async def first_bytes(self, path: str, length: int) -> bytes:
        """The object's first ``length`` bytes (at most its size), without reading the rest."""
        with boundary():
            return bytes(await obstore.get_range_async(self.store, path, start=0, length=length))

    async def sweep(self, redis: Redis, older_than_s: float) -> int:
        """Delete objects older than ``older_than_s`` whose job no longer needs them (no ``job:{id}:image``): strays
        of a crash between writing an upload and creating its job, or between a job's end and the object's delete,
        and the uploads of dead letters no longer retryable. How many it deleted."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        names = keyspace(redis)
        deleted = 0
        with boundary():
            async for chunk in obstore.list(self.store, chunk_size=500):
                old = [meta["path"] for meta in chunk if meta["last_modified"] < cutoff]
                if not old:
                    continue
                async with redis.pipeline(transaction=False) as pipe:
                    for path in old:  # needed by its job, or reserved for a submit (a direct upload)
                        job_id = path.rsplit("/", 1)[-1]
                        pipe.exists(names.job_image(job_id))
                        pipe.exists(names.direct_upload(job_id))
                    replies = await pipe.execute()
                needed = [a or b for a, b in zip(replies[::2], replies[1::2], strict=True)]
                strays = [path for path, exists in zip(old, needed, strict=True) if not exists]
                await self.delete(strays)
                deleted += len(strays)
        return deleted

    async def sweep_once_per_interval(self, redis: Redis, interval_s: float, older_than_s: float) -> int | None:
        """``sweep``, by one process of all per ``interval_s`` (a Redis lock that expires); None: not our turn."""
        with boundary():
            if not await redis.set(keys.UPLOAD_SWEEP_LOCK, "1", nx=True, ex=max(1, int(interval_s))):
                return None
        return await self.sweep(redis, older_than_s)


class StoreProbe:
    """Whether the object store answers, for ``/health``: one listing of a prefix no upload has (an empty answer
    is an answer; a missing bucket or refused credentials are not), bounded by ``timeout_s`` and remembered for
    ``ttl_s``, so that probes however frequent cost the store one cheap request per interval."""

    PREFIX = ".aic-health/"

    def __init__(
        self,
        uploads: Uploads,
        timeout_s: float = 2.0,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uploads = uploads
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.clock = clock
        self._last: tuple[float, str | None] | None = None
        self._lock = asyncio.Lock()

    async def problem(self) -> str | None:
        """None when the store answered (now or within ``ttl_s``), else why it did not."""
        async with self._lock:  # concurrent probes share one request
            if self._last is not None and self.clock() - self._last[0] < self.ttl_s:
                return self._last[1]
            found = await self._check()
            self._last = (self.clock(), found)
            return found

    async def _check(self) -> str | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                with boundary():
                    await obstore.list(self.uploads.store, prefix=self.PREFIX, chunk_size=1).collect_async()
        except TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        except StoreError as exc:
            if isinstance(exc.__cause__, NOT_FOUND):  # a local store's directory not made yet: it answers
                return None
            return type(exc.__cause__ or exc).__name__
        return None


def connect_uploads(settings: ObjectStoreSettings) -> Uploads | None:
    """The process's uploads store, when ``OBJECT_STORE_URL`` is set."""
    store = open_store(settings)
    return Uploads(store, settings.max_upload_size) if store is not None else None
