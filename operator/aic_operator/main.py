"""``aic operator``: run the ModelVersion operator against the cluster found the standard way.

kopf logs in from ``KUBECONFIG`` (or ``~/.kube/config``) or, inside a pod, with the service account;
MODEL_REPOSITORY, TRITON_URL / TRITON_SERVICE and REDIS_URL come from the environment; Prometheus scrapes
``/metrics`` on METRICS_PORT (0: none).
"""

from __future__ import annotations

import secrets

import kopf
from aic.core import metrics
from aic.core import settings as settings_mod
from aic.core.settings import MetricsSettings


def run() -> int:
    from aic_operator import handlers

    operator = handlers.CONFIG.operator
    namespace = operator.watch_namespace
    liveness = f"http://0.0.0.0:{operator.operator_health_port}/healthz" if operator.operator_health_port else None
    peering = operator.operator_peering
    metrics.serve(settings_mod.load(MetricsSettings), "operator")  # before kopf: its series exist from the start
    kopf.run(
        clusterwide=not namespace,
        namespaces=[namespace] if namespace else (),
        # one replica runs standalone; several coordinate through a KopfPeering object, each with a priority of
        # its own (replicas with equal priorities would all pause), so exactly one reconciles at a time
        standalone=not peering,
        peering_name=peering or None,
        priority=secrets.randbelow(2**31) if peering else 0,
        liveness_endpoint=liveness,
    )
    return 0
