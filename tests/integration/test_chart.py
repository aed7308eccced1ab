"""The Helm chart with the real helm binary (v4): lint, render under every ci/*-values.yaml, validate every manifest
against the Kubernetes schemas (1.30 and the newest kubernetes-validate knows) and the custom kinds against their
published models, and check what the chart promises: security, RBAC verbs, probes, scaling, names, secrets."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import chart_docs
import chart_shard_tags
import pytest
import yaml
from aic.core.enums import Priority
from aic.core.settings import (
    ApiSettings,
    DispatcherSettings,
    ObjectStoreSettings,
    QueueSettings,
    RedisSettings,
    TritonSettings,
    WebhookSettings,
    load,
)
from aic.store.connection import PERSISTENCE
from aic_operator.config import OperatorSettings
from aic_operator.render import desired_state
from aic_operator.spec import parse
from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]
from helpers import service_metrics
from kubernetes_validate import utils as kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
from tools import helm
from tritonclient.grpc import model_config_pb2 as pb

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "async-image-classifier"
CI = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "rel", "aic"
PREFIX = f"{RELEASE}-async-image-classifier"
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_KINDS = {
    "ScaledObject",
    "TriggerAuthentication",
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
    "KopfPeering",
}
Manifest = dict[str, Any]


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm()), *args], capture_output=True, text=True, check=check, timeout=120)


@cache
def render(values_file: str | None = None, *sets: str) -> tuple[Manifest, ...]:
    args = ["template", RELEASE, str(CHART), "-n", NAMESPACE]
    if values_file:
        args += ["-f", values_file]
    for item in sets:
        args += ["--set", item]
    out = run_helm(*args).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def by_kind(docs: tuple[Manifest, ...], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: tuple[Manifest, ...]) -> Iterator[tuple[str, Manifest]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d["metadata"]["name"], d["spec"]


def containers(spec: Manifest) -> list[Manifest]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.fixture(scope="module", params=CI, ids=lambda p: p.name)
def rendered(request: pytest.FixtureRequest) -> tuple[Manifest, ...]:
    return render(str(request.param))


# -- lint and schemas ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", CI, ids=lambda p: p.name)
def test_helm_lint_strict_passes(values: Path) -> None:
    result = run_helm("lint", "--strict", str(CHART), "-f", str(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_built_in_manifest_is_valid_for_kubernetes_1_30_and_the_newest(rendered: tuple[Manifest, ...]) -> None:
    for doc in rendered:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        for version in K8S_VERSIONS:
            # strict: unknown fields fail; a missing schema (a removed apiVersion, which the CLI only warns about)
            # raises SchemaNotFoundError, a failure here
            kubernetes_validate.validate(doc, version, strict=True)


def strict_schema(model: Any) -> Manifest:
    """The model's JSON schema with unknown fields refused wherever properties are declared, and Go's inline
    flags (``^(?i)...``, the PrometheusRule's) moved to the front of a pattern, where Python's `re` wants them."""
    schema: Manifest = model.model_json_schema(by_alias=True)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            if isinstance(node.get("pattern"), str) and "(?i)" in node["pattern"]:
                node["pattern"] = "(?i)" + node["pattern"].replace("(?i)", "")
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def test_keda_and_prometheus_operator_kinds_are_valid_against_their_published_models(
    rendered: tuple[Manifest, ...],
) -> None:
    import jsonschema  # type: ignore[import-untyped,unused-ignore]
    from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
    from cloudcoil.models.prometheus_operator.v1 import PodMonitor, PrometheusRule, ServiceMonitor

    models: dict[str, Any] = {
        "ScaledObject": ScaledObject,
        "TriggerAuthentication": TriggerAuthentication,
        "ServiceMonitor": ServiceMonitor,
        "PodMonitor": PodMonitor,
        "PrometheusRule": PrometheusRule,
    }
    for doc in rendered:
        if doc["kind"] in models:
            models[doc["kind"]].model_validate(doc)
            jsonschema.validate(doc, strict_schema(models[doc["kind"]]))


def test_the_crds_are_valid_and_upgradeable_by_kubectl_apply() -> None:
    for crd_file in sorted((CHART / "crds").glob("*.yaml")):
        crd = yaml.safe_load(crd_file.read_text())
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(crd, version, strict=True)
    sample = yaml.safe_load((ROOT / "operator" / "samples" / "efficientnet-lite0.yaml").read_text())
    schema = yaml.safe_load((CHART / "crds" / "modelversion.yaml").read_text())["spec"]["versions"][0]
    import jsonschema  # type: ignore[import-untyped,unused-ignore]

    jsonschema.Draft4Validator(schema["schema"]["openAPIV3Schema"]).validate(sample)


def test_values_schema_refuses_unknown_keys_and_bad_enums_but_allows_global() -> None:
    unknown = run_helm("template", "r", str(CHART), "--set", "bogus=1", check=False)
    bad_enum = run_helm("template", "r", str(CHART), "--set", "api.service.type=Sideways", check=False)
    latest = run_helm("template", "r", str(CHART), "--set", "image.tag=latest", check=False)
    assert unknown.returncode != 0 and "bogus" in unknown.stderr
    assert bad_enum.returncode != 0 and "api/service/type" in bad_enum.stderr
    assert latest.returncode != 0
    assert run_helm("template", "r", str(CHART), "--set", "global.imageRegistry=x").returncode == 0


# -- secure by default ---------------------------------------------------------------------------------------


TOKEN_USERS = {f"{PREFIX}-operator", f"{PREFIX}-default-model"}


def test_every_pod_and_container_is_locked_down(rendered: tuple[Manifest, ...]) -> None:
    for name, spec in pod_specs(rendered):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in containers(spec):
            context = {**pod, **container.get("securityContext", {})}
            assert context.get("runAsUser", 0) != 0, (name, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
        uses_api = spec["serviceAccountName"] in TOKEN_USERS
        assert spec["automountServiceAccountToken"] is uses_api, (name, spec["serviceAccountName"])


def test_no_image_is_latest_and_ours_default_to_the_app_version(rendered: tuple[Manifest, ...]) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    for name, spec in pod_specs(rendered):
        for container in containers(spec):
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (name, image)
            if "aic-dev" in image:
                assert image.endswith(f":{app_version}"), image


def test_every_resource_is_named_and_labelled_for_the_release(rendered: tuple[Manifest, ...]) -> None:
    for doc in rendered:
        name = doc["metadata"]["name"]
        assert name.startswith(PREFIX) or name.startswith(f"{NAMESPACE}-{PREFIX}"), name
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE and labels["app.kubernetes.io/name"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels["app.kubernetes.io/component"]
        if doc["kind"] in ("Deployment", "StatefulSet"):
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items(), name


# -- RBAC ------------------------------------------------------------------------------------------------------


def rules(doc: Manifest) -> set[tuple[str, str, str]]:
    return {
        (g, r, v) for rule in doc["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


def test_the_operator_holds_only_the_verbs_it_uses() -> None:
    docs = render(str(CHART / "ci" / "default-values.yaml"))
    role = by_kind(docs, "Role")[f"{PREFIX}-operator"]
    expected = {
        *(("serving.aic.dev", "modelversions", v) for v in ("get", "list", "watch", "patch")),
        ("serving.aic.dev", "modelversions/status", "get"),
        ("serving.aic.dev", "modelversions/status", "patch"),
        ("", "events", "create"),
        *(("discovery.k8s.io", "endpointslices", v) for v in ("get", "list", "watch")),
    }
    assert rules(role) == expected
    [cluster] = by_kind(docs, "ClusterRole").values()
    assert rules(cluster) == {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
    job_role = by_kind(docs, "Role")[f"{PREFIX}-default-model"]
    assert rules(job_role) == {
        ("serving.aic.dev", "modelversions", "create"),
        ("serving.aic.dev", "modelversions", "patch"),
    }
    ha = render(str(CHART / "ci" / "ha-values.yaml"))
    peering = rules(by_kind(ha, "Role")[f"{PREFIX}-operator"]) - expected
    assert peering == {("kopf.dev", "kopfpeerings", v) for v in ("get", "list", "watch", "patch")}
    assert f"{PREFIX}-operator" in by_kind(ha, "KopfPeering")
    [operator] = [d for d in by_kind(ha, "Deployment").values() if d["metadata"]["name"].endswith("-operator")]
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OPERATOR_PEERING"] == f"{PREFIX}-operator"


# -- Triton, models, the default model --------------------------------------------------------------------------


def container(docs: tuple[Manifest, ...], deployment: str, name: str) -> Manifest:
    spec = by_kind(docs, "Deployment")[f"{PREFIX}-{deployment}"]["spec"]["template"]["spec"]
    return next(c for c in containers(spec) if c["name"] == name)


def test_triton_runs_explicit_model_control_with_probes_for_model_loading() -> None:
    docs = render(str(CHART / "ci" / "default-values.yaml"))
    triton = container(docs, "triton", "triton")
    assert "--model-control-mode=explicit" in triton["args"] and "--model-repository=/models" in triton["args"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = triton["startupProbe"]
    timeout = yaml.safe_load((CHART / "values.yaml").read_text())["triton"]["startupTimeoutSeconds"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= timeout
    assert {p["containerPort"] for p in triton["ports"]} == {8000, 8001, 8002}
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in triton["volumeMounts"]
    service = by_kind(docs, "Service")[f"{PREFIX}-triton"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    api = container(docs, "api", "api")
    assert (api["readinessProbe"]["httpGet"]["path"], api["livenessProbe"]["httpGet"]["path"]) == ("/readyz", "/livez")


def test_the_default_model_is_built_onto_the_volume_and_registered_after_install() -> None:
    docs = render(str(CHART / "ci" / "default-values.yaml"))
    job = by_kind(docs, "Job")[f"{PREFIX}-default-model"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    spec = job["spec"]["template"]["spec"]
    [build] = spec["initContainers"]
    [register] = spec["containers"]
    assert build["args"] == ["model", "build", "--repository", "/models/.default"]
    assert build["image"].startswith("ghcr.io/aic-dev/async-image-classifier-model-builder:")
    claim = f"{PREFIX}-models"
    assert register["args"] == ["models", "register", "/models/.default", "--source-root", f"pvc://{claim}/.default"]
    operator = container(docs, "operator", "operator")
    mounts = {m["mountPath"] for m in operator["volumeMounts"]}
    config = by_kind(docs, "ConfigMap")[f"{PREFIX}-config"]["data"]
    assert f"{config['PVC_MOUNT_ROOT']}/{claim}" in mounts and config["MODEL_REPOSITORY"] in mounts
    test_pod = by_kind(docs, "Pod")[f"{PREFIX}-test"]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = test_pod["spec"]["containers"][0]["args"]
    assert args[0] == "selftest" and args[args.index("--expect") + 1] == "Egyptian cat"


def test_a_small_install_keeps_models_in_an_emptydir_beside_one_triton() -> None:
    docs = render(str(CHART / "ci" / "small-values.yaml"))
    assert f"{PREFIX}-operator" not in by_kind(docs, "Deployment") and not by_kind(docs, "PersistentVolumeClaim")
    triton = by_kind(docs, "Deployment")[f"{PREFIX}-triton"]["spec"]["template"]["spec"]
    assert [c["name"] for c in triton["containers"]] == ["triton", "operator"]
    assert [c["name"] for c in triton["initContainers"]] == ["build-default-model", "register-default-model"]
    assert {"name": "models", "emptyDir": {}} in triton["volumes"]
    env = {e["name"]: e.get("value") for e in triton["containers"][1]["env"]}
    assert env["TRITON_URL"] == "127.0.0.1:8001"
    refused = run_helm(
        "template", "r", str(CHART), "-f", str(CHART / "ci" / "small-values.yaml"), "--set", "triton.replicas=2",
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "triton.replicas must be 1" in refused.stderr


@pytest.mark.parametrize(("values", "kind"), [("gpu-values.yaml", "KIND_GPU"), ("cpu-only-values.yaml", "KIND_CPU")])
def test_gpu_and_cpu_installs_render_valid_instance_groups_through_the_operator(values: str, kind: str) -> None:
    docs = render(str(CHART / "ci" / values))
    config = by_kind(docs, "ConfigMap")[f"{PREFIX}-config"]["data"]
    backends = tuple(config["TRITON_BACKENDS"].split(","))
    sample = yaml.safe_load((ROOT / "operator" / "samples" / "efficientnet-lite0.yaml").read_text())
    state = desired_state("m", parse(sample["spec"]), backends, config["TRITON_HAS_GPU"] == "true")
    rendered = text_format.Parse(state.config_pbtxt, pb.ModelConfig())
    assert [pb.ModelInstanceGroup.Kind.Name(g.kind) for g in rendered.instance_group] == [kind]
    triton = container(docs, "triton", "triton")
    gpus = triton["resources"]["limits"].get("nvidia.com/gpu")
    spec = by_kind(docs, "Deployment")[f"{PREFIX}-triton"]["spec"]["template"]["spec"]
    if kind == "KIND_GPU":
        assert gpus == 1 and "tensorrt" in backends and config["TRITON_HAS_GPU"] == "true"
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    else:
        assert gpus is None and "nodeSelector" not in spec and config["TRITON_HAS_GPU"] == "false"


# -- scaling and disruption -------------------------------------------------------------------------------------


def test_keda_scales_dispatchers_with_one_lag_trigger_per_priority_queue() -> None:
    docs = render(str(CHART / "ci" / "keda-values.yaml"))
    [scaled] = by_kind(docs, "ScaledObject").values()
    triggers = scaled["spec"]["triggers"]
    assert [t["metadata"]["stream"] for t in triggers] == ["queue:urgent", "queue:high", "queue:normal", "queue:low"]
    for trigger in triggers:
        assert trigger["type"] == "redis-streams"
        assert trigger["metadata"]["consumerGroup"] == "dispatchers" and trigger["metadata"]["lagCount"] == "16"
        assert trigger["metadata"]["address"] == f"{PREFIX}-redis:6379"
    [auth] = by_kind(docs, "TriggerAuthentication").values()
    assert triggers[0]["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": f"{PREFIX}-secrets", "key": "redis-password"}
    ]
    assert f"{PREFIX}-dispatcher" not in by_kind(docs, "HorizontalPodAutoscaler")
    assert "replicas" not in by_kind(docs, "Deployment")[f"{PREFIX}-dispatcher"]["spec"]
    both = run_helm(
        "template", "r", str(CHART), "--set", "keda.enabled=true", "--set", "dispatcher.autoscaling.enabled=true",
        check=False,
    )  # fmt: skip
    assert both.returncode != 0 and "mutually exclusive" in both.stderr


def test_an_external_redis_is_used_with_the_users_secret() -> None:
    docs = render(str(CHART / "ci" / "external-redis-values.yaml"))
    assert not by_kind(docs, "StatefulSet")
    config = by_kind(docs, "ConfigMap")[f"{PREFIX}-config"]["data"]
    assert config["REDIS_URL"] == "rediss://redis.example.internal:6380/0"
    env = container(docs, "api", "api")["env"]
    password = next(e for e in env if e["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert password == {"name": "managed-redis", "key": "password"}
    [scaled] = by_kind(docs, "ScaledObject").values()
    assert scaled["spec"]["triggers"][0]["metadata"]["address"] == "redis.example.internal:6380"
    assert scaled["spec"]["triggers"][0]["metadata"]["enableTLS"] == "true"


REDIS_CLUSTER_VALUES = str(CHART / "ci" / "redis-cluster-values.yaml")


def shard_streams(shards: int) -> list[tuple[str, str]]:
    """(trigger name, stream) of every shard's priority streams, as the processes name the streams."""
    return [
        (f"shard{i}_{priority}", f"queue:{{{tag}}}:{priority}")
        for i, tag in enumerate(chart_shard_tags.shard_tags(shards))
        for priority in Priority
    ]


def test_keda_follows_the_summed_lag_of_every_shard_stream_of_a_redis_cluster() -> None:
    docs = render(REDIS_CLUSTER_VALUES)
    [scaled] = by_kind(docs, "ScaledObject").values()
    triggers = scaled["spec"]["triggers"]
    assert len(triggers) == 4 * 16
    assert [(t["name"], t["metadata"]["stream"]) for t in triggers] == shard_streams(16)
    [auth] = by_kind(docs, "TriggerAuthentication").values()
    for trigger in triggers:
        assert trigger["type"] == "redis-cluster-streams"
        assert trigger["metadata"]["addresses"] == "redis-cluster.redis.svc.cluster.local:6379"
        assert trigger["metadata"]["consumerGroup"] == "dispatchers" and trigger["metadata"]["lagCount"] == "32"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "redis-cluster", "key": "redis-password"}
    ]
    modifiers = scaled["spec"]["advanced"]["scalingModifiers"]
    assert modifiers["formula"].split(" + ") == [t["name"] for t in triggers]  # the sum of exactly those lags
    assert modifiers["target"] == "32" and modifiers["metricType"] == "AverageValue"


def test_shards_on_one_redis_sum_one_redis_streams_trigger_per_shard_stream() -> None:
    docs = render(None, "keda.enabled=true", "queue.shards=3")
    assert by_kind(docs, "ConfigMap")[f"{PREFIX}-config"]["data"]["QUEUE_SHARDS"] == "3"
    [scaled] = by_kind(docs, "ScaledObject").values()
    triggers = scaled["spec"]["triggers"]
    assert [(t["name"], t["metadata"]["stream"]) for t in triggers] == shard_streams(3)
    assert {(t["type"], t["metadata"]["address"]) for t in triggers} == {("redis-streams", f"{PREFIX}-redis:6379")}
    assert scaled["spec"]["advanced"]["scalingModifiers"]["formula"].split(" + ") == [t["name"] for t in triggers]


def redis_env(docs: tuple[Manifest, ...]) -> dict[tuple[str, str], dict[str, Any]]:
    """The Redis settings each container that talks to Redis sees (ConfigMaps it reads whole, then its env)."""
    maps = by_kind(docs, "ConfigMap")
    seen = {}
    for name, spec in pod_specs(docs):
        for c in containers(spec):
            env: dict[str, Any] = {}
            for source in c.get("envFrom", []):
                env |= maps[source["configMapRef"]["name"]]["data"]
            env |= {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}
            if {"REDIS_URL", "REDIS_PASSWORD"} & set(env):
                seen[(name, c["name"])] = env
    return seen


def test_every_process_that_talks_to_a_redis_cluster_is_told_so_and_shares_the_shards() -> None:
    seen = redis_env(render(REDIS_CLUSTER_VALUES))
    assert {f"{PREFIX}-api", f"{PREFIX}-dispatcher", f"{PREFIX}-operator"} <= {name for name, _ in seen}
    for where, env in seen.items():
        assert env["REDIS_URL"] == "redis://redis-cluster.redis.svc.cluster.local:6379", where
        assert env["REDIS_CLUSTER"] == "true" and env["QUEUE_SHARDS"] == "16", where
    for where, env in redis_env(render(str(CHART / "ci" / "default-values.yaml"))).items():
        assert "REDIS_CLUSTER" not in env and "QUEUE_SHARDS" not in env, where  # one Redis: as before


@pytest.mark.parametrize(
    ("sets", "error"),
    [
        (("externalRedis.cluster=true",), "externalRedis.cluster needs an external Redis Cluster"),
        (("externalRedis.url=redis://node:6379/2",), "a Redis Cluster has database 0 only"),
        (("config.REDIS_DB=1",), "a Redis Cluster has database 0 only"),
        (("queue.shards=65",), "queue/shards"),
        (("config.QUEUE_SHARDS=4",), "set queue.shards, not config.QUEUE_SHARDS"),
        (("config.REDIS_CLUSTER=true",), "set externalRedis.cluster, not config.REDIS_CLUSTER"),
    ],
)
def test_a_redis_cluster_the_chart_cannot_serve_is_refused_with_the_reason(sets: tuple[str, ...], error: str) -> None:
    base = () if sets[0] == "externalRedis.cluster=true" else ("-f", REDIS_CLUSTER_VALUES)
    args = [x for item in sets for x in ("--set", item)]
    result = run_helm("template", "r", str(CHART), *base, *args, check=False)
    assert result.returncode != 0 and error in result.stderr, result.stderr


def test_notes_tell_a_cluster_install_that_every_process_shares_the_shards() -> None:
    def notes(*args: str) -> str:
        return run_helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client", *args).stdout.split(
            "NOTES:", 1
        )[1]

    assert "queue shards" not in notes()
    cluster = notes("-f", REDIS_CLUSTER_VALUES)
    assert "Jobs are spread over 16 queue shards (QUEUE_SHARDS=16, REDIS_CLUSTER=true" in cluster
    assert "Every process that uses this Redis must share them" in cluster


def test_the_bundled_redis_keeps_an_append_only_file_behind_a_password() -> None:
    docs = render(str(CHART / "ci" / "default-values.yaml"))
    [redis] = by_kind(docs, "StatefulSet").values()
    server = redis["spec"]["template"]["spec"]["containers"][0]
    args = server["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and "$(REDIS_PASSWORD)" in args
    # the same persistence as `aic up`'s Valkey and the bench's redis-server
    for name, value in PERSISTENCE.items():
        assert args[args.index(f"--{name}") + 1] == value, name
    assert int(server["image"].rsplit(":", 1)[1].split(".")[0]) >= 7  # KEDA's lag trigger needs Redis 7
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("default-values.yaml", {"api", "dispatcher"}),
        ("small-values.yaml", set()),
        ("ha-values.yaml", {"api", "dispatcher", "operator", "triton"}),
        ("keda-values.yaml", {"api"}),  # KEDA may scale dispatchers to zero
    ],
)
def test_disruption_budgets_exist_only_for_components_with_more_than_one_replica(
    values: str, expected: set[str]
) -> None:
    budgets = by_kind(render(str(CHART / "ci" / values)), "PodDisruptionBudget")
    assert {name.removeprefix(f"{PREFIX}-") for name in budgets} == expected


def test_the_api_scales_on_cpu_and_spreads_over_nodes() -> None:
    docs = render(str(CHART / "ci" / "default-values.yaml"))
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[f"{PREFIX}-api"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    spread = by_kind(docs, "Deployment")[f"{PREFIX}-api"]["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"


# -- network -----------------------------------------------------------------------------------------------------


def peers(rule: Manifest) -> set[str]:
    return {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in rule.get("from") or rule.get("to") or []
        if "podSelector" in p and "app.kubernetes.io/component" in p["podSelector"].get("matchLabels", {})
    }


def test_network_policies_allow_only_the_data_path() -> None:
    docs = render(str(CHART / "ci" / "ingress-tls-netpol-values.yaml"))
    policies = {name.removeprefix(f"{PREFIX}-"): d["spec"] for name, d in by_kind(docs, "NetworkPolicy").items()}
    assert set(policies) == {"api", "dispatcher", "operator", "triton", "redis", "default-model", "test"}
    assert all(p["policyTypes"] == ["Ingress", "Egress"] for p in policies.values())
    [to_redis] = policies["redis"]["ingress"]
    assert peers(to_redis) == {"api", "dispatcher", "operator"} and to_redis["ports"] == [
        {"protocol": "TCP", "port": 6379}
    ]
    assert policies["redis"]["egress"] == []
    inference = next(r for r in policies["triton"]["ingress"] if r["ports"] == [{"protocol": "TCP", "port": 8001}])
    assert peers(inference) == {"dispatcher", "operator"}
    # metrics are on here: scrapers are the one peer of dispatchers and the operator
    scrapers = [{"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 9090}]}]
    assert policies["dispatcher"]["ingress"] == scrapers and policies["operator"]["ingress"] == scrapers
    assert {frozenset(peers(r)) for r in policies["dispatcher"]["egress"]} >= {
        frozenset({"redis"}),
        frozenset({"triton"}),
    }
    webhooks = next(r for r in policies["dispatcher"]["egress"] if r.get("ports") == [{"protocol": "TCP", "port": 443}])
    assert "10.0.0.0/8" in webhooks["to"][0]["ipBlock"]["except"]
    kube_api = [
        r for r in policies["operator"]["egress"] if r["to"][0].get("ipBlock", {}).get("cidr") == "10.96.0.1/32"
    ]
    assert kube_api and {p["port"] for p in kube_api[0]["ports"]} == {443, 6443}
    ingress = by_kind(docs, "Ingress")[f"{PREFIX}-api"]
    assert ingress["spec"]["tls"] == [{"secretName": "classify-example-com-tls", "hosts": ["classify.example.com"]}]
    assert f"{PREFIX}-triton" in by_kind(docs, "ServiceMonitor")
    triton = container(docs, "triton", "triton")
    assert "--trace-config=mode=opentelemetry" in triton["args"]
    assert "--trace-config=opentelemetry,url=http://otel-collector.observability:4318/v1/traces" in triton["args"]


# -- metrics, traces and logs ------------------------------------------------------------------------------------

OBSERVABILITY = str(CHART / "ci" / "observability-values.yaml")
SMALL = str(CHART / "ci" / "small-values.yaml")
METRICS_ON = ("metrics.enabled=true", "metrics.serviceMonitor.enabled=true")
MONITORING_NAMESPACE = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
"""networkPolicy.metricsFrom of ci/observability-values.yaml."""
CONTRACT_METRICS = {
    *(name for names in service_metrics().values() for name in names),
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "up",
}
"""The metric names the service (read from its code) and Triton emit: nothing else may be queried."""
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")


def promql(expr: str) -> Any:
    """The parsed expression (Grafana's interval variables read as 5m); ValueError when it is not PromQL."""
    import promql_parser

    for variable in GRAFANA_INTERVALS:
        expr = expr.replace(variable, "5m")
    return promql_parser.parse(expr)


def metric_names(expr: str) -> set[str]:
    import promql_parser

    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            by_label = [m.value for m in node.matchers.matchers if m.name == "__name__"]
            names.update([node.name] if node.name else by_label)

    promql_parser.walk(promql(expr), visit)
    return names


def observed(*sets: str) -> tuple[Manifest, ...]:
    return render(OBSERVABILITY, *sets)


def dashboard(docs: tuple[Manifest, ...]) -> Manifest:
    config_map = by_kind(docs, "ConfigMap")[f"{PREFIX}-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    loaded: Manifest = json.loads(config_map["data"]["aic.json"])
    return loaded


def all_panels(board: Manifest) -> list[Manifest]:
    return [p for top in board["panels"] for p in (top, *top.get("panels", []))]


def alerts(docs: tuple[Manifest, ...]) -> dict[str, Manifest]:
    [rule] = by_kind(docs, "PrometheusRule").values()
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def env_of(c: Manifest) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def aic_containers(docs: tuple[Manifest, ...]) -> dict[str, Manifest]:
    """The api, dispatcher and operator containers by name, wherever the operator runs (its Deployment, or the
    Triton Pod of a small install)."""
    found = {}
    for _, spec in pod_specs(docs):
        for c in spec["containers"]:
            if c["name"] in ("api", "dispatcher", "operator"):
                found[c["name"]] = c
    assert set(found) == {"api", "dispatcher", "operator"}
    return found


def matches(selector: Manifest, labels: Manifest) -> bool:
    return bool(selector["matchLabels"]) and selector["matchLabels"].items() <= labels.items()


def scraped_ports(docs: tuple[Manifest, ...]) -> dict[str, set[int]]:
    """Every monitor resolved to what Prometheus scrapes: component of the selected Pods -> container ports. A
    ServiceMonitor's port is a named Service port (its targetPort a named container port), a PodMonitor's a
    named container port; every one must resolve, in the release's namespace, on /metrics."""
    pods = [
        (d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] == "Deployment"
    ]
    scraped: dict[str, set[int]] = {}
    for doc in docs:
        if doc["kind"] not in ("ServiceMonitor", "PodMonitor"):
            continue
        spec = doc["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}, doc["metadata"]["name"]
        [endpoint] = spec.get("endpoints", spec.get("podMetricsEndpoints"))
        assert endpoint["path"] == "/metrics", doc["metadata"]["name"]
        port_name = endpoint["port"]
        if doc["kind"] == "ServiceMonitor":
            [service] = [
                s for s in by_kind(docs, "Service").values() if matches(spec["selector"], s["metadata"]["labels"])
            ]
            [port] = [p for p in service["spec"]["ports"] if p["name"] == port_name]
            port_name, selector = port["targetPort"], {"matchLabels": service["spec"]["selector"]}
        else:
            selector = spec["selector"]
        selected = [(labels, pod) for labels, pod in pods if matches(selector, labels)]
        assert selected, doc["metadata"]["name"]
        for labels, pod in selected:
            ports = [p for c in pod["containers"] for p in c.get("ports", [])]
            [number] = [p["containerPort"] for p in ports if p["name"] == port_name]
            assert len({p["name"] for p in ports}) == len(ports), "port names are unique in a Pod"
            scraped.setdefault(labels["app.kubernetes.io/component"], set()).add(number)
    return scraped


@pytest.mark.parametrize(
    ("values", "sets", "expected"),
    [
        (OBSERVABILITY, (), {"api": {8000}, "dispatcher": {9464}, "operator": {9464}, "triton": {8002}}),
        # the operator beside Triton: its port and Triton's, both in the Triton Pod
        (SMALL, METRICS_ON, {"api": {8000}, "dispatcher": {9464}, "triton": {8002, 9464}}),
    ],
    ids=["observability", "small"],
)
def test_metrics_port_container_port_and_monitors_agree(
    values: str, sets: tuple[str, ...], expected: dict[str, set[int]]
) -> None:
    docs = render(values, *sets, "metrics.port=9464")
    for name in ("dispatcher", "operator"):
        c = aic_containers(docs)[name]
        assert env_of(c)["METRICS_PORT"] == "9464", name
        assert [p["containerPort"] for p in c["ports"] if p["name"].endswith("metrics")] == [9464], name
    assert "METRICS_PORT" not in env_of(aic_containers(docs)["api"])  # the API serves /metrics on its own port
    monitors = {
        d["metadata"]["name"].removeprefix(f"{PREFIX}-"): d["kind"] for d in docs if d["kind"].endswith("Monitor")
    }
    assert monitors == {
        "api": "ServiceMonitor",
        "triton": "ServiceMonitor",
        "dispatcher": "PodMonitor",
        "operator": "PodMonitor",
    }
    assert scraped_ports(docs) == expected
    selected_by = (
        yaml.safe_load(Path(values).read_text()).get("metrics", {}).get("serviceMonitor", {}).get("labels", {})
    )
    for monitor in (d for d in docs if d["kind"].endswith("Monitor")):  # what the Prometheus instance selects by
        assert selected_by.items() <= monitor["metadata"]["labels"].items(), monitor["metadata"]["name"]


@pytest.mark.parametrize("values", [None, SMALL], ids=["default", "small"])
def test_without_metrics_nothing_listens_and_nothing_is_scraped(values: str | None) -> None:
    wanted = (
        "metrics.serviceMonitor.enabled=true",
        "metrics.dashboards.enabled=true",
        "metrics.prometheusRule.enabled=true",
    )
    docs = render(values, *wanted)
    operator = aic_containers(docs)["operator"]
    assert env_of(operator)["METRICS_PORT"] == "0"
    assert not [p for p in operator.get("ports", []) if p["name"].endswith("metrics")]
    dispatcher = aic_containers(docs)["dispatcher"]  # listens for its probes, scraped by nobody
    assert env_of(dispatcher)["METRICS_PORT"] == "9090"
    assert [p["containerPort"] for p in dispatcher["ports"] if p["name"] == "metrics"] == [9090]
    assert not [d for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule")]
    assert f"{PREFIX}-dashboard" not in by_kind(docs, "ConfigMap")


@pytest.mark.parametrize("values", [None, SMALL], ids=["default", "small"])
@pytest.mark.parametrize("metrics", ["false", "true"])
def test_dispatchers_and_the_operator_declare_readiness_and_liveness_on_ports_they_listen_on(
    values: str | None, metrics: str
) -> None:
    docs = render(values, f"metrics.enabled={metrics}", "metrics.port=9464")
    dispatcher = aic_containers(docs)["dispatcher"]
    probes = {kind: dispatcher[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes == {
        "readinessProbe": {"path": "/readyz", "port": "metrics"},
        "livenessProbe": {"path": "/livez", "port": "metrics"},
    }
    ports = {p["name"]: p["containerPort"] for p in dispatcher["ports"]}
    assert ports["metrics"] == int(env_of(dispatcher)["METRICS_PORT"]) == 9464  # what the process listens on
    operator = aic_containers(docs)["operator"]
    probes = {kind: operator[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes == {
        "readinessProbe": {"path": "/healthz", "port": "health"},
        "livenessProbe": {"path": "/healthz", "port": "health"},
    }
    config = by_kind(docs, "ConfigMap")[f"{PREFIX}-config"]["data"]
    assert {p["name"]: p["containerPort"] for p in operator["ports"]}["health"] == int(config["OPERATOR_HEALTH_PORT"])


def test_network_policies_let_the_scrapers_reach_every_scraped_port() -> None:
    small = (
        *METRICS_ON,
        "networkPolicy.enabled=true",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
    )
    for docs in (observed(), render(SMALL, *small)):
        policies = {
            d["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: d["spec"]
            for d in by_kind(docs, "NetworkPolicy").values()
        }
        for component, ports in scraped_ports(docs).items():
            allowed = {
                p["port"]
                for rule in policies[component]["ingress"]
                if rule["from"] == MONITORING_NAMESPACE
                for p in rule["ports"]
            }
            assert ports <= allowed, (component, ports, allowed)
    off = by_kind(
        render(str(CHART / "ci" / "ingress-tls-netpol-values.yaml"), "metrics.enabled=false"), "NetworkPolicy"
    )
    assert off[f"{PREFIX}-dispatcher"]["spec"]["ingress"] == [] and off[f"{PREFIX}-operator"]["spec"]["ingress"] == []


def test_every_alert_and_panel_expression_is_promql_over_the_contracts_metrics() -> None:
    docs = observed()
    expressions = {f"alert {name}": rule["expr"] for name, rule in alerts(docs).items()}
    board = dashboard(docs)
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            expressions[f"panel {panel['title']} {target['refId']}"] = target["expr"]
    assert len(expressions) > 30
    used: set[str] = set()
    for where, expr in expressions.items():
        names = metric_names(expr)  # parses, or raises ValueError naming the fault
        assert names, where
        assert names <= CONTRACT_METRICS, (where, names - CONTRACT_METRICS)
        used |= names
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            [metric] = re.findall(r"label_values\((\w+),", variable["definition"])
            assert metric in CONTRACT_METRICS, variable["name"]
    assert {"aic_job_duration_seconds_bucket", "aic_webhook_deliveries_total", "up"} <= used


REQUIRED_PANELS = {
    "Throughput": {"aic_jobs_submitted_total", "aic_jobs_completed_total", "aic_jobs_failed_total"},
    "End-to-end latency": {"aic_job_duration_seconds_bucket"},
    "Latency per stage (p95)": {"aic_job_stage_duration_seconds_bucket"},
    "Queue depth": {"aic_queue_depth"},
    "Oldest job age": {"aic_queue_oldest_job_age_seconds"},
    "HTTP error rate (5xx)": {"aic_http_requests_total"},
    "Job failure rate": {"aic_jobs_failed_total", "aic_jobs_completed_total"},
    "Triton call latency (p99)": {"aic_triton_request_duration_seconds_bucket"},
    "Triton errors": {"aic_triton_errors_total"},
    "Batch size": {"aic_batch_size_sum", "aic_batch_size_count", "aic_batch_size_bucket"},
    "Webhook outcomes": {"aic_webhook_deliveries_total"},
}


def test_the_dashboard_has_the_promised_panels_with_unique_ids_on_the_chosen_datasource() -> None:
    board = dashboard(observed())
    assert board == json.loads((CHART / "dashboards" / "aic.json").read_text())
    panels = all_panels(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    by_title = {p["title"]: p for p in panels if p["type"] != "row"}
    assert len(by_title) == len([p for p in panels if p["type"] != "row"]), "panel titles are unique"
    for title, metrics in REQUIRED_PANELS.items():
        exprs = [t["expr"] for t in by_title[title]["targets"]]
        assert metrics <= set().union(*map(metric_names, exprs)), title
    e2e = [promql(t["expr"]) for t in by_title["End-to-end latency"]["targets"]]
    assert sorted(e.args[0].val for e in e2e) == [0.5, 0.95, 0.99]
    assert any('status_code=~"5.."' in t["expr"] for t in by_title["HTTP error rate (5xx)"]["targets"])
    [datasource] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    chosen = f"${{{datasource['name']}}}"
    for panel in panels:
        if panel["type"] != "row":
            refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
            assert all(ref["uid"] == chosen for ref in refs), panel["title"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == chosen, variable["name"]


def test_the_alerts_carry_severity_summary_description_and_a_runbook_of_the_chart() -> None:
    docs = observed("metrics.prometheusRule.oldestJobAgeSeconds=120", "metrics.prometheusRule.jobFailureRatio=0.1")
    rules = alerts(docs)
    assert set(rules) == {
        "AicQueueOldestJobTooOld",
        "AicJobFailureRateHigh",
        "AicNoDispatchers",
        "AicTritonDown",
        "AicWebhookDeliveriesFailing",
    }
    readme = (CHART / "README.md").read_text()
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        page, anchor = rule["annotations"]["runbook_url"].split("#")
        assert page.endswith("/charts/async-image-classifier/README.md") and anchor == name.lower(), name
        assert f"\n### {name}\n" in readme, name
        assert f'namespace="{NAMESPACE}"' in rule["expr"], f"{name} watches this release's namespace only"
    oldest = promql(rules["AicQueueOldestJobTooOld"]["expr"])
    assert (str(oldest.op), oldest.rhs.val, rules["AicQueueOldestJobTooOld"]["for"]) == (">", 120, "5m")
    failing = promql(rules["AicJobFailureRateHigh"]["expr"])
    assert (str(failing.op), failing.rhs.val) == (">", 0.1)
    assert "[10m]" in rules["AicJobFailureRateHigh"]["expr"]
    assert "absent(aic_dispatcher_ready" in rules["AicNoDispatchers"]["expr"]
    triton = rules["AicTritonDown"]["expr"]
    scrape_job = f'up{{job="{PREFIX}-triton"'  # a ServiceMonitor's job label is its Service's name
    assert scrape_job in triton and f"{PREFIX}-triton" in by_kind(docs, "Service")
    assert 'aic_triton_errors_total{kind="outage"' in triton and "[5m]" in triton
    assert 'outcome="failed"' in rules["AicWebhookDeliveriesFailing"]["expr"]
    assert "[15m]" in rules["AicWebhookDeliveriesFailing"]["expr"]
    [rule] = by_kind(docs, "PrometheusRule").values()
    assert rule["metadata"]["labels"]["release"] == "prometheus"


def test_no_dispatchers_is_an_alert_only_while_jobs_come_when_keda_may_scale_to_zero() -> None:
    always = alerts(observed())["AicNoDispatchers"]["expr"]
    to_zero = alerts(observed("keda.enabled=true", "keda.minReplicaCount=0"))["AicNoDispatchers"]["expr"]
    assert "aic_jobs_submitted_total" not in always
    assert metric_names(to_zero) == {"aic_dispatcher_ready", "aic_jobs_submitted_total"}


def test_traces_reach_every_component_and_triton_only_with_an_endpoint() -> None:
    docs = observed()
    config = by_kind(docs, "ConfigMap")[f"{PREFIX}-config"]["data"]
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318"
    for name, c in aic_containers(docs).items():
        assert c["envFrom"] == [{"configMapRef": {"name": f"{PREFIX}-config"}}], name
        assert env_of(c)["OTEL_SERVICE_NAME"] == f"aic-{name}"
    args = container(docs, "triton", "triton")["args"]
    assert [a for a in args if a.startswith("--trace-config")] == [
        "--trace-config=mode=opentelemetry",
        "--trace-config=rate=10",
        "--trace-config=level=TIMESTAMPS",
        "--trace-config=opentelemetry,url=http://otel-collector.observability.svc:4318/v1/traces",
        "--trace-config=opentelemetry,resource=service.name=triton",
    ]
    for policy in by_kind(docs, "NetworkPolicy").values():  # every Pod that exports may reach the collector
        component = policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        if component in ("api", "dispatcher", "operator", "triton"):
            ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])]
            assert 4318 in ports, component
    plain = render(None)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in by_kind(plain, "ConfigMap")[f"{PREFIX}-config"]["data"]
    assert not [a for a in container(plain, "triton", "triton")["args"] if "trace" in a]
    assert env_of(aic_containers(plain)["dispatcher"])["OTEL_SERVICE_NAME"] == "aic-dispatcher"


def test_the_charts_dispatchers_keep_two_batches_in_flight_where_the_code_keeps_one() -> None:
    """A dispatcher Pod has cores of its own beside Triton's Pods: its next batch decodes while Triton runs one.
    The code's default is for one machine shared with Triton (aic up), where a second batch only split the queue."""
    docs = render(None)
    config = by_kind(docs, "ConfigMap")[f"{PREFIX}-config"]["data"]
    assert aic_containers(docs)["dispatcher"]["envFrom"] == [{"configMapRef": {"name": f"{PREFIX}-config"}}]
    assert load(DispatcherSettings, config).dispatcher_concurrency == 2
    assert load(DispatcherSettings, {}).dispatcher_concurrency == 1


def test_logs_are_json_lines_unless_told_otherwise() -> None:
    assert by_kind(render(None), "ConfigMap")[f"{PREFIX}-config"]["data"]["LOG_FORMAT"] == "json"
    console = render(None, "config.LOG_FORMAT=console")
    assert by_kind(console, "ConfigMap")[f"{PREFIX}-config"]["data"]["LOG_FORMAT"] == "console"


def routes(path: str, rule_path: str, path_type: str) -> bool:
    """Whether an Ingress path routes ``path`` (Kubernetes' Exact and element-wise Prefix matching)."""
    if path_type == "Exact":
        return path == rule_path
    prefix = [p for p in rule_path.split("/") if p]
    return [p for p in path.split("/") if p][: len(prefix)] == prefix


@pytest.mark.parametrize("values", [None, str(CHART / "ci" / "ingress-tls-netpol-values.yaml")])
def test_the_ingress_routes_the_api_and_the_page_but_never_metrics(values: str | None) -> None:
    docs = render(values, "ingress.enabled=true", "metrics.enabled=true")
    [ingress] = by_kind(docs, "Ingress").values()
    paths = [(p["path"], p["pathType"]) for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    for public in ("/api/v1/jobs", "/api/v1/health", "/", "/static/app.js", "/schema/swagger"):
        assert any(routes(public, *p) for p in paths), public
    for private in ("/metrics", "/metrics/", "/livez", "/readyz"):
        assert not any(routes(private, *p) for p in paths), private


@pytest.mark.parametrize(
    ("path", "path_type"),
    [("/", "Prefix"), ("/metrics", "Exact"), ("/metrics", "Prefix"), ("/", "ImplementationSpecific")],
)
def test_an_ingress_path_that_would_publish_metrics_is_refused(path: str, path_type: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    paths = [{"path": "/api/v1", "pathType": "Prefix"}, {"path": path, "pathType": path_type}]
    values.write_text(yaml.safe_dump({"ingress": {"enabled": True, "hosts": [{"host": "a.example", "paths": paths}]}}))
    refused = run_helm("template", "r", str(CHART), "-f", str(values), check=False)
    assert refused.returncode != 0 and "/metrics" in refused.stderr, refused.stderr


# -- settings and secrets --------------------------------------------------------------------------------------


def test_settings_use_the_readmes_variable_names() -> None:
    known = {
        f.upper()
        for cls in (ApiSettings, RedisSettings, TritonSettings, DispatcherSettings, QueueSettings, WebhookSettings)
        for f in cls.__dataclass_fields__
    } | {f.upper() for f in OperatorSettings.__dataclass_fields__}
    readme = (ROOT / "README.md").read_text()
    for values in CI:
        config = by_kind(render(str(values)), "ConfigMap")[f"{PREFIX}-config"]["data"]
        unknown = {k for k in config if k not in known and not k.startswith("OTEL_")}
        assert unknown == set(), (values.name, unknown)
        for name in config:
            if name.lower() in ApiSettings.__dataclass_fields__ or name in (
                "REDIS_URL",
                "TRITON_URL",
                "MODEL_REPOSITORY",
            ):
                assert f"`{name}`" in readme, name


@pytest.mark.parametrize(
    ("sets", "trusted"),
    [
        ((), None),  # no ingress: the client IP is the TCP peer
        (("ingress.enabled=true",), "*"),  # clients arrive through the controller
        (("ingress.enabled=true", "api.forwardedAllowIps=10.42.0.0/16"), "10.42.0.0/16"),
        (("api.forwardedAllowIps=192.0.2.10",), "192.0.2.10"),
    ],
)
def test_proxy_headers_are_believed_only_behind_an_ingress_or_a_named_proxy(
    sets: tuple[str, ...], trusted: str | None
) -> None:
    config = by_kind(render(None, *sets), "ConfigMap")[f"{PREFIX}-config"]["data"]
    assert config.get("FORWARDED_ALLOW_IPS") == trusted


def test_api_and_dispatchers_share_the_key_that_seals_webhook_secrets() -> None:
    docs = render(None)
    for component in ("api", "dispatcher"):
        env = {e["name"]: e for e in container(docs, component, component)["env"]}
        assert env["SECRET_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secret-key"
        own = env["WEBHOOK_SECRETS_KEY"]["valueFrom"]["secretKeyRef"]
        assert (own["key"], own["optional"]) == ("webhook-secrets-key", True)
        assert env["WEBHOOK_SECRETS_KEY_PREVIOUS"]["valueFrom"]["secretKeyRef"]["optional"] is True


# -- uploads in an object store ----------------------------------------------------------------------------------

OBJECT_STORE = str(CHART / "ci" / "object-store-values.yaml")
STORE_SETTINGS = {f.upper() for f in ObjectStoreSettings.__dataclass_fields__}
AWS_KEYS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL"]


def env_refs(c: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in c.get("env", [])}


MARKED = "networkPolicy.objectStoreTo[0].ipBlock.cidr=203.0.113.0/24"
"""A store peer no other rule has: without a url, no NetworkPolicy may carry it."""


@pytest.mark.parametrize("values", [None, *(str(v) for v in CI if v.name != "object-store-values.yaml")])
def test_without_a_url_uploads_stay_in_redis_and_nothing_of_the_store_is_rendered(values: str | None) -> None:
    docs = render(values, MARKED)
    for name, c in aic_containers(docs).items():
        store = {n for n in env_refs(c) if n in STORE_SETTINGS or n.startswith(("AWS_", "GOOGLE_", "AZURE_"))}
        assert store == set(), name
        assert all(m["name"] != "uploads" for m in c["volumeMounts"]), name
    assert "203.0.113.0/24" not in json.dumps(by_kind(docs, "NetworkPolicy"))


def test_the_store_and_its_settings_reach_the_api_and_the_dispatchers_but_not_the_operator() -> None:
    found = aic_containers(render(OBJECT_STORE))
    assert not {n for n in env_refs(found["operator"]) if n in STORE_SETTINGS or n.startswith("AWS_")}
    for component in ("api", "dispatcher"):
        env = env_of(found[component])
        values = {n: v for n, v in env.items() if n in STORE_SETTINGS}
        assert values == {
            "OBJECT_STORE_URL": "s3://aic/uploads",
            "OBJECT_STORE_TIMEOUT_S": "30",
            "OBJECT_STORE_RETRY_TIMEOUT_S": "5",
            "MAX_UPLOAD_SIZE": "52428800",
            "UPLOAD_URL_TTL_S": "900",
            "UPLOAD_SWEEP_INTERVAL_S": "120",
            "UPLOAD_STRAY_AGE_S": "900",
        }, component
        # the code reads them as the chart means them; the defaults are the code's
        loaded = load(ObjectStoreSettings, {n: v for n, v in values.items() if v is not None})
        assert loaded == ObjectStoreSettings(object_store_url="s3://aic/uploads", upload_sweep_interval_s=120.0)
        assert (env["AWS_ENDPOINT_URL"], env["AWS_REGION"]) == ("http://minio.minio:9000", "us-east-1")
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in STORE_SETTINGS)


def test_the_credentials_secret_is_mapped_key_by_key_and_values_win_over_its_keys() -> None:
    for component in ("api", "dispatcher"):
        # the endpoint and the region are values in the ci file: only the credentials come from the Secret
        refs = env_refs(container(render(OBJECT_STORE), component, component))
        from_secret = {
            n: e["valueFrom"]["secretKeyRef"] for n, e in refs.items() if n.startswith("AWS_") and "valueFrom" in e
        }
        assert from_secret == {
            key: {"name": "aic-object-store", "key": key, "optional": True} for key in AWS_KEYS[:3]
        }, component
        assert refs["AWS_ENDPOINT_URL"]["value"] == "http://minio.minio:9000"
    secret_only = render(None, "objectStore.url=s3://aic/uploads", "objectStore.existingSecret=creds")
    refs = env_refs(container(secret_only, "api", "api"))
    assert [n for n in refs if n.startswith("AWS_")] == AWS_KEYS
    assert all(refs[k]["valueFrom"]["secretKeyRef"]["name"] == "creds" for k in AWS_KEYS)
    azure = render(
        None,
        "objectStore.url=az://uploads/aic",
        "objectStore.existingSecret=creds",
        "objectStore.secretKeys={AZURE_STORAGE_ACCOUNT_NAME,AZURE_STORAGE_ACCOUNT_KEY}",
    )
    refs = env_refs(container(azure, "dispatcher", "dispatcher"))
    assert [n for n in refs if n.startswith(("AWS_", "AZURE_"))] == [
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_STORAGE_ACCOUNT_KEY",
    ]
    no_secret = env_refs(container(render(None, "objectStore.url=s3://aic/uploads"), "api", "api"))
    assert not [n for n in no_secret if n.startswith("AWS_")], "no Secret: web identity or the instance"


def test_workload_identity_annotates_the_service_account_of_the_api_and_the_dispatchers() -> None:
    docs = render(OBJECT_STORE)
    accounts = by_kind(docs, "ServiceAccount")
    workload = accounts[f"{PREFIX}-workload"]
    assert workload["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/aic-uploads"
    }
    for component in ("api", "dispatcher"):
        spec = by_kind(docs, "Deployment")[f"{PREFIX}-{component}"]["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == f"{PREFIX}-workload"
    assert all("annotations" not in a["metadata"] for n, a in accounts.items() if n != f"{PREFIX}-workload")
    assert "annotations" not in by_kind(render(None), "ServiceAccount")[f"{PREFIX}-workload"]["metadata"]


STORE_PEERS = [
    {"ipBlock": {"cidr": "0.0.0.0/0"}},
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio"}}},
]
"""networkPolicy.objectStoreTo of ci/object-store-values.yaml."""


def store_rules(docs: tuple[Manifest, ...], component: str) -> list[Manifest]:
    policy = by_kind(docs, "NetworkPolicy")[f"{PREFIX}-{component}"]["spec"]
    return [r for r in policy["egress"] if r.get("to") == STORE_PEERS]


@pytest.mark.parametrize(
    ("sets", "ports"),
    [
        ((), {443, 9000}),  # the ci file's MinIO endpoint: http on 9000
        (("objectStore.endpoint=https://s3.internal.example",), {443}),
        (("objectStore.endpoint=http://ceph.storage",), {443, 80}),
        (("objectStore.endpoint=", "networkPolicy.objectStorePorts={443,8443}"), {443, 8443}),
    ],
)
def test_with_network_policies_the_api_and_the_dispatchers_may_reach_the_store(
    sets: tuple[str, ...], ports: set[int]
) -> None:
    docs = render(OBJECT_STORE, *sets)
    for component in ("api", "dispatcher"):
        [rule] = store_rules(docs, component)
        assert [p["protocol"] for p in rule["ports"]] == ["TCP"] * len(ports)
        assert {p["port"] for p in rule["ports"]} == ports, component
    for component in ("operator", "triton", "redis"):
        assert store_rules(docs, component) == [], component
    # a file:// store is a mounted volume: no traffic to let through
    mounted = render(OBJECT_STORE, "objectStore.url=file:///srv/uploads", "objectStore.existingClaim=uploads")
    assert store_rules(mounted, "api") == [] and store_rules(mounted, "dispatcher") == []


def test_a_file_store_mounts_its_claim_at_the_urls_path_in_the_api_and_the_dispatchers() -> None:
    docs = render(None, "objectStore.url=file:///srv/uploads", "objectStore.existingClaim=shared-uploads")
    for component in ("api", "dispatcher"):
        spec = by_kind(docs, "Deployment")[f"{PREFIX}-{component}"]["spec"]["template"]["spec"]
        assert {"name": "uploads", "persistentVolumeClaim": {"claimName": "shared-uploads"}} in spec["volumes"]
        assert {"name": "uploads", "mountPath": "/srv/uploads"} in spec["containers"][0]["volumeMounts"]
    operator = aic_containers(docs)["operator"]
    assert all(m["name"] != "uploads" for m in operator["volumeMounts"])


@pytest.mark.parametrize(
    ("sets", "error"),
    [
        (("objectStore.url=http://bucket/uploads",), "objectStore/url"),
        (("objectStore.url=s3://",), "objectStore/url"),
        (("objectStore.url=s3://aic/up loads",), "objectStore/url"),
        (("objectStore.endpoint=minio:9000",), "objectStore/endpoint"),
        (("objectStore.secretKeys={SECRET_KEY}",), "objectStore/secretKeys"),
        (("objectStore.maxUploadSize=0",), "objectStore/maxUploadSize"),
        (("objectStore.sweepIntervalSeconds=0",), "objectStore/sweepIntervalSeconds"),
        (("networkPolicy.objectStorePorts={0}",), "networkPolicy/objectStorePorts"),
        (("serviceAccount.bogus=1",), "bogus"),
        (("objectStore.url=file:///srv/uploads",), "set objectStore.existingClaim"),
        (("objectStore.url=s3://aic/uploads", "objectStore.existingClaim=c"), "file:// objectStore.url only"),
    ],
)
def test_bad_object_store_values_are_refused_with_the_reason(sets: tuple[str, ...], error: str) -> None:
    args = [x for item in sets for x in ("--set", item)]
    result = run_helm("template", "r", str(CHART), *args, check=False)
    assert result.returncode != 0 and error in result.stderr, result.stderr


@pytest.mark.parametrize("url", ["s3://aic", "gs://aic-uploads/prefix", "az://uploads/aic/x", "file:///srv/u"])
def test_every_store_the_code_opens_is_accepted(url: str) -> None:
    sets = ["--set", f"objectStore.url={url}"]
    if url.startswith("file://"):
        sets += ["--set", "objectStore.existingClaim=c"]
    assert run_helm("template", "r", str(CHART), *sets, check=False).returncode == 0


def test_notes_say_where_uploads_are_kept() -> None:
    def notes(*args: str) -> str:
        return run_helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client", *args).stdout.split(
            "NOTES:", 1
        )[1]

    assert "Uploads are kept in Redis" in notes()
    stored = notes("-f", OBJECT_STORE)
    assert "Uploads are kept in s3://aic/uploads" in stored and "lifecycle rule" in stored


def without_generated(docs: tuple[Manifest, ...]) -> list[Manifest]:
    """The manifests with the values of generated Secret data left out (their keys stay)."""
    kept = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        if doc["kind"] == "Secret":
            doc["data"] = sorted(doc.get("data", {}))
        kept.append(doc)
    return kept


def test_two_renders_are_identical_but_for_the_generated_secret_values() -> None:
    first = run_helm("template", RELEASE, str(CHART), "-n", NAMESPACE).stdout
    second = run_helm("template", RELEASE, str(CHART), "-n", NAMESPACE).stdout
    one = tuple(d for d in yaml.safe_load_all(first) if d)
    two = tuple(d for d in yaml.safe_load_all(second) if d)
    assert without_generated(one) == without_generated(two)
    secret_one, secret_two = (by_kind(d, "Secret")[f"{PREFIX}-secrets"]["data"] for d in (one, two))
    assert set(secret_one) == {"api-keys", "secret-key", "test-api-key", "redis-password"}
    assert secret_one["secret-key"] != secret_two["secret-key"], "generated, not a fixed default"


def test_given_api_keys_are_kept_and_the_test_key_added() -> None:
    docs = render(None, "auth.apiKeys[0]=acme:0123456789abcdef01", "auth.secretKey=fixed-secret-0123456789")
    import base64

    data = by_kind(docs, "Secret")[f"{PREFIX}-secrets"]["data"]
    keys = base64.b64decode(data["api-keys"]).decode().split(",")
    test_key = base64.b64decode(data["test-api-key"]).decode()
    assert keys == ["acme:0123456789abcdef01", f"helm-test:{test_key}"]
    assert base64.b64decode(data["secret-key"]).decode() == "fixed-secret-0123456789"


def test_the_chart_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = chart_docs.documented()
    missing = [
        leaf for leaf in chart_docs.leaves(values) if not any(leaf == k or leaf.startswith(k + ".") for k in documented)
    ]
    assert missing == [], f"values without a '# --' comment: {missing}"
    readme = (CHART / "README.md").read_text()
    assert chart_docs.table() in readme, "charts/async-image-classifier/README.md is stale: python tests/chart_docs.py"


def test_notes_print_commands_that_work() -> None:
    result = run_helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client")
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} get secret {PREFIX}-secrets -o jsonpath='{{.data.api-keys}}'" in notes
    assert f"port-forward svc/{PREFIX}-api 8000:8000" in notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes
    assert "export AIC_URL=http://127.0.0.1:8000/api/v1 AIC_API_KEY=$KEY\n  aic classify cat.jpg" in notes
    assert "kubectl apply --server-side -f" in notes
