"""Shared pytest fixtures."""

from __future__ import annotations

# ---- BEGIN triton fixtures (owner: model build / local Triton) ---------------------------------------------
from collections.abc import Iterator
from pathlib import Path

import pytest
from aic import settings as aic_settings
from aic.triton_local import LocalTriton, free_port, on_free_ports


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """The wheel's real ``tritonserver`` on free ports, serving the default model; one per session.

    Yields a ``LocalTriton``: ``.grpc_url`` (host:port), ``.http_url``, ``.repository`` (Path) and
    ``.settings``. The model is built once into the project's ``model_repository/`` (git-ignored, cached
    by fingerprint), or into ``MODEL_REPOSITORY`` when that is set.
    """
    # No skips here: without the local Triton the integration suite must fail loudly, not pass empty.
    from aic.modelbuild import ensure_default_model

    base = aic_settings.load(aic_settings.TritonSettings)
    ensure_default_model(base.model_repository, ("python",))
    triton_settings = on_free_ports(base, triton_backends=("python",), triton_timeout_s=120.0)
    log_path: Path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with LocalTriton(triton_settings, log_path=log_path) as server:
        yield server


# ---- END triton fixtures ---------------------------------------------------------------------------------


# ---- BEGIN service stack fixtures: a real redis-server, `aic api` and `aic dispatcher` ----------------------
import asyncio  # noqa: E402
import os  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import httpx  # noqa: E402
import redis as redis_sync  # noqa: E402
from aic import up  # noqa: E402
from stack import RedisServer, Service, redis_server, wait_for_http  # noqa: E402

API_KEY = "acme-test-key-0123456789abcdef"
OTHER_TENANT_KEY = "globex-test-key-0123456789abcdef"
ADMIN_KEY = "ops-admin-key-0123456789abcdef"


@dataclass
class Stack:
    base_url: str
    redis: RedisServer
    api: Service
    dispatcher: Service
    env: dict[str, str]

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def redis_client(self) -> redis_sync.Redis:
        return redis_sync.Redis.from_url(self.redis.url)


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def publish_models(redis_url: str, repository: Path) -> None:
    """Make the repository's models routable, as `aic up` does."""
    asyncio.run(up.publish_models(redis_url, repository))


@pytest.fixture(scope="session")
def stack(redis_srv: RedisServer, triton_server: LocalTriton, webhook_ca: WebhookCA) -> Iterator[Stack]:
    """The product as it runs in production, on this machine: API and one dispatcher as real processes."""
    publish_models(redis_srv.url, triton_server.repository)
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_srv.url,
        "TRITON_URL": triton_server.grpc_url,
        "MODEL_REPOSITORY": str(triton_server.repository),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_KEYS": f"acme:{API_KEY},globex:{OTHER_TENANT_KEY},ops:{ADMIN_KEY}:admin",
        "SECRET_KEY": "test-secret-key-for-jwt-signing-0123456789",
        "RATE_LIMIT_PER_MINUTE": "0",  # limits are tested on their own API process (test_api_limits.py)
        "LOG_LEVEL": "INFO",
        **webhook_ca.env,
    }
    api = Service("api", env).start()
    dispatcher = Service("dispatcher", env).start()
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_for_http(f"{base}/health", 60, api)
        yield Stack(base, redis_srv, api, dispatcher, env)
    finally:
        api.stop()
        dispatcher.stop()


# ---- END service stack fixtures ------------------------------------------------------------------------------


# ---- BEGIN webhook fixtures (owner: webhooks) ----------------------------------------------------------------
import trustme  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402


@dataclass
class WebhookCA:
    ca: trustme.CA
    bundle: Path
    """PEM of the CA, given to the sender as WEBHOOK_CA_BUNDLE."""

    @property
    def env(self) -> dict[str, str]:
        """What the stack's dispatcher needs to deliver to the test receiver, with a tiny retry schedule."""
        return {
            "WEBHOOK_ALLOW_LOOPBACK": "true",
            "WEBHOOK_CA_BUNDLE": str(self.bundle),
            "WEBHOOK_MAX_ATTEMPTS": "3",
            "WEBHOOK_BACKOFF_BASE_S": "0.05",
            "WEBHOOK_BACKOFF_FACTOR": "2",
            "WEBHOOK_POLL_MS": "50",
        }


@pytest.fixture(scope="session")
def webhook_ca(tmp_path_factory: pytest.TempPathFactory) -> WebhookCA:
    ca = trustme.CA()
    bundle = tmp_path_factory.mktemp("webhook-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return WebhookCA(ca, bundle)


@pytest.fixture(scope="session")
def webhook_receiver(webhook_ca: WebhookCA) -> Iterator[Receiver]:
    receiver = Receiver(webhook_ca.ca)
    try:
        yield receiver
    finally:
        receiver.close()


# ---- END webhook fixtures ------------------------------------------------------------------------------------
