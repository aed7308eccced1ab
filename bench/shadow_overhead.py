"""What a shadow costs the clients: job latency with a 100 % shadow against none, alternating, in one run.

    .venv/bin/python bench/shadow_overhead.py [--jobs 120] [--clients 4] [--rounds 3]

A redis-server, the wheel's Triton, `aic api` and one `aic dispatcher` on this machine; the default model under
alias `bench` (`aic models apply`), and a second copy of it applied with `traffic.shadow.percent` 100 or 0 in
alternate rounds. Each client submits the cat photo with `Prefer: wait=60` and times the answer. Also times
`Versions.answered()`, the only work the shadow adds to the dispatcher's loop before it takes the next batch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-shadow-key-0123456789abcdef"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=120, help="jobs per round")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind, alternating")
    return parser.parse_args()


def manifest(folder: Path, name: str, shadow: float | None) -> Path:
    spec = yaml.safe_load((ROOT / "operator" / "samples" / "efficientnet-lite0.yaml").read_text())
    spec["metadata"] = {"name": name}
    spec["spec"]["aliases"] = ["bench"]
    spec["spec"]["source"]["sha256"] = _built_sha256()
    spec["spec"]["labels"].pop("sha256", None)
    if shadow is not None:
        spec["spec"]["traffic"] = {"weight": 100, "shadow": {"percent": shadow}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _built_sha256() -> str:
    from aic.core import settings
    from aic.modelrepo import layout

    return layout.load(settings.load(settings.TritonSettings).model_repository / "efficientnet-lite0").sha256


async def round_of(url: str, jobs: int, clients: int, photo: bytes) -> list[float]:
    took: list[float] = []
    queue = list(range(jobs))

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            began = time.perf_counter()
            files = {"file": ("cat.jpg", photo, "image/jpeg")}
            response = await http.post("/classify", data={"model_version": "bench"}, files=files)
            body = response.json()
            assert body.get("status") == "completed", body
            took.append(time.perf_counter() - began)

    headers = {"X-API-Key": KEY, "Prefer": "wait=60"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return took


def answered_cost_us(shadow: bool = True) -> float:
    """Mean time of ``Versions.answered()`` for a batch of 8, with a 100 % shadow rule (its tasks not run) or none
    (what every batch pays for the evidence counts)."""
    import numpy as np
    from aic.dispatch.versions import Rule, Served, Versions, VersionSettings
    from aic.local.modelbuild import default_spec
    from aic.triton.topk import top_k

    spec = default_spec()
    predictions = top_k(np.random.default_rng(0).normal(size=(8, 1000)).astype(np.float32), spec)

    async def measure() -> float:
        versions = Versions(None, None, None, None, VersionSettings(shadow_max_in_flight=10**9))  # type: ignore[arg-type]
        versions.rules = [Rule("shadow", "shadow", 100, frozenset({"latest"}))] if shadow else []
        jobs = [Served(f"job-{i}", "latest", b"", None, p) for i, p in enumerate(predictions)]
        n = 2000
        began = time.perf_counter()
        for _ in range(n):
            versions.answered(spec, jobs, 0.02)
        spent = (time.perf_counter() - began) / n * 1e6
        for task in versions.tasks:
            task.cancel()
        await asyncio.gather(*versions.tasks, return_exceptions=True)
        return spent

    return asyncio.run(measure())


def main() -> int:
    args = arguments()
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    sys.path.insert(0, str(ROOT / "tests"))
    from aic.core import settings
    from aic.local.modelbuild import ensure_default_model
    from aic.local.ports import free_port
    from aic.local.triton import LocalTriton, on_free_ports
    from helpers import jpeg
    from stack import Service, redis_server, stop_all, wait_for_http

    built = ensure_default_model(settings.load(settings.TritonSettings).model_repository, ("python",))
    work = Path(tempfile.mkdtemp(prefix="aic-shadow-bench-"))
    claim = work / "pvc" / "models" / "efficientnet-lite0"
    (claim / "1").mkdir(parents=True)
    shutil.copyfile(built / "1" / "model.onnx", claim / "1" / "model.onnx")
    shutil.copyfile(built / "labels.txt", claim / "labels.txt")
    triton_settings = on_free_ports(
        settings.load(settings.TritonSettings),
        model_repository=work / "repository",
        triton_backends=("python",),
        triton_timeout_s=120.0,
    )
    (work / "repository").mkdir()
    results: dict[str, list[float]] = {"none": [], "shadow 100 %": []}
    with redis_server() as redis, LocalTriton(triton_settings, load_models=[], log_path=work / "triton.log") as triton:
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis.url,
            "TRITON_URL": triton.grpc_url,
            "TRITON_BACKENDS": "python",
            "MODEL_REPOSITORY": str(triton.repository),
            "PVC_MOUNT_ROOT": str(work / "pvc"),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "API_KEYS": f"bench:{KEY}",
            "RATE_LIMIT_PER_MINUTE": "0",
            "METRICS_PORT": "0",
            "LOG_LEVEL": "WARNING",
        }

        def apply(path: Path) -> None:
            cli = [sys.executable, "-m", "aic.cli", "models", "apply", "-f", str(path)]
            subprocess.run(cli, env=env, check=True, capture_output=True)

        apply(manifest(work, "bench-v1", None))
        services = [Service("api", env).start(), Service("dispatcher", env).start()]
        try:
            wait_for_http(f"http://127.0.0.1:{port}/api/v1/health", 60, services[0])
            url, photo = f"http://127.0.0.1:{port}/api/v1", jpeg()
            asyncio.run(round_of(url, 20, args.clients, photo))  # warm up
            for _ in range(args.rounds):
                for kind, percent in (("none", 0.0), ("shadow 100 %", 100.0)):
                    apply(manifest(work, "bench-shadow", percent))
                    time.sleep(2)  # dispatchers re-read the comparisons every EVIDENCE_FLUSH_S (1 s)
                    began = time.perf_counter()
                    took = asyncio.run(round_of(url, args.jobs, args.clients, photo))
                    results[kind] += took
                    rate = len(took) / (time.perf_counter() - began)
                    print(f"{kind:>13}: p50 {_ms(took, 50)} ms, p95 {_ms(took, 95)} ms, {rate:.1f} jobs/s")
        finally:
            stop_all(services)
    shutil.rmtree(work, ignore_errors=True)
    for kind, took in results.items():
        print(f"all {kind:>13}: {len(took)} jobs, p50 {_ms(took, 50)} ms, p95 {_ms(took, 95)} ms")
    ratio = statistics.median(results["shadow 100 %"]) / statistics.median(results["none"])
    print(f"median latency with a 100 % shadow / without: {ratio:.2f}")
    print(f"Versions.answered() per batch of 8 with a shadow rule: {answered_cost_us():.1f} us")
    print(f"Versions.answered() per batch of 8 without: {answered_cost_us(shadow=False):.1f} us")
    return 0


def _ms(values: list[float], percentile: int) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * percentile / 100))] * 1000:.0f}"


if __name__ == "__main__":
    sys.exit(main())
