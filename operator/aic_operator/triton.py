"""Triton replicas and their repository API (EXPLICIT model control): load, unload, readiness.

Replicas are a static list (``TRITON_URL``, comma-separated) or, in a cluster, the ready endpoints of the
Triton Service, kept up to date from its EndpointSlices. One aio gRPC client per replica, reused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)

_UNREACHABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}
# A replica that is down when first dialled must be seen soon after it comes up: gRPC's default reconnect
# backoff grows to two minutes and, through the global subchannel pool, outlives a fresh channel.
_CHANNEL_ARGS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 3000),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclasses.dataclass(frozen=True)
class ReplicaState:
    url: str
    ready: bool
    reachable: bool = True
    error: str = ""


class Fleet:
    """The Triton replicas models must be loaded on."""

    def __init__(self, static: Iterable[str] = (), timeout_s: float = 300.0) -> None:
        self._static = tuple(static)
        self._slices: dict[str, tuple[str, ...]] = {}
        self._clients: dict[str, grpcclient.InferenceServerClient] = {}
        self._retired: list[grpcclient.InferenceServerClient] = []
        self.timeout_s = timeout_s

    def urls(self) -> list[str]:
        discovered = sorted({url for urls in self._slices.values() for url in urls})
        return discovered or list(self._static)

    def set_slice(self, slice_name: str, urls: Iterable[str]) -> bool:
        """Record the ready endpoints of one EndpointSlice; True when the replica set changed."""
        before = self.urls()
        self._slices[slice_name] = tuple(sorted(urls))
        return self.urls() != before

    def drop_slice(self, slice_name: str) -> bool:
        before = self.urls()
        self._slices.pop(slice_name, None)
        return self.urls() != before

    def _client(self, url: str) -> grpcclient.InferenceServerClient:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = grpcclient.InferenceServerClient(url=url, channel_args=_CHANNEL_ARGS)
        return client

    async def ensure_loaded(self, name: str, reload: bool) -> list[ReplicaState]:
        """Load ``name`` on every replica where it is not ready (on all of them when ``reload``).

        A reload of a loaded model keeps the old one serving until the new one is ready (Triton's
        explicit-mode semantics), so a changed spec never leaves a window without the model.
        """
        return list(await asyncio.gather(*(self._ensure(url, name, reload) for url in self.urls())))

    async def _ensure(self, url: str, name: str, reload: bool) -> ReplicaState:
        client = self._client(url)
        try:
            if not reload and await client.is_model_ready(name, client_timeout=10):
                return ReplicaState(url, ready=True)
            log.info("loading %s on %s", name, url)
            await client.load_model(name, client_timeout=self.timeout_s)
            return ReplicaState(url, ready=bool(await client.is_model_ready(name, client_timeout=10)))
        except InferenceServerException as exc:
            return await self._failed(url, exc)

    async def unload(self, name: str) -> list[ReplicaState]:
        """Unload ``name`` everywhere; an unreachable replica is reported as such."""

        async def one(url: str) -> ReplicaState:
            try:
                await self._client(url).unload_model(name, client_timeout=self.timeout_s)
                return ReplicaState(url, ready=False)
            except InferenceServerException as exc:
                return await self._failed(url, exc)  # reachable: Triton refused, e.g. a model it never had

        return list(await asyncio.gather(*(one(url) for url in self.urls())))

    async def _failed(self, url: str, exc: InferenceServerException) -> ReplicaState:
        state = _failed(url, exc)
        if not state.reachable:
            # A gRPC channel backs off reconnecting for up to minutes: a replica that comes (back) up
            # must be seen at the next reconcile, so an unreachable one gets a fresh channel.
            # Other reconciles may be mid-call on the old channel: it is closed with the fleet, not now.
            client = self._clients.pop(url, None)
            if client is not None:
                self._retired.append(client)
        return state

    async def close(self) -> None:
        clients, self._clients = [*self._clients.values(), *self._retired], {}
        self._retired = []
        for client in clients:
            await client.close()


def _failed(url: str, exc: InferenceServerException) -> ReplicaState:
    status = str(exc.status() or "")
    message = str(exc.message() or exc).strip().splitlines()[0][:300] if str(exc.message() or exc).strip() else status
    return ReplicaState(url, ready=False, reachable=status not in _UNREACHABLE, error=message)


def slice_urls(body: Mapping[str, Any], port_name: str) -> list[str]:
    """host:port of the ready endpoints of one EndpointSlice (discovery.k8s.io/v1), on the named port."""
    ports = [p.get("port") for p in body.get("ports") or [] if p.get("name") == port_name and p.get("port")]
    if not ports:
        return []
    urls = []
    for endpoint in body.get("endpoints") or []:
        if (endpoint.get("conditions") or {}).get("ready", True) is False:
            continue
        urls += [f"{address}:{ports[0]}" for address in endpoint.get("addresses") or []]
    return urls
