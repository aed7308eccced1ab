"""Fixtures of the integration tests: the local Triton, a Redis, the product's API and dispatcher as real
processes (the shared ``stack``, and a ``quiet_stack`` whose queue nothing consumes until a test starts a
dispatcher of its own), and an HTTPS webhook receiver with its CA.

Uploads: the shared stacks keep them in Redis (``aic up``'s default). ``s3_stack`` / ``s3_quiet_stack`` are the same
stacks with ``OBJECT_STORE_URL`` on moto's S3 server (``s3``); ``any_stack`` / ``any_quiet_stack`` run a test once
against each, for the representative tests of each suite (submit/poll/result, cancel, dead-letter retry, webhooks;
the fault suite switches its own rig, ``uploads`` in test_faults.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
import trustme
from aic.core import settings as aic_settings
from aic.core.settings import RedisSettings
from aic.local import up
from aic.local.modelbuild import ensure_default_model
from aic.local.ports import free_port
from aic.local.triton import LocalTriton, on_free_ports
from aic.modelrepo import layout
from aic.store.connection import connect, is_cluster
from aic.store.routes import RouteStore
from image_server import ImageServer
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis_cluster import RedisCluster
from stack import ContainerRedis, RunningRedis, S3Server, Service, redis_server, s3_server, stop_all, wait_for_http
from webhook_receiver import Receiver

API_KEY = "acme-test-key-0123456789abcdef"
OTHER_TENANT_KEY = "globex-test-key-0123456789abcdef"
ADMIN_KEY = "ops-admin-key-0123456789abcdef"


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """The wheel's real ``tritonserver`` on free ports, serving the default model; one per session.

    The model is built once into the project's ``model_repository/`` (git-ignored, cached by fingerprint), or
    into ``MODEL_REPOSITORY`` when that is set. No skips: without the local Triton the suite fails loudly.
    """
    base = aic_settings.load(aic_settings.TritonSettings)
    ensure_default_model(base.model_repository, ("python",))
    triton_settings = on_free_ports(base, triton_backends=("python",), triton_timeout_s=120.0)
    log_path: Path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with LocalTriton(triton_settings, log_path=log_path) as server:
        yield server


def publish_models(redis_url: str, repository: Path, *, cluster: bool = False) -> None:
    """Make the repository's models routable, as `aic up` does; with ``cluster``, on a Redis Cluster (as the operator
    or `aic models apply` with ``REDIS_CLUSTER=true`` do: `aic up` itself never runs on one)."""
    if not cluster:
        asyncio.run(up.publish_models(redis_url, repository))
        return

    async def publish() -> None:
        redis = connect(RedisSettings(redis_url=redis_url, redis_cluster=True))
        try:
            routes = RouteStore(redis)
            for spec in layout.discover(repository):
                await routes.publish(spec)
        finally:
            await redis.aclose()

    asyncio.run(publish())


@dataclass(frozen=True)
class RedisTarget:
    """Where a store test runs: a standalone Redis of its module, or the session's Redis Cluster (16 queue shards)."""

    url: str
    cluster: bool
    flush: Callable[[], None]

    @property
    def settings(self) -> RedisSettings:
        return RedisSettings(redis_url=self.url, redis_cluster=self.cluster)

    def connect(self, *, blocking_reads: bool = False) -> Redis:
        return connect(self.settings, blocking_reads=blocking_reads)


async def on_every_primary(redis: Redis, *command: str) -> Any:
    """One command on every primary of a cluster, replies merged (the async cluster client sends KEYS and SCRIPT
    FLUSH to one random node), or on the standalone server."""
    if is_cluster(redis):
        return await redis.execute_command(*command, target_nodes=AsyncRedisCluster.PRIMARIES)  # type: ignore[no-untyped-call]
    return await redis.execute_command(*command)  # type: ignore[no-untyped-call]


@pytest.fixture(params=["standalone", "cluster"])
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    """Each store test once against a standalone Redis (the module's own) and once against the session's 3-primary
    Redis Cluster; emptied before the test either way."""
    if request.param == "standalone":
        server: RunningRedis = request.getfixturevalue("own_redis")
        target = RedisTarget(server.url, False, lambda: redis_sync.Redis.from_url(server.url).flushall())
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        target = RedisTarget(cluster.url, True, cluster.flushall)
    target.flush()
    return target


@dataclass
class Stack:
    """The product as it runs in production, on this machine: an API and (unless quiet) one dispatcher."""

    base_url: str
    redis: RunningRedis
    api: Service
    dispatcher: Service | None
    env: dict[str, str]
    s3: S3Server | None = None
    """Where the stack keeps its uploads (``s3_prefix`` in its bucket); None: in Redis."""
    s3_prefix: str = ""

    def uploads_stored(self) -> list[str]:
        """The upload objects the stack keeps now (``<tenant>/<job id>``); none with uploads in Redis."""
        return self.s3.keys(self.s3_prefix) if self.s3 is not None else []

    def upload_kept(self, job_id: str) -> bool:
        """Whether the job's upload object is stored (always False with uploads in Redis)."""
        return any(key.endswith(f"/{job_id}") for key in self.uploads_stored())

    def wait_upload_deleted(self, job_id: str, timeout_s: float = 60) -> None:
        """Until the job's upload object is gone: it is deleted right after the step that ended the job."""
        deadline = time.monotonic() + timeout_s
        while self.upload_kept(job_id):
            assert time.monotonic() < deadline, f"the upload of {job_id} was never deleted"
            time.sleep(0.05)

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def redis_client(self) -> redis_sync.Redis:
        return redis_sync.Redis.from_url(self.redis.url)

    @contextmanager
    def extra_api(self, **env: str) -> Iterator[tuple[Service, str]]:
        """An `aic api` of the caller's own on this stack's Redis, with ``env`` on top, once it answers, and its
        root URL (no prefix); stopped when the block ends."""
        port = free_port()
        service = Service("api", {**self.env, "API_PORT": str(port), **env}).start()
        try:
            root = f"http://127.0.0.1:{port}"
            wait_for_http(f"{root}/livez", 60, service)
            yield service, root
        finally:
            service.stop()

    @contextmanager
    def own_dispatcher(self) -> Iterator[Service]:
        """A dispatcher of the caller's own on this stack's queue, stopped (SIGTERM) when the block ends."""
        service = Service("dispatcher", self.env).start()
        try:
            yield service
        finally:
            service.stop()


@pytest.fixture(scope="session")
def webhook_ca(tmp_path_factory: pytest.TempPathFactory) -> WebhookCA:
    ca = trustme.CA()
    bundle = tmp_path_factory.mktemp("webhook-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return WebhookCA(ca, bundle)


@dataclass
class WebhookCA:
    ca: trustme.CA
    bundle: Path
    """PEM of the CA, given to the sender as WEBHOOK_CA_BUNDLE."""

    @property
    def env(self) -> dict[str, str]:
        """What a dispatcher needs to deliver to the test receiver, with a tiny retry schedule."""
        return {
            "WEBHOOK_ALLOW_LOOPBACK": "true",
            "WEBHOOK_CA_BUNDLE": str(self.bundle),
            "WEBHOOK_MAX_ATTEMPTS": "3",
            "WEBHOOK_BACKOFF_BASE_S": "0.05",
            "WEBHOOK_BACKOFF_FACTOR": "2",
            "WEBHOOK_POLL_MS": "50",
            # images by URL come from the test's own HTTPS server, with the same CA
            "IMAGE_URL_ALLOW_LOOPBACK": "true",
            "IMAGE_URL_CA_BUNDLE": str(self.bundle),
        }


@pytest.fixture(scope="session")
def webhook_receiver(webhook_ca: WebhookCA) -> Iterator[Receiver]:
    receiver = Receiver(webhook_ca.ca)
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture(scope="session")
def image_server(webhook_ca: WebhookCA) -> Iterator[ImageServer]:
    server = ImageServer(webhook_ca.ca)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def running_stack(
    triton: LocalTriton,
    webhook_ca: WebhookCA,
    *,
    with_dispatcher: bool,
    cluster: RedisCluster | None = None,
    **extra_env: str,
) -> Iterator[Stack]:
    """A Redis of its own with the repository's models routed, an `aic api` and, optionally, a dispatcher. With
    ``cluster``: on that Redis Cluster instead (``REDIS_CLUSTER=true``, 16 queue shards), emptied first."""
    with contextlib.ExitStack() as started:
        if cluster is None:
            redis_srv: RunningRedis = started.enter_context(redis_server())
        else:
            cluster.flushall()
            redis_srv = ContainerRedis(cluster.url)  # only its url is used
        publish_models(redis_srv.url, triton.repository, cluster=cluster is not None)
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_srv.url,
            "REDIS_CLUSTER": "true" if cluster is not None else "false",
            "TRITON_URL": triton.grpc_url,
            "MODEL_REPOSITORY": str(triton.repository),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "API_KEYS": f"acme:{API_KEY},globex:{OTHER_TENANT_KEY},ops:{ADMIN_KEY}:admin",
            "SECRET_KEY": "test-secret-key-for-jwt-signing-0123456789",
            "RATE_LIMIT_PER_MINUTE": "0",  # limits are tested on their own API process (test_api_limits.py)
            "LOG_LEVEL": "INFO",
            "METRICS_PORT": "0",  # dispatchers side by side would share one port; test_observability sets its own
            **webhook_ca.env,
            **extra_env,
        }
        api = Service("api", env).start()
        dispatcher = Service("dispatcher", env).start() if with_dispatcher else None
        base = f"http://127.0.0.1:{port}/api/v1"
        try:
            wait_for_http(f"{base}/health", 60, api)
            yield Stack(base, redis_srv, api, dispatcher, env)
        finally:
            stop_all([api] if dispatcher is None else [api, dispatcher])


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RunningRedis]:
    """A Redis for one test module alone (its keys, its consumer groups), started and stopped with it."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 primaries (no replicas) of real ``redis-server`` processes, one per session: tests keep
    their keys apart (or ``flushall()``) and never kill its nodes."""
    with RedisCluster.start(primaries=3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def redis_cluster_ha() -> Iterator[RedisCluster]:
    """3 primaries with a replica each, for one test module: its tests may SIGKILL a primary (``kill`` then
    ``wait_failover``)."""
    with RedisCluster.start(primaries=3, replicas_per_primary=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def stack(triton_server: LocalTriton, webhook_ca: WebhookCA) -> Iterator[Stack]:
    """The shared stack: API and one dispatcher. Tests never stop or freeze its dispatcher."""
    with running_stack(triton_server, webhook_ca, with_dispatcher=True) as running:
        yield running


@pytest.fixture(scope="session")
def quiet_stack(triton_server: LocalTriton, webhook_ca: WebhookCA) -> Iterator[Stack]:
    """An API whose queue no dispatcher reads: jobs stay pending until a test starts ``own_dispatcher()``."""
    with running_stack(triton_server, webhook_ca, with_dispatcher=False) as running:
        yield running


@pytest.fixture(scope="session")
def cluster_quiet_stack(triton_server: LocalTriton, webhook_ca: WebhookCA) -> Iterator[Stack]:
    """``quiet_stack`` on a 3-primary Redis Cluster of its own (``REDIS_CLUSTER=true``, 16 queue shards; not the
    session's ``redis_cluster``, which store tests flush): an API whose queue no dispatcher reads until a test starts
    ``own_dispatcher()``. Tests on it follow their own jobs (sharded pub/sub has no pattern subscription:
    ``EventRecorder.follow``)."""
    with (
        RedisCluster.start(primaries=3) as cluster,
        running_stack(triton_server, webhook_ca, with_dispatcher=False, cluster=cluster) as running,
    ):
        yield running


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3 API on a free port, one per session; each user keeps its uploads under a prefix of its own."""
    with s3_server() as server:
        yield server


@contextmanager
def s3_running_stack(
    triton: LocalTriton, webhook_ca: WebhookCA, s3: S3Server, prefix: str, *, with_dispatcher: bool
) -> Iterator[Stack]:
    with running_stack(triton, webhook_ca, with_dispatcher=with_dispatcher, **s3.env(prefix)) as running:
        running.s3, running.s3_prefix = s3, prefix
        yield running


@pytest.fixture(scope="session")
def s3_stack(triton_server: LocalTriton, webhook_ca: WebhookCA, s3: S3Server) -> Iterator[Stack]:
    """``stack`` with its uploads in S3 (moto)."""
    with s3_running_stack(triton_server, webhook_ca, s3, "stack", with_dispatcher=True) as running:
        yield running


@pytest.fixture(scope="session")
def s3_quiet_stack(triton_server: LocalTriton, webhook_ca: WebhookCA, s3: S3Server) -> Iterator[Stack]:
    """``quiet_stack`` with its uploads in S3 (moto)."""
    with s3_running_stack(triton_server, webhook_ca, s3, "quiet", with_dispatcher=False) as running:
        yield running


@pytest.fixture(params=["redis", "s3"])
def any_stack(request: pytest.FixtureRequest) -> Stack:
    """The shared stack with its uploads in Redis, then in S3."""
    return request.getfixturevalue("stack" if request.param == "redis" else "s3_stack")  # type: ignore[no-any-return]


@pytest.fixture(params=["redis", "s3"])
def any_quiet_stack(request: pytest.FixtureRequest) -> Stack:
    """The quiet stack with its uploads in Redis, then in S3."""
    return request.getfixturevalue("quiet_stack" if request.param == "redis" else "s3_quiet_stack")  # type: ignore[no-any-return]
