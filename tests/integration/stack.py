"""Real processes for tests: a Redis on a free port (testcontainers' RedisContainer where a container engine
answers, else the local ``redis-server``), and the product's own ``aic api`` / ``aic dispatcher`` processes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from aic.local.ports import free_port


@dataclass
class RedisServer:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make setup installs it)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextmanager
def local_redis() -> Iterator[RedisServer]:
    """The local ``redis-server`` on a free port, append-only, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="aic-redis-") as tmp:
        server = RedisServer(free_port(), Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


REDIS_IMAGE = "redis:7.4-alpine"
"""Redis 7 or newer, as KEDA's stream-lag scaler and the chart need."""


def container_engine() -> bool:
    """Whether a container engine answers (testcontainers would work); ``AIC_TEST_REDIS=local|container``
    decides instead when set."""
    choice = os.environ.get("AIC_TEST_REDIS", "")
    if choice in ("local", "container"):
        return choice == "container"
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@dataclass
class ContainerRedis:
    """A Redis of testcontainers' ``RedisContainer``; the same ``url`` as a ``RedisServer``."""

    url: str


RunningRedis = RedisServer | ContainerRedis
"""What ``redis_server()`` gives: either has a ``url``."""


@contextmanager
def redis_server() -> Iterator[RunningRedis]:
    """A Redis of the suite's own: a container where an engine answers, else the local ``redis-server``."""
    if not container_engine():
        with local_redis() as server:
            yield server
        return
    from testcontainers.redis import RedisContainer

    with RedisContainer(REDIS_IMAGE) as container:
        host, port = container.get_container_host_ip(), container.get_exposed_port(container.port)
        yield ContainerRedis(f"redis://{host}:{port}")


@dataclass
class Service:
    """One `aic <role>` child process with its own environment."""

    role: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="aic-", suffix=".log")[1]))
    umask: int = -1
    """The child's umask; -1 keeps this process's."""

    def start(self) -> Service:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "aic.cli", self.role],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=self.umask,
            )
        return self

    def signal(self, sig: signal.Signals) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.process is None:
            return None
        self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.process.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for_http(url: str, timeout_s: float, service: Service | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service and service.process and service.process.poll() is not None:
            raise RuntimeError(f"{service.role} exited early:\n{service.output()}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not answering; log:\n{service.output() if service else ''}")


def stop_all(services: list[Service], timeout_s: float = 20.0) -> None:
    """Stop several services at once: SIGTERM to all, then wait for each (their shutdowns overlap)."""
    for service in services:
        service.signal(signal.SIGCONT)
        service.signal(signal.SIGTERM)
    for service in services:
        service.stop(timeout_s)


@dataclass
class S3Server:
    """A real S3 API over HTTP: moto's server mode (``ThreadedMotoServer``) on a free loopback port, in this process
    (no container). Stopped and started again on the same port it keeps its buckets and objects, so a test can take
    the object store away from the product's processes for a while."""

    port: int = field(default_factory=free_port)
    bucket: str = "uploads"
    server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def env(self, prefix: str) -> dict[str, str]:
        """What a product process needs to keep its uploads under ``s3://<bucket>/<prefix>`` here: the standard
        ``AWS_*`` variables, the endpoint plain ``http://``."""
        return {
            "OBJECT_STORE_URL": f"s3://{self.bucket}/{prefix}",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }

    def keys(self, prefix: str) -> list[str]:
        """The key of every object under ``prefix/``, without the prefix."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{prefix}/")
        return [item["Key"].removeprefix(f"{prefix}/") for page in pages for item in page.get("Contents", [])]

    def read(self, prefix: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=self.bucket, Key=f"{prefix}/{key}")["Body"].read()
        return body


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server with the ``uploads`` bucket."""
    server = S3Server().start()
    try:
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        server.stop()
