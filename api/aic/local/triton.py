"""Runs the real ``tritonserver`` shipped in the nvidia-pytriton wheel (python backend only, CPU).

Used by ``aic triton``, ``aic up`` and the test fixtures. The server runs in its own process group so
stopping it also ends its python-backend stubs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import filecmp
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from aic.core import telemetry
from aic.core.settings import TritonSettings
from aic.local.ports import free_port
from aic.modelrepo import layout

logger = logging.getLogger(__name__)

STUB_NAME = "triton_python_backend_stub"
PYTHON_SHM_BYTES = 64 * 1024 * 1024
"""Initial shared memory per python-backend model instance: a batch of 32 images (19 MB) fits at once."""


class TritonStartError(RuntimeError):
    """The local Triton exited or did not become ready in time."""


def pytriton_dir() -> Path:
    """The installed ``pytriton`` package (the ``local`` extra)."""
    import importlib.util

    found = importlib.util.find_spec("pytriton")
    if found is None or not found.submodule_search_locations:
        raise TritonStartError("the local Triton needs the local extra: pip install 'async-image-classifier[local]'")
    return Path(next(iter(found.submodule_search_locations)))


def ensure_python_stub(backend_directory: Path | None = None) -> Path:
    """Put the stub matching this interpreter into ``backends/python/``; return the backend directory.

    The wheel keeps one stub per Python version aside; PyTriton copies the right one at start, and so do
    we: idempotently, and atomically (copy, then rename) so two starting servers never see half a file.
    """
    backends = backend_directory or pytriton_dir() / "tritonserver" / "backends"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    source = pytriton_dir() / "tritonserver" / "python_backend_stubs" / version / STUB_NAME
    target = backends / "python" / STUB_NAME
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return backends
    partial = target.with_name(f".{STUB_NAME}.{os.getpid()}")
    shutil.copy2(source, partial)
    os.replace(partial, target)
    return backends


def server_command(
    settings: TritonSettings,
    *,
    model_control: str = "explicit",
    load_models: list[str] | None = None,
    address: str = "127.0.0.1",
    backend_directory: Path | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start the wheel's ``tritonserver`` for ``settings``.

    ``load_models`` defaults to every model in the repository that has a ``model.json``. Binds to
    loopback unless ``address`` says otherwise.
    """
    root = pytriton_dir()
    server = root / "tritonserver"
    if load_models is None:
        load_models = [spec.name for spec in layout.discover(settings.model_repository)]
    # Servers side by side share /dev/shm; the port in the name also lets tests find the stubs.
    shm_prefix = f"aic_{settings.triton_grpc_port}_{secrets.token_hex(4)}"
    argv = [
        str(server / "bin" / "tritonserver"),
        f"--model-repository={settings.model_repository}",
        f"--backend-directory={backend_directory or server / 'backends'}",
        f"--cache-directory={server / 'caches'}",
        f"--model-control-mode={model_control}",
        *(f"--load-model={name}" for name in (load_models if model_control == "explicit" else [])),
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--exit-timeout-secs=10",
        f"--http-address={address}",
        f"--http-port={settings.triton_http_port}",
        f"--grpc-address={address}",
        f"--grpc-port={settings.triton_grpc_port}",
        f"--metrics-address={address}",
        f"--metrics-port={settings.triton_metrics_port}",
        "--allow-gpu-metrics=false",
        "--allow-sagemaker=false",
        "--allow-vertex-ai=false",
        "--pinned-memory-pool-byte-size=0",  # no CUDA here; pinned memory would only log errors
        f"--backend-config=python,shm-default-byte-size={PYTHON_SHM_BYTES}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        "--log-verbose=0",
        *trace_flags(os.environ),
    ]
    env = dict(os.environ)
    # The stub embeds libpython: this interpreter's, not whichever one the loader would find first.
    libdirs = [str(sysconfig.get_config_var("LIBDIR") or ""), str(root.parent / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = _join_paths(*libdirs, env.get("LD_LIBRARY_PATH", ""))
    # model.py imports numpy and onnxruntime from this environment. The stub ignores PYTHONPATH (seen:
    # isolated interpreter config); it derives sys.prefix from the first `python3` on PATH, so this
    # interpreter's bin directory goes first, as PyTriton does. A virtualenv's pyvenv.cfg then applies.
    env["PATH"] = _join_paths(str(Path(sys.executable).parent), env.get("PATH", ""))
    return argv, env


def trace_flags(env: Mapping[str, str]) -> list[str]:
    """Triton's OpenTelemetry tracing while the ``OTEL_*`` variables ask for traces: every request sampled
    (rate 1; the caller's sampling already chose), spans exported over OTLP/HTTP as service ``triton``. Triton
    continues the ``traceparent`` the dispatcher sends in the gRPC metadata. None otherwise."""
    if not telemetry.configured(env):
        return []
    url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    flags = [
        "--trace-config=mode=opentelemetry",
        "--trace-config=rate=1",
        "--trace-config=level=TIMESTAMPS",
        f"--trace-config=opentelemetry,url={url}",
        "--trace-config=opentelemetry,resource=service.name=triton",
    ]
    if env.get("OTEL_BSP_SCHEDULE_DELAY"):
        flags.append(f"--trace-config=opentelemetry,bsp_schedule_delay={env['OTEL_BSP_SCHEDULE_DELAY']}")
    return flags


def _join_paths(*parts: str) -> str:
    seen: list[str] = []
    for part in (p for chunk in parts for p in chunk.split(os.pathsep)):
        if part and part not in seen:
            seen.append(part)
    return os.pathsep.join(seen)


def on_free_ports(settings: TritonSettings, **changes: Any) -> TritonSettings:
    """``settings`` with fresh loopback ports for HTTP, gRPC and metrics, ``triton_url`` pointing at that gRPC
    port, and any other ``changes`` (for a server of one's own beside others: tests, benches, ``aic up``)."""
    grpc_port = free_port()
    return dataclasses.replace(
        settings,
        triton_url=f"127.0.0.1:{grpc_port}",
        triton_grpc_port=grpc_port,
        triton_http_port=free_port(),
        triton_metrics_port=free_port(),
        **changes,
    )


class LocalTriton:
    """One ``tritonserver`` child process: start, wait until ready, stop (group-wide, no orphans)."""

    def __init__(
        self,
        settings: TritonSettings,
        *,
        load_models: list[str] | None = None,
        log_path: Path | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        self.settings = settings
        self.load_models = load_models
        self.log_path = log_path  # None: the server logs to this process's stdout/stderr
        self.address = address
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def repository(self) -> Path:
        return self.settings.model_repository

    @property
    def grpc_url(self) -> str:
        host = "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address  # noqa: S104 - a comparison
        return f"{host}:{self.settings.triton_grpc_port}"

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address  # noqa: S104 - a comparison
        return f"http://{host}:{self.settings.triton_http_port}"

    def start(self) -> None:
        if self.process is not None:
            raise TritonStartError("already started")
        backends = ensure_python_stub()
        argv, env = server_command(
            self.settings, load_models=self.load_models, address=self.address, backend_directory=backends
        )
        logger.info("starting Triton: %s", " ".join(argv))
        if self.log_path is not None:
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until ``/v2/health/ready`` answers 200 (strict: every loaded model ready)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise TritonStartError(f"Triton exited with {code} before it was ready{self._log_tail()}")
            url = f"{self.http_url}/v2/health/ready"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise TritonStartError(f"Triton not ready after {timeout_s} s{self._log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout_s``; return the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        _signal_group(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            code = process.wait()
        # Stubs outlive a server that crashed; the group still names them.
        _signal_group(process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def run_forever(self) -> int:
        """Run in the foreground until the server exits; SIGINT/SIGTERM stop it. Returns its exit code."""
        self.start()
        assert self.process is not None
        pid = self.process.pid

        def forward(signum: int, _frame: FrameType | None) -> None:
            _signal_group(pid, signal.SIGTERM)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = self.process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            stopped = self.stop()
        return code if stopped is None else stopped

    def __enter__(self) -> LocalTriton:
        self.start()
        try:
            self.wait_ready(self.settings.triton_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "; log tail:\n" + "\n".join(tail)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
