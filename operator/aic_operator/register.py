"""``aic models register DIR``: make the models of a built repository ModelVersions of a cluster.

The Helm chart's default-model Job builds EfficientNet-Lite0 onto the models volume with ``aic model build`` and
then runs this, so ``helm install`` ends with a served model: each model directory's ``model.json`` becomes a
ModelVersion whose source is the built artifact, by its checksum, at ``SOURCE_ROOT/<name>/<version>/...`` (a
``pvc://CLAIM/PATH`` or ``file://`` root as the operator sees the volume). Created, or updated in place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aic.core.modelspec import ModelSpec
from aic.modelrepo import layout
from aic.modelrepo.writer import sha256_file

from aic_operator.config import GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)


def resource_name(spec: ModelSpec) -> str:
    """The ModelVersion's name (and so the Triton model's): ``<model>-v<version>``."""
    return f"{spec.name}-v{spec.version}"


def manifest(spec: ModelSpec, model_dir: Path, source_root: str) -> dict[str, Any]:
    """The ModelVersion serving the built model in ``model_dir`` from ``source_root`` (pure but for reading the
    labels file's checksum)."""
    root = source_root.rstrip("/")
    artifact = layout.PLAN_FILE if spec.format == "tensorrt" else layout.ONNX_FILE
    pre = spec.preprocessing
    body: dict[str, Any] = {
        "aliases": list(spec.aliases),
        "format": spec.format,
        "source": {"uri": f"{root}/{spec.name}/{spec.version}/{artifact}", "sha256": spec.sha256},
        "preprocessing": {
            "size": [pre.height, pre.width],
            "resize": str(pre.resize),
            "interpolation": pre.interpolation,
            "cropFraction": pre.crop_fraction,
            "scale": pre.scale,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "layout": str(pre.layout),
            "dtype": pre.dtype,
        },
        "tensors": {
            "input": {"name": spec.input.name, "dims": list(spec.input.dims)},
            "output": {"name": spec.output.name, "dims": list(spec.output.dims)},
        },
        "runtime": {"maxBatchSize": spec.max_batch_size},
    }
    labels = model_dir / layout.LABELS_FILE
    if labels.is_file():
        body["labels"] = {"uri": f"{root}/{spec.name}/{layout.LABELS_FILE}", "sha256": sha256_file(labels)}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": resource_name(spec), "labels": {"app.kubernetes.io/managed-by": "aic-models-register"}},
        "spec": body,
    }


def register(repository: Path, source_root: str, namespace: str) -> list[str]:
    """Create or update one ModelVersion per model of ``repository``; the names, in order."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    api = client.CustomObjectsApi()
    names = []
    for spec in layout.discover(repository):
        body = manifest(spec, repository / spec.name, source_root)
        name = body["metadata"]["name"]
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            log.info("created modelversion/%s", name)
        except ApiException as exc:
            if exc.status != 409:
                raise
            patch = {"metadata": {"labels": body["metadata"]["labels"]}, "spec": body["spec"]}
            api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
            log.info("updated modelversion/%s", name)
        names.append(name)
    return names
