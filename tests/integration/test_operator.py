"""The ModelVersion operator for real: `aic operator` (kopf) against kmock's Kubernetes emulator, its own local
Triton (explicit model control) over a temporary repository, its own redis-server, and for the canary the
product's own `aic api` and `aic dispatcher` processes classifying real images."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import kmock
import pytest
import pytest_asyncio
import redis as redis_sync
import tritonclient.grpc.aio as grpcclient
import yaml
from aic.core import settings
from aic.local.modelbuild import ensure_default_model
from aic.local.ports import free_port
from aic.local.triton import LocalTriton, on_free_ports
from aic.modelrepo import layout
from aic.store import keys
from aic_operator.metrics import ERROR_KINDS
from aic_operator.spec import parse
from helpers import assert_readable_by_another_user, jpeg
from prometheus_client.parser import text_string_to_metric_families
from redis_cluster import RedisCluster
from skimage import data as skdata
from stack import RunningRedis, Service, stop_all, wait_for_http

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "operator" / "samples" / "efficientnet-lite0.yaml").read_text())
MV = "serving.aic.dev/v1alpha1/modelversions"
SLICES = "discovery.k8s.io/v1/endpointslices"
BASE = "/apis/serving.aic.dev/v1alpha1/namespaces/default/modelversions"
API_KEY = "ops-test-key-0123456789abcdef"
NO_RATE_LIMIT = {"RATE_LIMIT_PER_MINUTE": "1000000", "RATE_LIMIT_BURST": "100000"}  # we poll job status often
LABELS_MAX_BYTES = 64 * 1024  # the sample's 1,000 names are 10 KB
T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclasses.dataclass
class Cluster:
    k8s: httpx.AsyncClient
    triton: grpcclient.InferenceServerClient
    repository: Path
    redis: redis_sync.Redis
    env: dict[str, str]
    operator: Service

    async def get(self, name: str) -> dict[str, Any] | None:
        response = await self.k8s.get(f"{BASE}/{name}")
        return None if response.status_code == 404 else dict(response.json())

    async def create(self, name: str, spec: dict[str, Any]) -> None:
        body = {"apiVersion": "serving.aic.dev/v1alpha1", "kind": "ModelVersion", "spec": spec}
        # As the API server would set them: kopf reads the generation, json-patches against resourceVersion and
        # keeps its per-object memory (timers included) by uid, which kmock does not assign: without one, every
        # object shares one memory and a timer can patch one object's status onto another.
        body["metadata"] = {
            "name": name,
            "namespace": "default",
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "resourceVersion": "1",
        }
        (await self.k8s.post(BASE, json=body)).raise_for_status()

    async def sample_served(self) -> str:
        """The sample's name, once it is served (applied here if an earlier test did not)."""
        name = str(SAMPLE["metadata"]["name"])
        if await self.get(name) is None:
            await self.create(name, copy.deepcopy(SAMPLE["spec"]))
        await self.status(name, lambda s: s.get("phase") == "Ready")
        return name

    async def patch_spec(self, name: str, spec: dict[str, Any]) -> int:
        """A spec change as the API server makes it: merged, and the generation bumped."""
        current = await self.get(name)
        assert current is not None
        generation = int(current["metadata"]["generation"]) + 1
        patch = {"spec": spec, "metadata": {"generation": generation}}
        headers = {"Content-Type": "application/merge-patch+json"}
        (await self.k8s.patch(f"{BASE}/{name}", json=patch, headers=headers)).raise_for_status()
        return generation

    async def status(
        self, name: str, until: Callable[[dict[str, Any]], bool], timeout_s: float = 120
    ) -> dict[str, Any]:
        seen: list[dict[str, Any]] = [{}]

        async def check() -> dict[str, Any] | None:
            body = await self.get(name)
            seen[0] = (body or {}).get("status") or {}
            return seen[0] if until(seen[0]) else None

        return await eventually(
            check,
            timeout_s,
            lambda: f"{name} status {seen[0]}; log {self.operator.log}: {self.operator.output()[-1500:]}",
        )

    async def metrics(self) -> Samples:
        """The operator's /metrics by (sample name, labels), once it answers (a test may just have restarted it)."""
        url = f"http://127.0.0.1:{self.env['METRICS_PORT']}/metrics"

        async def scrape() -> str | None:
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    response = await client.get(url)
            except httpx.TransportError:
                return None
            return response.text if response.status_code == 200 else None

        text = await eventually(scrape, 60, lambda: f"{url} not answering; log: {self.operator.output()[-1500:]}")
        families = text_string_to_metric_families(text)
        return {(s.name, frozenset(s.labels.items())): s.value for family in families for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(check: Callable[[], Awaitable[T | None]], timeout_s: float, why: Callable[[], str]) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        result = await check()
        if result is not None and result is not False:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"condition not met in {timeout_s} s; {why()}")


@pytest.fixture(scope="module")
def pvc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'models' claim holding the default model's artifacts, as the samples expect."""
    base = settings.load(settings.TritonSettings)
    built = ensure_default_model(base.model_repository, ("python",))
    root = tmp_path_factory.mktemp("pvc")
    claim = root / "models" / "efficientnet-lite0"
    (claim / "1").mkdir(parents=True)
    shutil.copyfile(built / "1" / "model.onnx", claim / "1" / "model.onnx")
    shutil.copyfile(built / "labels.txt", claim / "labels.txt")
    # The sample names the checksum of the default build; a build is byte-identical for the same inputs on one
    # machine, but torch's export has given other bytes elsewhere, so the tests use what this machine built.
    SAMPLE["spec"]["source"]["sha256"] = layout.load(built).sha256
    bad = root / "models" / "bad"  # labels files the bad-spec cases name
    bad.mkdir()
    (bad / "latin1.txt").write_bytes("\n".join(["caf\u00e9"] * 1000).encode("latin-1"))
    (bad / "huge.txt").write_text("\n".join(f"class-{i}-" + "x" * 100 for i in range(1000)))  # 110 KB
    (bad / "999.txt").write_text("\n".join(f"class-{i}" for i in range(999)))
    return root


def labels(file: str) -> dict[str, Any]:
    return {"labels": {"uri": f"pvc://models/bad/{file}", "sha256": ""}}


@pytest.fixture(scope="module")
def own_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """A Triton of our own over an empty repository: the operator loads and unloads in it freely."""
    repository = tmp_path_factory.mktemp("repository")
    triton_settings = on_free_ports(
        settings.load(settings.TritonSettings),
        model_repository=repository,
        triton_backends=("python",),
        triton_timeout_s=120.0,
    )
    log_path = tmp_path_factory.mktemp("triton-log") / "tritonserver.log"
    with LocalTriton(triton_settings, load_models=[], log_path=log_path) as server:
        yield server


def emulator() -> kmock.KubernetesEmulator:
    k8s = kmock.KubernetesEmulator()
    info = kmock.ResourceInfo
    k8s.resources[MV] = info(kind="ModelVersion", namespaced=True, shortnames={"mv"}, subresources={"status"})
    k8s.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", namespaced=False
    )
    k8s.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False)
    k8s.resources[SLICES] = info(kind="EndpointSlice", namespaced=True)
    for res in (MV, "apiextensions.k8s.io/v1/customresourcedefinitions", "v1/namespaces", SLICES):
        k8s.resources[res].verbs.update({"get", "list", "watch", "create", "patch", "update", "delete"})
    return k8s


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory, own_triton: LocalTriton, own_redis: RunningRedis, pvc_root: Path
) -> AsyncIterator[Cluster]:
    async with emulator() as k8s, kmock.Server(k8s) as server:
        kubeconfig = tmp_path_factory.mktemp("kube") / "config"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": str(server.url).rstrip("/")}}],
                    "users": [{"name": "test", "user": {}}],
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                    "current-context": "kmock",
                }
            )
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "MODEL_REPOSITORY": str(own_triton.repository),
            "TRITON_URL": own_triton.grpc_url,
            "TRITON_BACKENDS": "python",
            "REDIS_URL": own_redis.url,
            "PVC_MOUNT_ROOT": str(pvc_root),
            "RESYNC_INTERVAL_S": "3",
            "LABELS_MAX_BYTES": str(LABELS_MAX_BYTES),
            "LOG_LEVEL": "INFO",
            "METRICS_PORT": str(free_port()),
            "OPERATOR_HEALTH_PORT": str(free_port()),  # kopf's /healthz, the chart's probes
        }
        # Triton reads what the operator writes as another user in the chart; under umask 077 (as restrictive as a
        # container's may be) the files must still be readable: the first test checks them
        operator = Service("operator", env, umask=0o077).start()
        triton = grpcclient.InferenceServerClient(own_triton.grpc_url)
        async with httpx.AsyncClient(base_url=str(server.url).rstrip("/"), timeout=30) as client:
            cluster = Cluster(
                client, triton, own_triton.repository, redis_sync.Redis.from_url(own_redis.url), env, operator
            )
            try:
                yield cluster
            finally:
                cluster.operator.stop()  # a test may have restarted it
                await triton.close()


def ready(status: dict[str, Any], generation: int = 1) -> bool:
    return status.get("phase") == "Ready" and status.get("observedGeneration") == generation


async def inference_count(triton: grpcclient.InferenceServerClient, model: str) -> int:
    stats = await triton.get_inference_statistics(model, as_json=True)
    return sum(int(s.get("inference_count", 0)) for s in stats.get("model_stats", []))


@pytest.mark.asyncio(loop_scope="session")
async def test_the_sample_is_loaded_in_triton_routed_and_reported_ready(cluster: Cluster) -> None:
    await cluster.create("efficientnet-lite0-v1", copy.deepcopy(SAMPLE["spec"]))
    status = await cluster.status("efficientnet-lite0-v1", ready)
    assert status["tritonModel"] == "efficientnet-lite0-v1"
    assert (status["readyReplicas"], status["replicas"]) == (1, 1)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Ready": "True", "Loaded": "True", "Failed": "False"}
    assert await cluster.triton.is_model_ready("efficientnet-lite0-v1")
    assert (cluster.repository / "efficientnet-lite0-v1" / "config.pbtxt").is_file()
    assert_readable_by_another_user(cluster.repository / "efficientnet-lite0-v1")
    assert cluster.redis.hget(keys.LEGACY.model_routes, "latest") == b"efficientnet-lite0-v1"
    assert cluster.redis.hget(keys.LEGACY.model_routes, "v1.0") == b"efficientnet-lite0-v1"


@pytest.mark.asyncio(loop_scope="session")
async def test_the_operator_answers_its_health_probe(cluster: Cluster) -> None:
    url = f"http://127.0.0.1:{cluster.env['OPERATOR_HEALTH_PORT']}/healthz"

    async def answered() -> httpx.Response | None:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return await client.get(url)
        except httpx.TransportError:
            return None

    response = await eventually(answered, 60, cluster.operator.output)
    assert response.status_code == 200, response.text


@pytest.mark.asyncio(loop_scope="session")
async def test_changing_batching_reloads_the_config_while_the_model_keeps_serving(cluster: Cluster) -> None:
    name = await cluster.sample_served()
    not_ready: list[int] = []
    stop = asyncio.Event()

    async def watch_readiness() -> int:
        checks = 0
        while not stop.is_set():
            checks += 1
            if not await cluster.triton.is_model_ready(name):
                not_ready.append(checks)
            await asyncio.sleep(0.02)
        return checks

    watcher = asyncio.create_task(watch_readiness())
    generation = await cluster.patch_spec(name, {"runtime": {"maxQueueDelayMicroseconds": 7000}})
    await cluster.status(name, lambda s: ready(s, generation))
    stop.set()
    checks = await watcher
    config = await cluster.triton.get_model_config(name, as_json=True)
    assert int(config["config"]["dynamic_batching"]["max_queue_delay_microseconds"]) == 7000
    assert "7000" in (cluster.repository / name / "config.pbtxt").read_text()
    assert checks > 0 and not_ready == []


@pytest.mark.asyncio(loop_scope="session")
async def test_a_restarted_operator_resumes_and_handles_what_changed_while_it_was_down(cluster: Cluster) -> None:
    name = await cluster.sample_served()
    cluster.operator.stop()
    generation = await cluster.patch_spec(name, {"traffic": {"weight": 50}})
    cluster.operator = Service("operator", cluster.env).start()
    await cluster.status(name, lambda s: ready(s, generation))
    assert b'"efficientnet-lite0-v1":50' in (cluster.redis.hget(keys.LEGACY.model_weights, "latest") or b"")
    assert await cluster.triton.is_model_ready(name)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_triton_replica_that_starts_later_gets_the_model(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    name = await cluster.sample_served()
    late_settings = on_free_ports(
        settings.load(settings.TritonSettings),
        model_repository=cluster.repository,  # a second replica over the same (shared) repository
        triton_backends=("python",),
        triton_timeout_s=120.0,
    )
    late = LocalTriton(late_settings, load_models=[], log_path=tmp_path_factory.mktemp("late") / "triton.log")
    two_replicas = {**cluster.env, "TRITON_URL": f"{cluster.env['TRITON_URL']},{late.grpc_url}"}
    cluster.operator.stop()
    cluster.operator = Service("operator", two_replicas).start()
    try:
        degraded = await cluster.status(name, lambda s: (s.get("readyReplicas"), s.get("replicas")) == (1, 2))
        assert degraded["phase"] == "Degraded", degraded
        late.start()
        await asyncio.to_thread(late.wait_ready, 120)
        status = await cluster.status(name, lambda s: (s.get("readyReplicas"), s.get("replicas")) == (2, 2))
        assert status["phase"] == "Ready"
        async with grpcclient.InferenceServerClient(late.grpc_url) as on_late:
            assert await on_late.is_model_ready(name)
    finally:
        late.stop()
        cluster.operator.stop()
        cluster.operator = Service("operator", cluster.env).start()
    await cluster.status(name, lambda s: (s.get("readyReplicas"), s.get("replicas")) == (1, 1))


@pytest.mark.asyncio(loop_scope="session")
async def test_replicas_are_discovered_from_the_triton_services_endpoint_slices(cluster: Cluster) -> None:
    name = await cluster.sample_served()
    host, port = cluster.env["TRITON_URL"].rsplit(":", 1)
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "triton-abc12", "namespace": "default", "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": "triton"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 1}, {"name": "grpc", "port": int(port)}],
        "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
    }  # fmt: skip
    slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    (await cluster.k8s.post(slices, json=endpoint_slice)).raise_for_status()
    # the static list points nowhere: only the Service's endpoints can make the model Ready
    in_cluster = {**cluster.env, "TRITON_SERVICE": "triton", "TRITON_URL": "127.0.0.1:1"}
    cluster.operator.stop()
    cluster.operator = Service("operator", in_cluster).start()
    try:
        generation = await cluster.patch_spec(name, {"runtime": {"maxQueueDelayMicroseconds": 6000}})
        status = await cluster.status(name, lambda s: ready(s, generation))
        assert (status["readyReplicas"], status["replicas"]) == (1, 1)
        assert "Triton replicas now: " + cluster.env["TRITON_URL"] in cluster.operator.output()
    finally:
        cluster.operator.stop()
        cluster.operator = Service("operator", cluster.env).start()
        await cluster.k8s.delete(f"{slices}/triton-abc12")


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    ("name", "change", "reason", "message"),
    [
        (
            "bad-checksum",
            {"source": {"uri": SAMPLE["spec"]["source"]["uri"], "sha256": "0" * 64}},
            "ArtifactInvalid",
            "sha256 is",
        ),
        ("bad-device", {"runtime": {"device": "tpu"}}, "InvalidSpec", "runtime.device"),
        (  # the sample's ONNX file takes uint8 NHWC pixels; a config for float NCHW must not load
            "bad-input-type",
            {"preprocessing": {"layout": "NCHW", "dtype": "FP32"}},
            "LoadFailed",
            "takes 'input' as tensor(uint8)",
        ),
        ("labels-latin1", labels("latin1.txt"), "ArtifactInvalid", "is not UTF-8 text (byte 3)"),
        ("labels-huge", labels("huge.txt"), "ArtifactInvalid", f"limit of {LABELS_MAX_BYTES} bytes"),
        ("labels-999", labels("999.txt"), "ArtifactInvalid", "names 999 classes, the model's output has 1000"),
        (  # a server that may come back: Failed now, retried later
            "unreachable",
            {"source": {"uri": "http://127.0.0.1:9/model.onnx", "sha256": "0" * 64}},
            "ArtifactUnavailable",
            "http://127.0.0.1:9/model.onnx: <urlopen error [Errno 111] Connection refused>",
        ),
        ("many-aliases", {"aliases": [f"a{i}" for i in range(300)]}, "InvalidSpec", "aliases"),
    ],
)
async def test_a_bad_spec_fails_with_a_readable_message_and_no_crash_loop(
    cluster: Cluster, name: str, change: dict[str, Any], reason: str, message: str
) -> None:
    await cluster.create(name, {**copy.deepcopy(SAMPLE["spec"]), "aliases": [name], **change})
    status = await cluster.status(name, lambda s: s.get("phase") == "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", reason)
    assert message in status["message"] and message in failed["message"]
    assert "Traceback" not in cluster.operator.output()
    assert cluster.operator.process is not None and cluster.operator.process.poll() is None
    assert cluster.redis.hget(keys.LEGACY.model_routes, name) is None
    if reason == "LoadFailed":  # placed, then refused by Triton: never served
        assert not await cluster.triton.is_model_ready(name)
    else:  # refused before anything was placed
        assert not (cluster.repository / name).exists()


@pytest.mark.asyncio(loop_scope="session")
async def test_two_versions_under_one_alias_split_real_traffic_by_weight(cluster: Cluster) -> None:
    v1 = await cluster.sample_served()
    generation = await cluster.patch_spec(v1, {"traffic": {"weight": 100}})  # whatever earlier tests set
    await cluster.status(v1, lambda s: ready(s, generation))
    v2 = {**copy.deepcopy(SAMPLE["spec"]), "aliases": ["latest"], "traffic": {"weight": 100}}
    await cluster.create("efficientnet-lite0-v2", v2)
    await cluster.status("efficientnet-lite0-v2", ready)
    before = {m: await inference_count(cluster.triton, m) for m in ("efficientnet-lite0-v1", "efficientnet-lite0-v2")}
    port = free_port()
    env = {**cluster.env, "API_PORT": str(port), "API_KEYS": f"ops:{API_KEY}", **NO_RATE_LIMIT}
    api, dispatcher = Service("api", env).start(), Service("dispatcher", env).start()
    try:
        await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}/api/v1/health", 60, api)
        headers = {"X-API-Key": API_KEY}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1", headers=headers, timeout=60) as client:
            image = jpeg(skdata.chelsea())
            dispatcher.signal(signal.SIGSTOP)  # all eight arrive together: one batch, still split per job
            try:
                job_ids = []
                for _ in range(8):
                    response = await client.post("/classify", files={"file": ("cat.jpg", image, "image/jpeg")})
                    job_ids.append(response.json()["job_id"])
            finally:
                dispatcher.signal(signal.SIGCONT)
            for job_id in job_ids:

                async def done(job: str = job_id) -> dict[str, Any] | None:
                    body: dict[str, Any] = (await client.get(f"/status/{job}")).json()
                    return body if body["status"] in ("completed", "failed") else None

                body = await eventually(done, 120, dispatcher.output)
                assert body["status"] == "completed", body
                result = (await client.get(f"/result/{job_id}")).json()
                assert result.get("predictions", [{}])[0].get("class_id") == 285, result  # Egyptian cat, either version
    finally:
        stop_all([api, dispatcher])
    served = {m: await inference_count(cluster.triton, m) - n for m, n in before.items()}
    assert served == {"efficientnet-lite0-v1": 4, "efficientnet-lite0-v2": 4}


@pytest.mark.asyncio(loop_scope="session")
async def test_delete_unloads_the_model_removes_its_files_and_its_route(
    cluster: Cluster, own_triton: LocalTriton
) -> None:
    name = "efficientnet-lite0-v3"
    await cluster.create(name, {**copy.deepcopy(SAMPLE["spec"]), "aliases": ["latest"], "traffic": {"weight": 1}})
    await cluster.status(name, ready)
    assert (cluster.repository / name / "1" / "model.onnx").is_file()
    # The delete comes while a resync tick is mid-reconcile, as a busy machine makes it likely: Triton stopped holds
    # every tick in its first call (10 s deadline) until SIGCONT. kopf keeps the finalizer until the tick ends and
    # then looked again only after a minute (its cancellation polling): the object outlived the wait below.
    assert own_triton.process is not None
    own_triton.process.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(float(cluster.env["RESYNC_INTERVAL_S"]) + 2)  # a tick has begun, and waits on Triton
        (await cluster.k8s.delete(f"{BASE}/{name}")).raise_for_status()
        await asyncio.sleep(1)  # the operator sees the deletion while the tick still waits
    finally:
        own_triton.process.send_signal(signal.SIGCONT)

    async def gone() -> bool:
        return await cluster.get(name) is None

    await eventually(gone, 45, cluster.operator.output)
    assert not await cluster.triton.is_model_ready(name)
    assert not (cluster.repository / name).exists()
    weights = cluster.redis.hget(keys.LEGACY.model_weights, "latest")
    assert weights is not None and name.encode() not in weights and b"efficientnet-lite0-v1" in weights
    assert cluster.redis.hget(keys.LEGACY.model_specs, name) is None
    assert await cluster.triton.is_model_ready("efficientnet-lite0-v1")  # the other version is untouched


@pytest.mark.asyncio(loop_scope="session")
async def test_the_operators_metrics_count_and_time_each_reconcile_and_each_error(cluster: Cluster) -> None:
    await cluster.sample_served()  # the resync timer (3 s here) reconciles it again and again, successfully
    before = await cluster.metrics()
    name = "metrics-bad-device"
    await cluster.create(name, {**copy.deepcopy(SAMPLE["spec"]), "aliases": [name], "runtime": {"device": "tpu"}})
    await cluster.status(name, lambda s: s.get("phase") == "Failed")

    def moved(now: Samples, metric: str, **labels: str) -> float:
        return sample(now, metric, **labels) - sample(before, metric, **labels)

    async def applied() -> Samples | None:  # the refused create and at least one successful resync
        now = await cluster.metrics()
        errors = sum(moved(now, "aic_operator_reconcile_errors_total", action="apply", kind=k) for k in ERROR_KINDS)
        successes = moved(now, "aic_operator_reconciles_total", action="apply") - errors
        return now if successes >= 1 and moved(now, "aic_operator_reconciles_total", action="apply") >= 2 else None

    after = await eventually(applied, 30, cluster.operator.output)
    permanent = moved(after, "aic_operator_reconcile_errors_total", action="apply", kind="permanent")
    assert permanent == 1, cluster.operator.output()[-4000:]  # not retried, not even by a tick that came early
    applies = moved(after, "aic_operator_reconciles_total", action="apply")
    assert moved(after, "aic_operator_reconcile_duration_seconds_count", action="apply") == applies
    assert moved(after, "aic_operator_reconcile_duration_seconds_sum", action="apply") > 0
    premade = frozenset({"action": "delete", "kind": "permanent"}.items())  # a series no reconcile has touched
    assert after[("aic_operator_reconcile_errors_total", premade)] == 0

    (await cluster.k8s.delete(f"{BASE}/{name}")).raise_for_status()

    async def gone() -> bool:
        return await cluster.get(name) is None

    await eventually(gone, 60, cluster.operator.output)
    deleted = await cluster.metrics()
    assert moved(deleted, "aic_operator_reconciles_total", action="delete") == 1
    assert moved(deleted, "aic_operator_reconcile_duration_seconds_count", action="delete") == 1
    assert sum(moved(deleted, "aic_operator_reconcile_errors_total", action="delete", kind=k) for k in ERROR_KINDS) == 0


def local_env(triton: LocalTriton, redis: RunningRedis, pvc_root: Path) -> dict[str, str]:
    """What `aic models apply` gets here: this module's Triton, Redis and claims."""
    return {
        **os.environ,
        "MODEL_REPOSITORY": str(triton.repository),
        "TRITON_URL": triton.grpc_url,
        "TRITON_BACKENDS": "python",
        "REDIS_URL": redis.url,
        "PVC_MOUNT_ROOT": str(pvc_root),
        "LABELS_MAX_BYTES": str(LABELS_MAX_BYTES),
    }


def test_aic_models_apply_and_delete_run_the_same_reconcile_without_a_cluster(
    own_triton: LocalTriton, own_redis: RunningRedis, pvc_root: Path, tmp_path: Path
) -> None:
    document = {**copy.deepcopy(SAMPLE), "metadata": {"name": "local-lite0"}}
    document["spec"]["aliases"] = ["local"]
    manifest = tmp_path / "mv.yaml"
    manifest.write_text(yaml.safe_dump(document))
    env = local_env(own_triton, own_redis, pvc_root)
    redis = redis_sync.Redis.from_url(own_redis.url)

    def aic(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "aic.cli", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, umask=0o077)  # see the first test

    applied = aic("models", "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert "modelversion/local-lite0 Ready" in applied.stdout
    assert redis.hget(keys.LEGACY.model_routes, "local") == b"local-lite0"
    assert (own_triton.repository / "local-lite0" / "config.pbtxt").is_file()
    assert_readable_by_another_user(own_triton.repository / "local-lite0")
    deleted = aic("models", "delete", "local-lite0")
    assert deleted.returncode == 0, deleted.stderr
    assert redis.hget(keys.LEGACY.model_routes, "local") is None
    assert not (own_triton.repository / "local-lite0").exists()
    document["spec"]["runtime"] = {"device": "gpu"}  # this Triton has no GPU: a readable refusal, exit 1
    manifest.write_text(yaml.safe_dump(document))
    refused = aic("models", "apply", "-f", str(manifest))
    assert refused.returncode == 1 and "no GPU" in refused.stderr


def test_aic_models_apply_and_delete_on_a_redis_cluster(
    own_triton: LocalTriton, redis_cluster: RedisCluster, pvc_root: Path, tmp_path: Path
) -> None:
    """With REDIS_CLUSTER=true the same command publishes to a cluster: the routes under the cluster's names."""
    redis_cluster.flushall()
    document = {**copy.deepcopy(SAMPLE), "metadata": {"name": "cluster-lite0"}}
    document["spec"]["aliases"] = ["on-cluster"]
    manifest = tmp_path / "mv.yaml"
    manifest.write_text(yaml.safe_dump(document))
    env = {
        **os.environ,
        "MODEL_REPOSITORY": str(own_triton.repository),
        "TRITON_URL": own_triton.grpc_url,
        "TRITON_BACKENDS": "python",
        "REDIS_URL": redis_cluster.url,
        "REDIS_CLUSTER": "true",
        "PVC_MOUNT_ROOT": str(pvc_root),
    }
    cluster = redis_sync.RedisCluster.from_url(redis_cluster.url)
    names = keys.Keyspace(settings.CLUSTER_DEFAULT_SHARDS, cluster=True)

    def aic(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "aic.cli", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, umask=0o077)

    try:
        applied = aic("models", "apply", "-f", str(manifest))
        assert applied.returncode == 0, applied.stderr
        assert cluster.hget(names.model_routes, "on-cluster") == b"cluster-lite0"
        assert cluster.exists(keys.LEGACY.model_routes) == 0  # not the standalone names
        deleted = aic("models", "delete", "cluster-lite0")
        assert deleted.returncode == 0, deleted.stderr
        assert cluster.hget(names.model_routes, "on-cluster") is None
    finally:
        cluster.close()
        redis_cluster.flushall()


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        (labels("latin1.txt"), "ArtifactInvalid", "is not UTF-8 text"),
        (labels("huge.txt"), "ArtifactInvalid", f"limit of {LABELS_MAX_BYTES} bytes"),
        (labels("999.txt"), "ArtifactInvalid", "names 999 classes"),
        ({"source": {"uri": "http://127.0.0.1:9/m.onnx", "sha256": "0" * 64}}, "ArtifactUnavailable", "refused"),
        ({"aliases": [f"a{i}" for i in range(300)]}, "InvalidSpec", "aliases"),
    ],
)
def test_aic_models_apply_refuses_a_bad_spec_with_its_reason_and_no_traceback(
    own_triton: LocalTriton, own_redis: RunningRedis, pvc_root: Path, tmp_path: Path, change: dict[str, Any],
    reason: str, message: str,
) -> None:  # fmt: skip
    document = {**copy.deepcopy(SAMPLE), "metadata": {"name": "local-bad"}}
    document["spec"] = {**document["spec"], "aliases": ["local-bad"], **change}
    manifest = tmp_path / "mv.yaml"
    manifest.write_text(yaml.safe_dump(document))
    env = local_env(own_triton, own_redis, pvc_root)
    refused = subprocess.run(
        [sys.executable, "-m", "aic.cli", "models", "apply", "-f", str(manifest)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    status = json.loads(refused.stderr)  # the status kubectl would show
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (status["phase"], failed["status"], failed["reason"]) == ("Failed", "True", reason)
    assert message in status["message"] and message in failed["message"]
    assert "Traceback" not in refused.stderr + refused.stdout
    assert not (own_triton.repository / "local-bad").exists()


@pytest.mark.asyncio(loop_scope="session")
async def test_aic_models_register_creates_then_updates_the_modelversion_of_a_build(
    tmp_path: Path, pvc_root: Path
) -> None:
    """The chart's default-model Job: `aic models register` against the Kubernetes API (kmock), twice."""
    repository = tmp_path / "repository"
    shutil.copytree(pvc_root / "models", repository)
    built = settings.load(settings.TritonSettings).model_repository / "efficientnet-lite0"
    shutil.copyfile(built / "model.json", repository / "efficientnet-lite0" / "model.json")
    async with emulator() as k8s, kmock.Server(k8s) as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": str(server.url).rstrip("/")}}],
                    "users": [{"name": "test", "user": {"token": "t"}}],
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                    "current-context": "kmock",
                }
            )
        )
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        argv = [sys.executable, "-m", "aic.cli", "models", "register", str(repository)]
        argv += ["--source-root", "pvc://models", "--namespace", "default"]
        first = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, text=True)
        again = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, text=True)
        async with httpx.AsyncClient(base_url=str(server.url).rstrip("/")) as client:
            stored = (await client.get(f"{BASE}/efficientnet-lite0-v1")).json()
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr  # the second run updates in place
    assert "modelversion/efficientnet-lite0-v1 registered" in first.stdout
    assert stored["spec"]["aliases"] == ["latest", "v1.0"]
    assert stored["spec"]["source"] == {
        "uri": "pvc://models/efficientnet-lite0/1/model.onnx",
        "sha256": SAMPLE["spec"]["source"]["sha256"],
    }
    assert parse(stored["spec"]).preprocessing.layout == "NHWC"
