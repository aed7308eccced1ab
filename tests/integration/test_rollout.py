"""Shadow traffic and progressive rollouts for real: `aic operator` (kopf) against kmock, its own Triton serving two
real versions of the default model — the model itself, re-exported under other names, and a deliberately worse
one (the same network with its labels rotated by one class, so every top-1 answer names the wrong class) — and the
product's own `aic api` and `aic dispatcher` classifying real photos. Rollout steps last seconds here
(ROLLOUT_TICK_S, `interval: 2s`); nothing is timed, states are polled for."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import sys
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest
import pytest_asyncio
import redis as redis_sync
import tritonclient.grpc.aio as grpcclient
import yaml
from aic.local.ports import free_port
from aic.local.triton import LocalTriton
from aic.store import keys
from helpers import EventRecorder, jpeg
from stack import RunningRedis, Service, stop_all, wait_for_http
from test_operator import BASE, SAMPLE, Cluster, emulator, eventually, own_triton, pvc_root  # noqa: F401

pytestmark = pytest.mark.integration

API_KEY = "ops-rollout-key-0123456789abcdef"
CLIENT_KEY = "acme-rollout-key-0123456789abcdef"
CAT = "Egyptian cat"
EVENTS = "/api/v1/namespaces/default/events"


@pytest.fixture(scope="module")
def rotated_labels(pvc_root: Path) -> str:  # noqa: F811
    """The worse version's labels: every class named after the next one (a cat answers as 'tiger cat' ...)."""
    names = (pvc_root / "models" / "efficientnet-lite0" / "labels.txt").read_text().splitlines()
    (pvc_root / "models" / "rotated").mkdir(exist_ok=True)
    (pvc_root / "models" / "rotated" / "labels.txt").write_text("\n".join(names[1:] + names[:1]) + "\n")
    return "pvc://models/rotated/labels.txt"


@pytest.fixture(scope="module")
def rollout_redis() -> Iterator[RunningRedis]:
    from stack import redis_server

    with redis_server() as server:
        yield server


class NamingEmulator(kmock.KubernetesEmulator):
    """kmock, naming created objects from ``metadata.generateName`` as the API server does: kopf posts every
    Event that way, and without it the second Event collides with the first (409)."""

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:10]}"
        return await super()._handle(request)


class Rig(Cluster):
    metrics_url: str
    client: httpx.AsyncClient
    api: Service
    dispatcher: Service


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rig(
    tmp_path_factory: pytest.TempPathFactory,
    own_triton: LocalTriton,  # noqa: F811
    rollout_redis: RunningRedis,
    pvc_root: Path,  # noqa: F811
) -> AsyncIterator[Rig]:
    k8s_emulator = NamingEmulator()
    for resource, info in emulator().resources.items():  # the operator tests' resources, and Events
        k8s_emulator.resources[resource] = info
    k8s_emulator.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True)
    k8s_emulator.resources["v1/events"].verbs.update({"get", "list", "watch", "create", "patch"})
    async with k8s_emulator as k8s, kmock.Server(k8s) as server:
        kubeconfig = tmp_path_factory.mktemp("kube") / "config"
        cluster = {"server": str(server.url).rstrip("/")}
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": cluster}],
                    "users": [{"name": "test", "user": {}}],
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                    "current-context": "kmock",
                }
            )
        )
        port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "MODEL_REPOSITORY": str(own_triton.repository),
            "TRITON_URL": own_triton.grpc_url,
            "TRITON_BACKENDS": "python",
            "REDIS_URL": rollout_redis.url,
            "PVC_MOUNT_ROOT": str(pvc_root),
            "RESYNC_INTERVAL_S": "3",
            "ROLLOUT_TICK_S": "1",
            "EVIDENCE_FLUSH_S": "0.2",
            # every selected job compared, however slow this machine is today: exact counts to assert on
            "SHADOW_MAX_IN_FLIGHT": "1000",
            "SHADOW_TIMEOUT_S": "120",
            "LOG_LEVEL": "INFO",
            "METRICS_PORT": "0",
            "API_PORT": str(port),
            "API_KEYS": f"ops:{API_KEY}:admin,acme:{CLIENT_KEY}",
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "RATE_LIMIT_BURST": "100000",
        }
        dispatcher_env = {**env, "METRICS_PORT": str(free_port())}  # its own port: the operator's is off
        services = [
            Service("operator", env).start(),
            Service("api", env).start(),
            Service("dispatcher", dispatcher_env).start(),
        ]
        triton = grpcclient.InferenceServerClient(own_triton.grpc_url)
        try:
            await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}/api/v1/health", 60, services[1])
            async with (
                httpx.AsyncClient(base_url=cluster["server"], timeout=30) as k8s_client,
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}/api/v1", headers={"X-API-Key": API_KEY}, timeout=60
                ) as client,
            ):
                rig = Rig(
                    k8s_client,
                    triton,
                    own_triton.repository,
                    redis_sync.Redis.from_url(rollout_redis.url),
                    env,
                    services[0],
                )
                rig.client, rig.api, rig.dispatcher = client, services[1], services[2]
                rig.metrics_url = f"http://127.0.0.1:{dispatcher_env['METRICS_PORT']}/metrics"
                yield rig
        finally:
            stop_all(services)
            await triton.close()


def version(aliases: list[str], **extra: Any) -> dict[str, Any]:
    return {**copy.deepcopy(SAMPLE["spec"]), "aliases": aliases, **extra}


async def classify(rig: Rig, alias: str, count: int, concurrency: int = 6) -> list[dict[str, Any]]:
    """Submit ``count`` photos of a cat under ``alias``; every result, once each job completed."""
    image = jpeg()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> dict[str, Any]:
        async with gate:
            data = {"model_version": alias}
            response = await rig.client.post("/classify", data=data, files={"file": ("cat.jpg", image, "image/jpeg")})
            assert response.status_code in (200, 202), response.text
            job_id = response.json()["job_id"]

            async def done() -> dict[str, Any] | None:
                body: dict[str, Any] = (await rig.client.get(f"/status/{job_id}")).json()
                return body if body["status"] in ("completed", "failed") else None

            status = await eventually(done, 180, rig.dispatcher.output)
            assert status["status"] == "completed", status
            result: dict[str, Any] = (await rig.client.get(f"/result/{job_id}")).json()
            return result

    return list(await asyncio.gather(*(one() for _ in range(count))))


def top1(result: dict[str, Any]) -> str:
    return str(result["predictions"][0]["class_name"])


def weights(rig: Rig, alias: str) -> dict[str, int]:
    raw = rig.redis.hget(keys.LEGACY.model_weights, alias)
    return {str(k): int(v) for k, v in json.loads(raw or b"{}").items()}


async def events(rig: Rig, name: str, wanted: set[str]) -> set[str]:
    """The reasons of the Events posted about ``name``, once they include ``wanted`` (kopf posts in the background)."""

    async def posted() -> set[str] | None:
        body = (await rig.k8s.get(EVENTS)).json()
        about = [e for e in body.get("items", []) if e.get("involvedObject", {}).get("name") == name]
        reasons = {str(e.get("reason")) for e in about}
        return reasons if wanted <= reasons else None

    return await eventually(posted, 60, lambda: rig.operator.output()[-2000:])


async def serve(rig: Rig, name: str, spec: dict[str, Any]) -> None:
    await rig.create(name, spec)
    await rig.status(name, lambda s: s.get("phase") == "Ready", timeout_s=180)


def progress(recorder: EventRecorder, job_id: str) -> tuple[tuple[str, str, int], ...]:
    return tuple((e["status"], e.get("stage", ""), int(e.get("progress", 0))) for e in recorder.of(job_id))


def stripped(result: dict[str, Any]) -> bytes:
    """A result without what differs from job to job (its id, when, how long)."""
    return json.dumps(
        {k: v for k, v in result.items() if k not in ("job_id", "created_at", "processing_time")}
    ).encode()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_shadow_version_changes_no_clients_result_and_reports_full_agreement(rig: Rig) -> None:
    await serve(rig, "shadow-v1", version(["shadowed"]))
    with EventRecorder(rig.env["REDIS_URL"]) as recorder:
        without = await classify(rig, "shadowed", 6)
    await serve(rig, "shadow-v2", version(["shadowed"], traffic={"weight": 100, "shadow": {"percent": 100}}))
    assert weights(rig, "shadowed") == {"shadow-v1": 100, "shadow-v2": 0}  # a shadow never answers

    async def applied() -> bool | None:  # the dispatcher re-reads comparisons every EVIDENCE_FLUSH_S: jobs it
        # took before that would not be shadowed (a loaded machine once left 3 of 12 uncompared this way)
        return (
            'aic_model_comparison_rules{candidate="shadow-v2"} 1.0' in (await rig.client.get(rig.metrics_url)).text
            or None
        )

    await eventually(applied, 60, lambda: rig.dispatcher.output()[-2000:])
    served_before = await rig.triton.get_inference_statistics("shadow-v2", as_json=True)
    with EventRecorder(rig.env["REDIS_URL"]) as shadowed:
        with_shadow = await classify(rig, "shadowed", 12)
    assert {stripped(r) for r in with_shadow} == {stripped(without[0])}  # byte for byte, every client
    assert {top1(r) for r in with_shadow} == {CAT}
    # status, stage and progress events: the same path, once each, with or without the shadow
    paths = {progress(shadowed, r["job_id"]) for r in with_shadow}
    assert paths == {progress(recorder, r["job_id"]) for r in without}
    assert all(path[-1][0] == "completed" and [p[0] for p in path].count("completed") == 1 for path in paths), paths

    seen: list[Any] = []

    async def agreement() -> dict[str, Any] | None:
        models = (await rig.client.get("/models")).json()
        seen[:] = [s for s in models.get("comparisons") or [] if s["candidate"] == "shadow-v2"]
        return seen[0] if seen and seen[0]["compared"] >= 12 else None

    compared = await eventually(agreement, 120, lambda: f"{seen}; {rig.dispatcher.output()[-2000:]}")
    assert (compared["mode"], compared["reference"], compared["agreement"]) == ("shadow", "shadow-v1", 1.0)
    assert compared["compared"] == 12  # each shadowed job once
    scraped = (await rig.client.get(rig.metrics_url)).text  # Prometheus says the same
    pair = 'alias="shadowed",candidate="shadow-v2",reference="shadow-v1"'
    assert f"aic_model_comparisons_total{{{pair}}} 12.0" in scraped
    assert f"aic_model_comparison_top1_agreements_total{{{pair}}} 12.0" in scraped
    assert 'aic_model_version_jobs_total{alias="shadowed",version="shadow-v2"} 12.0' in scraped
    as_client = (await rig.client.get("/models", headers={"X-API-Key": CLIENT_KEY})).json()
    assert set(as_client) == {"models", "default"}  # weights, shadows and rollouts are for the admin role
    assert compared["top5Overlap"] == 1.0 and compared["errors"] == 0
    after = await rig.triton.get_inference_statistics("shadow-v2", as_json=True)
    assert after != served_before  # it did run on the shadow


@pytest.mark.asyncio(loop_scope="session")
async def test_a_worse_version_is_rolled_back_on_agreement_and_no_client_got_more_than_its_share(
    rig: Rig, rotated_labels: str
) -> None:
    await serve(rig, "worse-v1", version(["worse"]))
    rollout = {"steps": [20, 100], "interval": "2s", "minJobs": 5, "minAgreement": 0.9, "maxErrorRate": 0.5}
    spec = version(["worse"], labels={"uri": rotated_labels}, rollout=rollout)
    await serve(rig, "worse-v2", spec)
    await rig.status("worse-v2", lambda s: (s.get("rollout") or {}).get("phase") == "Progressing")
    assert sum(weights(rig, "worse").values()) > 0
    answers: list[dict[str, Any]] = []
    while ((await rig.get("worse-v2")) or {}).get("status", {}).get("rollout", {}).get("phase") == "Progressing":
        answers += await classify(rig, "worse", 10)
        assert len(answers) < 400, (await rig.get("worse-v2"), weights(rig, "worse"))
    status = (await rig.get("worse-v2") or {})["status"]
    rollout_status = status["rollout"]
    assert rollout_status["phase"] == "RolledBack", rollout_status
    assert rollout_status["step"] == 1 and rollout_status["effectiveWeight"] == 0
    assert "agreement" in rollout_status["message"] and rollout_status["lastAnalysis"]["agreement"] < 0.9
    wrong = sum(1 for r in answers if top1(r) != CAT)
    assert 0 < wrong <= -(-len(answers) * 20 // 100) + 1, (wrong, len(answers))  # its step's share, at most
    assert weights(rig, "worse") == {"worse-v1": 100, "worse-v2": 0}
    assert {top1(r) for r in await classify(rig, "worse", 10)} == {CAT}  # rolled back: every answer right
    condition = next(c for c in status["conditions"] if c["type"] == "Rollout")
    assert (condition["status"], condition["reason"]) == ("False", "RolledBack")
    await events(rig, "worse-v2", {"RolloutStarted", "RolloutRolledBack"})


@pytest.mark.asyncio(loop_scope="session")
async def test_a_paused_rollout_stays_put_and_an_identical_version_is_promoted_to_all_traffic(rig: Rig) -> None:
    await serve(rig, "same-v1", version(["same"]))
    rollout = {"steps": [50, 100], "interval": "2s", "minJobs": 5, "minAgreement": 0.9, "paused": True}
    await serve(rig, "same-v2", version(["same"], rollout=rollout))
    paused = await rig.status("same-v2", lambda s: (s.get("rollout") or {}).get("phase") == "Paused")
    await classify(rig, "same", 20)  # evidence enough to move on, were it not paused
    await asyncio.sleep(4 * 2)  # four intervals, a tick a second: it would have moved by now
    still = (await rig.get("same-v2") or {})["status"]["rollout"]
    assert (still["phase"], still["step"], still["effectiveWeight"]) == ("Paused", 1, 50)
    assert still.get("lastAnalysis") is None and paused["rollout"]["step"] == 1
    await rig.patch_spec("same-v2", {"rollout": {**rollout, "paused": False}})
    phases: list[str] = []
    while (phase := (await rig.get("same-v2") or {})["status"]["rollout"]["phase"]) != "Promoted":
        phases.append(phase)
        assert phase in ("Paused", "Progressing") and len(phases) < 60, phases
        await classify(rig, "same", 10)
    promoted = (await rig.get("same-v2") or {})["status"]["rollout"]
    assert promoted["effectiveWeight"] == 100 and promoted["lastAnalysis"]["agreement"] == 1.0
    assert weights(rig, "same") == {"same-v1": 0, "same-v2": 100}
    await classify(rig, "same", 2, concurrency=1)  # the dispatcher re-reads the comparisons (0.2 s here) meanwhile
    before = {m: await inference_count(rig, m) for m in ("same-v1", "same-v2")}
    await classify(rig, "same", 6)
    assert await inference_count(rig, "same-v2") - before["same-v2"] == 6
    assert await inference_count(rig, "same-v1") == before["same-v1"]  # no mirror once promoted
    await events(rig, "same-v2", {"RolloutStarted", "RolloutResumed", "RolloutStep", "RolloutPromoted"})


@pytest.mark.asyncio(loop_scope="session")
async def test_deleting_a_version_mid_rollout_leaves_its_alias_served(rig: Rig) -> None:
    await serve(rig, "gone-v1", version(["gone"]))
    await serve(rig, "gone-v2", version(["gone"], rollout={"steps": [50, 100], "interval": "1h"}))
    await rig.status("gone-v2", lambda s: (s.get("rollout") or {}).get("phase") == "Progressing")
    assert weights(rig, "gone") == {"gone-v1": 5000, "gone-v2": 5000}
    (await rig.k8s.delete(f"{BASE}/gone-v2")).raise_for_status()

    async def deleted() -> bool:
        return await rig.get("gone-v2") is None

    await eventually(deleted, 60, rig.operator.output)
    assert weights(rig, "gone") == {"gone-v1": 100}
    assert rig.redis.hget(keys.LEGACY.model_overrides, "gone-v1") is None
    assert {top1(r) for r in await classify(rig, "gone", 4)} == {CAT}


@pytest.mark.asyncio(loop_scope="session")
async def test_a_promoted_version_can_be_the_previous_version_of_the_next_rollout(rig: Rig) -> None:
    await serve(rig, "next-v1", version(["next"]))
    await serve(rig, "next-v2", version(["next"], rollout={"steps": [100], "interval": "1s", "minJobs": 0}))
    await rig.status("next-v2", lambda s: (s.get("rollout") or {}).get("phase") == "Promoted")
    assert weights(rig, "next") == {"next-v1": 0, "next-v2": 100}
    await serve(rig, "next-v3", version(["next"], rollout={"steps": [50, 100], "interval": "1h"}))
    third = await rig.status("next-v3", lambda s: (s.get("rollout") or {}).get("phase") == "Progressing")
    assert third["rollout"]["previous"] == ["next-v2"]  # not next-v1, which serves nothing now
    await asyncio.sleep(3)  # ticks of every rollout, the finished one's included: none takes the weights back
    assert weights(rig, "next") == {"next-v1": 0, "next-v2": 5000, "next-v3": 5000}


@pytest.mark.asyncio(loop_scope="session")
async def test_removing_the_rollout_from_the_spec_gives_every_version_its_requested_weight(rig: Rig) -> None:
    await serve(rig, "drop-v1", version(["drop"]))
    await serve(rig, "drop-v2", version(["drop"], traffic={"weight": 30}, rollout={"steps": [10], "interval": "1h"}))
    await rig.status("drop-v2", lambda s: (s.get("rollout") or {}).get("phase") == "Progressing")
    assert weights(rig, "drop") == {"drop-v1": 9000, "drop-v2": 1000}
    await rig.patch_spec("drop-v2", {"rollout": None})
    await rig.status("drop-v2", lambda s: "rollout" not in s)
    assert weights(rig, "drop") == {"drop-v1": 100, "drop-v2": 30}  # as without a rollout
    assert rig.redis.hget(keys.LEGACY.model_overrides, "drop-v1") is None
    assert rig.redis.hget(keys.LEGACY.model_overrides, "drop-v2") is None


async def inference_count(rig: Rig, model: str) -> int:
    stats = await rig.triton.get_inference_statistics(model, as_json=True)
    return sum(int(s.get("inference_count", 0)) for s in stats.get("model_stats", []))


@pytest.mark.asyncio(loop_scope="session")
async def test_aic_models_apply_follows_a_rollout_to_promotion_without_a_cluster(rig: Rig, tmp_path: Path) -> None:
    env = {**rig.env, "ROLLOUT_TICK_S": "0.5"}

    def manifest(name: str, **extra: Any) -> str:
        path = tmp_path / f"{name}.yaml"
        document = {"apiVersion": "serving.aic.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name}}
        path.write_text(yaml.safe_dump({**document, "spec": version(["local"], **extra)}))
        return str(path)

    async def aic(*args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aic.cli", *args, env=env, stdout=PIPE, stderr=PIPE
        )

    first = await aic("models", "apply", "-f", manifest("local-v1"))
    assert await first.wait() == 0, await first.communicate()
    rollout = {"steps": [50, 100], "interval": "1s", "minJobs": 3, "minAgreement": 0.9}
    follow = await aic("models", "apply", "-f", manifest("local-v2", rollout=rollout))
    rounds = 0
    while follow.returncode is None:
        await classify(rig, "local", 6)
        rounds += 1
        assert rounds < 60, "the rollout did not end"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow.wait(), 0.1)
    out, err = await follow.communicate()
    assert follow.returncode == 0, (out, err)
    assert b"RolloutStarted" in out and b"RolloutStep" in out and b"RolloutPromoted" in out
    assert weights(rig, "local") == {"local-v1": 0, "local-v2": 100}
    shown = await aic("models", "status")
    listing = (await shown.communicate())[0].decode()
    assert "rollout local-v2: Promoted step 2, 100 %" in listing, listing
    gone = await aic("models", "delete", "local-v2", "local-v1")
    assert await gone.wait() == 0
