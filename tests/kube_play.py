"""The rendered chart as Pods that `podman kube play` (4.3) runs as a cluster would, for what it lacks.

podman kube play runs Pods, Deployments, ConfigMaps and PVCs; it skips StatefulSets, Jobs and Services, publishes
every containerPort on the host, shares one named volume per emptyDir name across pods, does not expand `$(VAR)` in
args and reads Secrets only from its own store. So each workload becomes one Pod:

- Deployment, StatefulSet, Job -> one Pod of its template (one replica); a Pod stays a Pod
- Services -> Pod names: a Pod selected by a (non-headless) Service is named after it, and Pods on one
  `podman network create` network resolve each other by name, as Service DNS names resolve in a cluster
- env: `envFrom` ConfigMaps, `secretKeyRef` / `configMapKeyRef` (optional keys as Kubernetes treats them) and
  `fieldRef: metadata.namespace` resolved to values, then `$(VAR)` expanded in command and args (`$$` escapes)
- emptyDirs named per Pod (a Memory one at /dev/shm: the container's own tmpfs /dev/shm)
- containerPorts and probes dropped (no host ports, no kubelet to probe); annotations longer than podman 4.3
  accepts (63 characters: the chart's config checksum) dropped
- a Pod whose service account token is mounted gets a kubeconfig instead (KUBECONFIG, a read-only hostPath)
- Pods started later get the names and addresses of those already running as hostAliases (/etc/hosts), so a
  Service name does not depend on podman's DNS server, which drops queries while it reloads for a joining Pod

Everything else (securityContext, resources, volumes, init containers, restartPolicy) passes through as rendered.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

Manifest = dict[str, Any]
WORKLOADS = {"Deployment", "StatefulSet", "Job", "Pod"}
KUBECONFIG_DIR = "/var/run/aic-kubeconfig"
ANNOTATION_MAX = 63
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class Unsupported(ValueError):
    """A rendered object uses something this translation does not cover."""


def by_kind(documents: Iterable[Manifest | None], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in documents if d and d.get("kind") == kind}


def pod_name(labels: Mapping[str, str], workload: str, services: Mapping[str, Manifest]) -> str:
    """The name of the first ClusterIP Service selecting these labels, else the workload's own name."""
    for name, service in sorted(services.items()):
        selector = service["spec"].get("selector") or {}
        headless = service["spec"].get("clusterIP") == "None"
        if selector and not headless and all(labels.get(k) == v for k, v in selector.items()):
            return name
    return workload


def expand(text: str, values: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined one kept, `$$` is one `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return values.get(match.group(1), match.group(0))

    return _VAR.sub(replace, text)


def resolve_env(
    container: Manifest, configmaps: Mapping[str, Manifest], secrets: Mapping[str, Manifest], namespace: str
) -> list[dict[str, str]]:
    """The container's environment as plain name/value pairs, in Kubernetes' order (envFrom, then env)."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" not in source:
            raise Unsupported(f"envFrom {source}")
        values.update(_data(configmaps, source["configMapRef"]["name"], "ConfigMap"))
    for var in container.get("env", []):
        if "value" in var:
            values[var["name"]] = expand(str(var["value"]), values)
            continue
        ref = var.get("valueFrom", {})
        if "fieldRef" in ref:
            if ref["fieldRef"]["fieldPath"] != "metadata.namespace":
                raise Unsupported(f"fieldRef {ref['fieldRef']}")
            values[var["name"]] = namespace
            continue
        kind, key_ref = ("Secret", ref.get("secretKeyRef")) if "secretKeyRef" in ref else ("ConfigMap", None)
        key_ref = key_ref or ref.get("configMapKeyRef")
        if key_ref is None:
            raise Unsupported(f"env {var}")
        data = _data(secrets if kind == "Secret" else configmaps, key_ref["name"], kind, key_ref.get("optional"))
        if key_ref["key"] in data:
            values[var["name"]] = data[key_ref["key"]]
        elif not key_ref.get("optional"):
            raise Unsupported(f"{kind} {key_ref['name']} has no key {key_ref['key']}")
    return [{"name": name, "value": value} for name, value in values.items()]


def _data(objects: Mapping[str, Manifest], name: str, kind: str, optional: bool | None = False) -> dict[str, str]:
    if name not in objects:
        if optional:
            return {}
        raise Unsupported(f"{kind} {name} is not in the rendered chart")
    obj = objects[name]
    if kind == "Secret":
        found = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return found | dict(obj.get("stringData") or {})
    return {k: str(v) for k, v in (obj.get("data") or {}).items()}


def to_pod(
    workload: Manifest,
    *,
    services: Mapping[str, Manifest],
    configmaps: Mapping[str, Manifest],
    secrets: Mapping[str, Manifest],
    namespace: str,
    kubeconfig_dir: str,
) -> Manifest:
    """One Pod that podman kube play runs the way the cluster would run one replica of ``workload``."""
    kind = workload["kind"]
    if kind not in WORKLOADS:
        raise Unsupported(kind)
    template = workload if kind == "Pod" else workload["spec"]["template"]
    metadata = template.get("metadata", {})
    labels = dict(metadata.get("labels") or workload["metadata"].get("labels") or {})
    name = pod_name(labels, workload["metadata"]["name"], services)
    spec = copy.deepcopy(template["spec"])
    token = bool(spec.pop("automountServiceAccountToken", True))  # Kubernetes' default: mounted
    for field in ("serviceAccountName", "topologySpreadConstraints", "affinity", "nodeSelector", "tolerations"):
        spec.pop(field, None)
    shm = {v["name"] for v in spec.get("volumes", []) if (v.get("emptyDir") or {}).get("medium") == "Memory"}
    spec["volumes"] = [v for v in spec.get("volumes", []) if v["name"] not in shm]
    renamed = {v["name"]: f"{name}-{v['name']}" for v in spec["volumes"] if "emptyDir" in v}
    for volume in spec.get("volumes", []):
        volume["name"] = renamed.get(volume["name"], volume["name"])
    if token:
        spec.setdefault("volumes", []).append(
            {"name": f"{name}-kubeconfig", "hostPath": {"path": kubeconfig_dir, "type": "Directory"}}
        )
    mount = f"{name}-kubeconfig" if token else None
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        _shared_memory(container, shm)
        _container(container, renamed, mount, configmaps=configmaps, secrets=secrets, namespace=namespace)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations(metadata)},
        "spec": spec,
    }


def _shared_memory(container: Manifest, memory_volumes: set[str]) -> None:
    """A Memory emptyDir at /dev/shm becomes the container's own /dev/shm: podman's tmpfs (1777), where 4.3 would
    mount a disk volume that takes the image's root-owned /dev/shm as its owner and mode."""
    for mount in container.get("volumeMounts", []):
        if mount["name"] in memory_volumes and mount["mountPath"] != "/dev/shm":
            raise Unsupported(f"a Memory emptyDir at {mount['mountPath']}")
    container["volumeMounts"] = [m for m in container.get("volumeMounts", []) if m["name"] not in memory_volumes]


def _container(
    container: Manifest,
    renamed: Mapping[str, str],
    kubeconfig_volume: str | None,
    *,
    configmaps: Mapping[str, Manifest],
    secrets: Mapping[str, Manifest],
    namespace: str,
) -> None:
    """One container in place: env resolved, `$(VAR)` expanded, ports and probes dropped, volumes renamed."""
    env = resolve_env(container, configmaps, secrets, namespace)
    if kubeconfig_volume:
        env.append({"name": "KUBECONFIG", "value": f"{KUBECONFIG_DIR}/config"})
    values = {e["name"]: e["value"] for e in env}
    container["env"] = env
    container.pop("envFrom", None)
    for field in ("command", "args"):
        if field in container:
            container[field] = [expand(str(arg), values) for arg in container[field]]
    for field in ("ports", "startupProbe", "readinessProbe", "livenessProbe"):
        container.pop(field, None)
    for mount in container.get("volumeMounts", []):
        mount["name"] = renamed.get(mount["name"], mount["name"])
    if kubeconfig_volume:
        container.setdefault("volumeMounts", []).append(
            {"name": kubeconfig_volume, "mountPath": KUBECONFIG_DIR, "readOnly": True}
        )


def annotations(metadata: Manifest) -> dict[str, str]:
    """The annotations podman accepts: 4.3 holds their values to the 63 characters of a label value (a checksum's
    64 hex digits are refused), so longer ones are left out."""
    return {k: v for k, v in (metadata.get("annotations") or {}).items() if len(str(v)) <= ANNOTATION_MAX}


def with_host_aliases(pod: Manifest, addresses: Mapping[str, str]) -> Manifest:
    """``pod`` with an /etc/hosts entry per running Pod (name -> address), as a Service name resolves to its
    ClusterIP without a DNS server's say."""
    found = copy.deepcopy(pod)
    found["spec"]["hostAliases"] = [{"ip": ip, "hostnames": [name]} for name, ip in sorted(addresses.items())]
    return found


def pods(documents: Iterable[Manifest | None], *, namespace: str, kubeconfig_dir: str) -> dict[str, Manifest]:
    """Every workload of the rendered chart as a Pod, by Pod name (Service names where a Service selects it)."""
    documents = [d for d in documents if d]
    services = by_kind(documents, "Service")
    configmaps = by_kind(documents, "ConfigMap")
    secrets = by_kind(documents, "Secret")
    found: dict[str, Manifest] = {}
    for workload in (d for d in documents if d["kind"] in WORKLOADS):
        pod = to_pod(
            workload,
            services=services,
            configmaps=configmaps,
            secrets=secrets,
            namespace=namespace,
            kubeconfig_dir=kubeconfig_dir,
        )
        if pod["metadata"]["name"] in found:
            raise Unsupported(f"two workloads map to Pod {pod['metadata']['name']}")
        found[pod["metadata"]["name"]] = pod
    return found
