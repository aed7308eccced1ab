"""The tests' one helpers module: real photos, submitting, waiting for a job, recording every job event, reading
SSE and WebSocket streams. Nothing here starts a server (``integration/stack.py`` does)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from aic.core.settings import CLUSTER_DEFAULT_SHARDS
from aic.store import keys
from PIL import Image
from skimage import data as skdata

TERMINAL = {"completed", "failed", "cancelled"}


def jpeg(pixels: np.ndarray | None = None, quality: int = 95) -> bytes:
    """A JPEG of ``pixels`` (default: scikit-image's chelsea, an "Egyptian cat")."""
    buf = io.BytesIO()
    Image.fromarray(skdata.chelsea() if pixels is None else pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def submit(
    client: httpx.Client, content: bytes, name: str = "photo.jpg", headers: dict[str, str] | None = None, **form: str
) -> httpx.Response:
    """``POST /classify`` with one file and the given form fields."""
    return client.post("/classify", files={"file": (name, content, "image/jpeg")}, data=form, headers=headers)


def wait_done(client: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """The job's status once it reached a terminal state (polling ``GET /status``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/status/{job_id}").json()
        if body["status"] in TERMINAL:
            return body
        time.sleep(0.05)
    raise TimeoutError(job_id)


class EventRecorder:
    """Every event published for any job from now on (a pattern subscription made before the first submit, so no
    status change is missed). Use as a context manager, or call ``close()``. If Redis goes away the subscription
    is made again once it is back (``reconnects`` counts it); what was published meanwhile is missed."""

    def __init__(self, redis_url: str, *, cluster: bool = False) -> None:
        """``cluster``: on a Redis Cluster (16 queue shards) events go through sharded pub/sub, which has no pattern
        subscription: the recorder hears only the jobs it is told to ``follow``."""
        self.redis_url = redis_url
        self.cluster = cluster
        self.names = keys.Keyspace(shards=CLUSTER_DEFAULT_SHARDS, cluster=True) if cluster else keys.LEGACY
        self._lock = threading.Lock()
        self.pubsub = self._subscribe()
        self.events: list[dict[str, Any]] = []
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _subscribe(self) -> Any:
        if self.cluster:  # redis-py's ClusterPubSub: one connection per node a channel lives on, resubscribing itself
            return redis.RedisCluster.from_url(self.redis_url).pubsub()
        pubsub = redis.Redis.from_url(self.redis_url).pubsub()
        pubsub.psubscribe(keys.LEGACY.job_events_pattern)
        pubsub.get_message(timeout=2)  # the subscribe confirmation
        return pubsub

    def follow(self, job_ids: list[str]) -> None:
        """Record the events of these jobs from now on (on a cluster the only ones recorded; standalone, every job's
        are anyway). Call it before anything can move them: on a quiet stack, before a dispatcher starts."""
        if not self.cluster:
            return
        with self._lock:
            for job_id in job_ids:
                self.pubsub.ssubscribe(self.names.job_events(job_id))

    def _next(self) -> dict[str, Any] | None:
        with self._lock:
            if self.cluster:
                message: dict[str, Any] | None = self.pubsub.get_sharded_message(timeout=0.0)
            else:
                message = self.pubsub.get_message(timeout=0.1)
        if self.cluster and message is None:
            time.sleep(0.01)
        return message

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._next()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self.pubsub.close()
                while not self._stop.is_set():
                    time.sleep(0.2)
                    try:
                        self.pubsub = self._subscribe()
                        self.reconnects += 1
                        break
                    except (redis.ConnectionError, redis.TimeoutError, OSError):
                        continue
                continue
            if message and message["type"] in ("pmessage", "smessage"):
                self.events.append(json.loads(message["data"]))

    def of(self, job_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["job_id"] == job_id]

    def terminal_counts(self, job_ids: list[str]) -> Counter[str]:
        wanted = set(job_ids)
        return Counter(e["job_id"] for e in self.events if e["job_id"] in wanted and e["status"] in TERMINAL)

    def completion_order(self) -> list[str]:
        return [e["job_id"] for e in self.events if e["status"] == "completed"]

    def close(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        return self.events

    def __enter__(self) -> EventRecorder:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream response, as a real SSE client reads them."""
    event, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def ws_url(base_url: str, job_id: str) -> str:
    return f"{base_url.replace('http://', 'ws://')}/status/{job_id}/ws"


def emitted_metrics(*modules: Any) -> set[str]:
    """The sample names (``_total`` of a counter; ``_bucket``/``_sum``/``_count`` of a histogram) of the metrics
    the given modules define: read from the code, so the tests and the chart's queries follow what it emits."""
    from prometheus_client.metrics import MetricWrapperBase

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names: set[str] = set()
    for module in modules:
        for metric in (v for v in vars(module).values() if isinstance(v, MetricWrapperBase)):
            for family in metric.describe():
                names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def service_metrics() -> dict[str, set[str]]:
    """Every metric of the API, the dispatcher (its webhook worker's included) and the operator, by process.

    The API's request metrics come from Litestar's Prometheus plugin, which makes them on the first request: their
    names follow from the prefix it is given (``aic.http.observe.prometheus``)."""
    from aic.dispatch import metrics as dispatch_metrics
    from aic.dispatch import observe_versions
    from aic.http import observe
    from aic.webhooks import metrics as webhook_metrics
    from aic_operator.metrics import OperatorMetrics
    from prometheus_client import CollectorRegistry

    prefix = observe.prometheus("x").prefix
    http = {f"{prefix}_requests_total", f"{prefix}_requests_in_progress", f"{prefix}_requests_error_total"}
    http |= {f"{prefix}_request_duration_seconds{s}" for s in ("_bucket", "_sum", "_count")}
    operator = CollectorRegistry()
    OperatorMetrics(operator)
    operator_names = {
        s.name for family in operator.collect() for s in family.samples if not s.name.endswith("_created")
    }
    return {
        "api": http | emitted_metrics(observe),
        "dispatcher": emitted_metrics(dispatch_metrics, webhook_metrics, observe_versions),
        "operator": operator_names,
    }


OTHER_UID = 10001
"""A reader that is not the writer: the chart's uid (Triton there runs as yet another one), here a user who owns
nothing and shares no group with root."""


def read_as(uid: int, root: Path) -> subprocess.CompletedProcess[str]:
    """List every folder under ``root`` and read every file, as ``uid`` with no supplementary group. The process
    starts in ``root`` (chdir as root, then setuid: CPython's order), as a container starts on a volume mounted there,
    so only ``root`` and what it holds must let it in, not the folders above. Needs root."""
    return subprocess.run(
        ["find", ".", "-type", "f", "-exec", "cat", "{}", "+"],
        cwd=root,
        user=uid,
        group=uid,
        extra_groups=[],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )


def assert_readable_by_another_user(root: Path) -> None:
    """Every folder under ``root`` (itself included) is 0755, every file 0644, and another uid reads them all."""
    found = [root, *root.rglob("*")]
    wrong = {
        str(path.relative_to(root)): oct(stat.S_IMODE(path.lstat().st_mode))
        for path in found
        if stat.S_IMODE(path.lstat().st_mode) != (0o755 if path.is_dir() else 0o644)
    }
    assert wrong == {}, f"modes under {root}: {wrong}"
    assert any(path.is_file() for path in found), f"nothing to read under {root}"
    if os.geteuid() != 0:
        pytest.skip("reading as another uid needs root (the tests run as root); the modes were checked")
    read = read_as(OTHER_UID, root)
    # Judged by find's exit status and its own and cat's complaints, not by an empty stderr: a setuid child is forked
    # without vfork, so gRPC's fork handlers (this process has tritonclient's threads) may write to the child's stderr
    # before it execs ("Epoll1Poller ... epoll_wait error"), seen once in a fresh-clone run on a loaded machine.
    refused = [line for line in read.stderr.splitlines() if line.startswith(("find:", "cat:"))]
    assert (read.returncode, refused) == (0, []), f"uid {OTHER_UID} cannot read {root}: {read.stderr}"
