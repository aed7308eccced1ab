"""tests/kube_play.py: the translation of rendered workloads into Pods that podman kube play 4.3 runs as a cluster."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from kube_play import KUBECONFIG_DIR, Unsupported, expand, pods, resolve_env, with_host_aliases

LABELS = {"app.kubernetes.io/component": "api"}
SECURITY = {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def deployment(name: str = "rel-api", **spec: Any) -> dict[str, Any]:
    container = {
        "name": "api",
        "image": "img:1",
        "args": ["api"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
        "securityContext": SECURITY,
        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "models", "mountPath": "/models"}],
    }
    template_spec = {
        "automountServiceAccountToken": False,
        "serviceAccountName": "sa",
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "models", "persistentVolumeClaim": {"claimName": "m"}}],
        **spec,
    }
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"labels": LABELS}, "spec": template_spec}},
    }


def service(name: str, headless: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": LABELS}
    if headless:
        spec["clusterIP"] = "None"
    return {"kind": "Service", "metadata": {"name": name}, "spec": spec}


def translate(*documents: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return pods(copy.deepcopy(list(documents)), namespace="ns", kubeconfig_dir="/host/kube")


def test_a_pod_is_named_after_the_cluster_ip_service_that_selects_it() -> None:
    found = translate(deployment("rel-api-deploy"), service("rel-api-headless", headless=True), service("rel-api"))
    assert list(found) == ["rel-api"]
    assert found["rel-api"]["kind"] == "Pod"


def test_a_workload_no_service_selects_keeps_its_name() -> None:
    assert list(translate(deployment("rel-dispatcher"))) == ["rel-dispatcher"]


@pytest.mark.parametrize("kind", ["StatefulSet", "Job"])
def test_statefulsets_and_jobs_become_one_pod_of_their_template(kind: str) -> None:
    workload = deployment("rel-x")
    workload["kind"] = kind
    workload["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    pod = translate(workload)["rel-x"]
    assert pod["spec"]["restartPolicy"] == "OnFailure"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["api"]


def test_empty_dirs_are_named_per_pod_and_claims_are_kept() -> None:
    pod = translate(deployment())["rel-api"]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["rel-api-tmp", "models"]
    assert [m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]] == ["rel-api-tmp", "models"]


def test_ports_and_probes_are_dropped_and_security_and_resources_kept() -> None:
    container = translate(deployment())["rel-api"]["spec"]["containers"][0]
    assert "ports" not in container and "readinessProbe" not in container
    assert container["securityContext"] == SECURITY
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "512Mi"}}


def test_a_pod_with_a_service_account_token_gets_a_read_only_kubeconfig_instead() -> None:
    pod = translate(deployment(automountServiceAccountToken=True))["rel-api"]
    assert {"name": "rel-api-kubeconfig", "hostPath": {"path": "/host/kube", "type": "Directory"}} in pod["spec"][
        "volumes"
    ]
    container = pod["spec"]["containers"][0]
    assert {"name": "KUBECONFIG", "value": f"{KUBECONFIG_DIR}/config"} in container["env"]
    assert {"name": "rel-api-kubeconfig", "mountPath": KUBECONFIG_DIR, "readOnly": True} in container["volumeMounts"]


def test_a_pod_without_a_token_gets_no_kubeconfig() -> None:
    pod = translate(deployment())["rel-api"]
    assert all(v["name"] != "rel-api-kubeconfig" for v in pod["spec"]["volumes"])
    assert all(e["name"] != "KUBECONFIG" for e in pod["spec"]["containers"][0]["env"])


def test_env_resolves_config_maps_secrets_and_the_namespace_in_kubernetes_order() -> None:
    configmaps = {"cfg": {"data": {"A": "from-map", "B": "b"}}}
    secrets = {"sec": {"data": {"pw": base64.b64encode(b"s3cret").decode()}}}
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}}],
        "env": [
            {"name": "A", "value": "literal"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "absent", "optional": True}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
    }
    assert resolve_env(container, configmaps, secrets, "ns") == [
        {"name": "A", "value": "literal"},
        {"name": "B", "value": "b"},
        {"name": "PW", "value": "s3cret"},
        {"name": "NS", "value": "ns"},
    ]


def test_a_missing_required_secret_key_is_refused() -> None:
    container = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "absent"}}}]}
    with pytest.raises(Unsupported, match="no key absent"):
        resolve_env(container, {}, {"sec": {"data": {}}}, "ns")


def test_var_references_expand_as_kubernetes_does() -> None:
    values = {"PW": "s3cret"}
    assert expand("--requirepass=$(PW)", values) == "--requirepass=s3cret"
    assert expand("$(UNSET)", values) == "$(UNSET)"
    assert expand("$$(PW)", values) == "$(PW)"


def test_args_are_expanded_with_the_containers_env() -> None:
    workload = deployment()
    container = workload["spec"]["template"]["spec"]["containers"][0]
    container["args"] = ["--requirepass", "$(PW)"]
    container["env"] = [{"name": "PW", "value": "s3cret"}]
    assert translate(workload)["rel-api"]["spec"]["containers"][0]["args"] == ["--requirepass", "s3cret"]


def test_two_workloads_on_one_pod_name_are_refused() -> None:
    with pytest.raises(Unsupported, match="two workloads"):
        translate(deployment("rel-a"), deployment("rel-b"), service("rel-api"))


def test_annotations_longer_than_podman_takes_are_left_out() -> None:
    workload = deployment()
    workload["spec"]["template"]["metadata"]["annotations"] = {"checksum/config": "f" * 64, "short": "yes"}
    assert translate(workload)["rel-api"]["metadata"]["annotations"] == {"short": "yes"}


def test_a_memory_empty_dir_at_dev_shm_is_the_containers_own_shared_memory() -> None:
    workload = deployment()
    spec = workload["spec"]["template"]["spec"]
    spec["volumes"].append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}})
    spec["containers"][0]["volumeMounts"].append({"name": "shm", "mountPath": "/dev/shm"})
    pod = translate(workload)["rel-api"]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["rel-api-tmp", "models"]
    assert "/dev/shm" not in [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]]


def test_a_memory_empty_dir_elsewhere_is_refused() -> None:
    workload = deployment()
    spec = workload["spec"]["template"]["spec"]
    spec["volumes"].append({"name": "cache", "emptyDir": {"medium": "Memory"}})
    spec["containers"][0]["volumeMounts"].append({"name": "cache", "mountPath": "/cache"})
    with pytest.raises(Unsupported, match="/cache"):
        translate(workload)


def test_running_pods_become_host_aliases_of_a_later_one() -> None:
    pod = translate(deployment())["rel-api"]
    aliased = with_host_aliases(pod, {"rel-redis": "10.89.0.2", "rel-triton": "10.89.0.3"})
    assert aliased["spec"]["hostAliases"] == [
        {"ip": "10.89.0.2", "hostnames": ["rel-redis"]},
        {"ip": "10.89.0.3", "hostnames": ["rel-triton"]},
    ]
    assert "hostAliases" not in pod["spec"]
