"""The chart's workloads in real containers: the chart rendered by the real helm with ci/podman-values.yaml, every
workload run by podman (4.3, runc) under its rendered securityContext, resources, env and volumes, translated for
what `podman kube play` lacks (tests/kube_play.py). The install runs as in a cluster: the default-model Job's
containers (build, then `aic models register`) and the operator talk to a Kubernetes API emulator (kmock) on the
podman network's gateway through a kubeconfig; the operator writes the shared models volume and loads the model into
the CPU Triton; the helm test Pod's `aic selftest` classifies the bundled photo through the API container.

Needs the images of `make images` plus the test's Redis (`containers/build-images.sh redis-test`; `make test` builds
them). Every container's logs are printed when a check fails."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import httpx
import kmock
import pytest
import yaml
from integration.tools import helm  # the real helm binary
from kube_play import Manifest, pods, with_host_aliases

pytestmark = pytest.mark.containers

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "async-image-classifier"
VALUES = CHART / "ci" / "podman-values.yaml"
CONTAINERS_CONF = ROOT / "containers" / "containers.conf"
NAMESPACE = "default"
MV = "serving.aic.dev/v1alpha1/modelversions"
SLICES = "discovery.k8s.io/v1/endpointslices"
# what a container prints when it writes to its read-only root or lacks a capability
FORBIDDEN = ("Read-only file system", "Operation not permitted", "Permission denied")
T = TypeVar("T")


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {"CONTAINERS_CONF": str(CONTAINERS_CONF), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited with {done.returncode}: {done.stderr}")
    return done


def eventually(probe: Callable[[], T | None], timeout_s: float, what: Callable[[], str]) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what()}")
        time.sleep(2)


class ApiServer(kmock.KubernetesEmulator):
    """kmock, plus what a real API server adds to a created object and kopf relies on (namespace from the path, uid,
    generation, resourceVersion): `aic models register` creates the ModelVersion as a client would, without them."""

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock 0.8 cannot parse the path of the cluster-scoped namespace list, which kopf reads (and watches) when
        # the operator watches one namespace (the chart's WATCH_NAMESPACE): the one namespace, and a quiet watch
        if raw_request.path != "/api/v1/namespaces":
            return await super().__call__(raw_request)
        if raw_request.query.get("watch") not in ("true", "1"):
            items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "resourceVersion": "1"}}]
            body = {"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "1"}, "items": items}
            return aiohttp.web.json_response(body)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw_request)
        await asyncio.sleep(float(raw_request.query.get("timeoutSeconds", "600")))
        return response

    async def _handle(self, request: kmock.Request) -> Any:
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta.setdefault("resourceVersion", "1")
        return await super()._handle(request)


def emulator() -> ApiServer:
    k8s = ApiServer()
    info = kmock.ResourceInfo
    k8s.resources[MV] = info(kind="ModelVersion", namespaced=True, shortnames={"mv"}, subresources={"status"})
    crds = "apiextensions.k8s.io/v1/customresourcedefinitions"
    k8s.resources[crds] = info(kind="CustomResourceDefinition", namespaced=False)
    k8s.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False)
    k8s.resources[SLICES] = info(kind="EndpointSlice", namespaced=True)
    k8s.resources["v1/events"] = info(kind="Event", namespaced=True)
    for res in (MV, crds, "v1/namespaces", SLICES, "v1/events"):
        k8s.resources[res].verbs.update({"get", "list", "watch", "create", "patch", "update", "delete"})
    return k8s


class KubeApi(threading.Thread):
    """kmock served from its own event loop on ``host`` (the podman network's gateway: a local address)."""

    def __init__(self, host: str) -> None:
        super().__init__(daemon=True)
        self.host = host
        self.url = ""
        self.started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        async with emulator() as k8s, kmock.Server(k8s, host=self.host) as server:
            self.url = str(server.url).rstrip("/")
            self.started.set()
            await self._stopping.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self.join(10)


class Install:
    """The release's Pods under podman on a network of their own; everything it creates is removed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.release = f"aic{secrets.token_hex(2)}"
        self.network = f"{self.release}-net"
        self.tmp = tmp
        self.kubeconfig_dir = tmp / "kube"
        self.played: list[str] = []
        self.volumes: list[str] = []
        self.api: KubeApi | None = None
        rendered = subprocess.run(
            [str(helm()), "template", self.release, str(CHART), "-f", str(VALUES), "--namespace", NAMESPACE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.documents: list[Manifest] = [d for d in yaml.safe_load_all(rendered) if d]
        self.pods = pods(self.documents, namespace=NAMESPACE, kubeconfig_dir=str(self.kubeconfig_dir))

    def name(self, component: str) -> str:
        return f"{self.release}-async-image-classifier-{component}"

    def play(self, *names: str, extra: list[Manifest] | None = None) -> None:
        running = {pod: ip for pod in self.played if (ip := self.ip(pod))}  # a finished Job's Pod has none
        manifests = [*(extra or []), *(with_host_aliases(self.pods[n], running) for n in names)]
        path = self.tmp / f"{names[0]}.yaml"
        path.write_text(yaml.safe_dump_all(manifests))
        self.played += names
        for manifest in manifests:
            for volume in manifest.get("spec", {}).get("volumes", []):
                if "emptyDir" in volume:
                    self.volumes.append(volume["name"])
            if manifest["kind"] == "PersistentVolumeClaim":
                self.volumes.append(manifest["metadata"]["name"])
        podman("kube", "play", "--network", self.network, str(path))

    def containers(self) -> list[str]:
        found = podman("ps", "-a", "--format", "{{.Names}}", "--filter", f"name=^{self.release}-").stdout.split()
        return [n for n in found if not n.endswith("-infra")]

    def ip(self, pod: str) -> str:
        info = json.loads(podman("pod", "inspect", pod).stdout)
        infra = info.get("InfraContainerID") or info["Containers"][0]["Id"]
        networks = json.loads(podman("inspect", infra).stdout)[0]["NetworkSettings"]["Networks"]
        return str(networks[self.network]["IPAddress"])

    def state(self, container: str) -> dict[str, Any]:
        return dict(json.loads(podman("inspect", container).stdout)[0]["State"])

    def logs(self) -> str:
        out = []
        for container in self.containers():
            logs = podman("logs", container, check=False)
            out.append(f"===== {container} ({self.state(container).get('Status')})\n{logs.stdout}{logs.stderr}")
        return "\n".join(out)

    def down(self) -> None:
        for pod in self.played:
            podman("pod", "rm", "-f", pod, check=False)
        for volume in dict.fromkeys(self.volumes):
            podman("volume", "rm", "-f", volume, check=False)
        podman("network", "rm", "-f", self.network, check=False)
        if self.api is not None:
            self.api.stop()


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `make test` installs it (system-deps)")
    run = Install(tmp_path_factory.mktemp("podman"))
    podman("network", "create", run.network)
    try:
        yield run
    finally:
        print(run.logs())  # shown by pytest when a check failed
        run.down()


@pytest.mark.timeout(1500)  # beyond the waits below (21 minutes at most), which print the logs; a run takes ~1
def test_the_charts_install_classifies_the_bundled_photo_under_every_pods_security_context(install: Install) -> None:
    """The install path end to end; then every container's runtime settings are the rendered securityContext's."""
    run = install
    # Redis first: its Pod brings the network's bridge (and gateway address) up for the API emulator to listen on
    run.play(run.name("redis"))
    gateway = json.loads(podman("network", "inspect", run.network).stdout)[0]["subnets"][0]["gateway"]
    run.api = KubeApi(gateway)
    run.api.start()
    assert run.api.started.wait(30), "the Kubernetes API emulator did not start"
    run.kubeconfig_dir.mkdir(mode=0o755)
    (run.kubeconfig_dir / "config").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": run.api.url}}],
                "users": [{"name": "sa", "user": {"token": "t"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "sa", "namespace": NAMESPACE}}],
                "current-context": "kmock",
            }
        )
    )
    (run.kubeconfig_dir / "config").chmod(0o644)
    # podman ignores fsGroup and gives a new volume to the uid:gid of the first container that mounts it: the
    # operator (10001:10001, the chart's fsGroup) first, as fsGroup would let it and the Job write the claim
    claim = next(d for d in run.documents if d["kind"] == "PersistentVolumeClaim")
    # then each Pod after those it names (each gets the earlier ones' addresses as hostAliases): the operator
    # finds Triton through the EndpointSlice, the dispatcher by its Service name
    run.play(run.name("operator"), extra=[claim])
    run.play(run.name("triton"))
    run.play(run.name("api"))
    run.play(run.name("dispatcher"))

    # the EndpointSlice a cluster's controller publishes once Triton's readiness probe passes
    triton_ip = run.ip(run.name("triton"))

    def triton_ready() -> bool | None:
        try:
            return httpx.get(f"http://{triton_ip}:8000/v2/health/ready", timeout=2).status_code == 200 or None
        except httpx.HTTPError:
            return None

    eventually(triton_ready, 180, lambda: "Triton not ready\n" + run.logs())
    kube = httpx.Client(base_url=run.api.url, timeout=10)
    service = run.name("triton")
    kube.post(
        f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices",
        json={
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-abcde", "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": 8001, "protocol": "TCP"}],
            "endpoints": [{"addresses": [triton_ip], "conditions": {"ready": True}}],
        },
    ).raise_for_status()  # fmt: skip

    # the default-model Job: build onto the claim, then register the ModelVersion through the API
    job = run.name("default-model")
    run.play(job)
    register = f"{job}-register-default-model"

    def job_done() -> dict[str, Any] | None:
        state = run.state(register)
        return state if state["Status"] == "exited" else None

    state = eventually(job_done, 600, lambda: "the default-model Job did not finish\n" + run.logs())
    assert state["ExitCode"] == 0, run.logs()
    models = kube.get(f"/apis/serving.aic.dev/v1alpha1/namespaces/{NAMESPACE}/modelversions").json()["items"]
    assert [m["metadata"]["name"] for m in models] == ["efficientnet-lite0-v1"]
    name = models[0]["metadata"]["name"]

    def model_ready() -> dict[str, Any] | None:
        found = kube.get(f"/apis/serving.aic.dev/v1alpha1/namespaces/{NAMESPACE}/modelversions/{name}")
        status = found.json().get("status") or {}
        return status if status.get("phase") == "Ready" else None

    eventually(model_ready, 300, lambda: "the ModelVersion is not Ready\n" + run.logs())

    # helm test: the test Pod's `aic selftest` through the API's Service name
    test = run.name("test")
    run.play(test)
    classify = f"{test}-classify"
    outcome = eventually(
        lambda: (s := run.state(classify)) and (s if s["Status"] == "exited" else None),
        180,
        lambda: "the helm test Pod did not finish\n" + run.logs(),
    )
    report = podman("logs", classify).stdout
    assert outcome["ExitCode"] == 0, report
    assert json.loads(report.strip().splitlines()[-1])["top"] == "Egyptian cat"

    # every container ran as rendered, and none wrote to its root or reached for a capability (podman removes an
    # init container once it has run: the build's success above is what shows it ran under its context)
    rendered = {
        f"{pod}-{c['name']}": (pod, c)
        for pod, manifest in run.pods.items()
        if pod in run.played
        for c in manifest["spec"]["containers"]
    }
    assert set(rendered) == set(run.containers())
    for container, (pod, spec) in rendered.items():
        inspected = json.loads(podman("inspect", container).stdout)[0]
        host = inspected["HostConfig"]
        context = {**run.pods[pod]["spec"].get("securityContext", {}),
                   **spec["securityContext"]}  # fmt: skip
        assert host["ReadonlyRootfs"] is True, container
        assert inspected["Config"]["User"].split(":")[0] == str(context["runAsUser"]), container
        assert inspected["EffectiveCaps"] in (None, []), (container, inspected["EffectiveCaps"])
        assert "no-new-privileges" in " ".join(host.get("SecurityOpt") or []), container
        assert "seccomp=unconfined" not in " ".join(host.get("SecurityOpt") or []), container
        assert host["Memory"] > 0, container
        logs = podman("logs", container).stdout + podman("logs", container).stderr
        assert not [line for line in logs.splitlines() if any(f in line for f in FORBIDDEN)], (container, logs)


DIGEST = """
import hashlib, importlib, pathlib, sys
total = hashlib.sha256()
for package in sys.argv[1:]:
    root = pathlib.Path(importlib.import_module(package).__file__).parent
    for path in sorted(root.rglob("*.py")):
        total.update(f"{package}/{path.relative_to(root)}".encode() + path.read_bytes())
print(total.hexdigest())
"""


@pytest.mark.parametrize("repository", ["async-image-classifier", "async-image-classifier-model-builder"])
def test_the_images_carry_this_checkouts_code(repository: str) -> None:
    """The images under test are this checkout's (a layer cache that missed a change would test old code)."""
    tag = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    image = f"ghcr.io/aic-dev/{repository}:{tag}"
    packages = ["aic", "aic_operator"]
    inside = podman("run", "--rm", "--entrypoint", "python", image, "-c", DIGEST, *packages).stdout.strip()
    here = subprocess.run(
        [sys.executable, "-c", DIGEST, *packages], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert inside == here, f"{image} is not built from this checkout: run `make images`"
