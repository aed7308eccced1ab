"""The Helm chart with the real helm binary (v4): lint, render under every ci/*-values.yaml, validate every manifest
against the Kubernetes schemas (1.30 and the newest kubernetes-validate knows) and the custom kinds against their
published models, and check what the chart promises: security, RBAC verbs, probes, scaling, names, secrets."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import chart_docs
import pytest
import yaml
from aic.core.settings import (
    ApiSettings,
    DispatcherSettings,
    QueueSettings,
    RedisSettings,
    TritonSettings,
    WebhookSettings,
)
from aic_operator.config import OperatorSettings
from aic_operator.render import desired_state
from aic_operator.spec import parse
from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]
from kubernetes_validate import utils as kubernetes_validate
from tools import helm
from tritonclient.grpc import model_config_pb2 as pb

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "async-image-classifier"
CI = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "rel", "aic"
PREFIX = f"{RELEASE}-async-image-classifier"
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "KopfPeering"}
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
    """The model's JSON schema with unknown fields refused wherever properties are declared."""
    schema: Manifest = model.model_json_schema(by_alias=True)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
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
    import jsonschema
    from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    models = {
        "ScaledObject": ScaledObject,
        "TriggerAuthentication": TriggerAuthentication,
        "ServiceMonitor": ServiceMonitor,
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
    import jsonschema

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


def test_the_bundled_redis_keeps_an_append_only_file_behind_a_password() -> None:
    docs = render(str(CHART / "ci" / "default-values.yaml"))
    [redis] = by_kind(docs, "StatefulSet").values()
    server = redis["spec"]["template"]["spec"]["containers"][0]
    args = server["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and "$(REDIS_PASSWORD)" in args
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
        for p in rule.get("from", rule.get("to", []))
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
    assert policies["dispatcher"]["ingress"] == [] and policies["operator"]["ingress"] == []
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
