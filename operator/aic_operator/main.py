"""``aic operator``: run the ModelVersion operator against the cluster found the standard way.

kopf logs in from ``KUBECONFIG`` (or ``~/.kube/config``) or, inside a pod, with the service account;
MODEL_REPOSITORY, TRITON_URL / TRITON_SERVICE and REDIS_URL come from the environment.
"""

from __future__ import annotations

import kopf


def run() -> int:
    from aic_operator import handlers

    operator = handlers.CONFIG.operator
    namespace = operator.watch_namespace
    liveness = f"http://0.0.0.0:{operator.operator_health_port}/healthz" if operator.operator_health_port else None
    kopf.run(
        clusterwide=not namespace,
        namespaces=[namespace] if namespace else (),
        standalone=True,  # one replica (Deployment strategy Recreate): no peering CRD to install
        liveness_endpoint=liveness,
    )
    return 0
