"""The webhook worker's Prometheus metrics (served with the dispatcher's, on its ``METRICS_PORT``)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

from aic.core.metrics import STAGE_BUCKETS

DELIVERIES: Final = Counter(
    "aic_webhook_deliveries",
    "Webhook attempts by event and outcome: delivered, retrying (failed, tried again later), failed (gave up), "
    "refused (the callback's address is not allowed)",
    ["event", "outcome"],
)
DELIVERY_DURATION: Final = Histogram(
    "aic_webhook_delivery_duration_seconds",
    "One webhook attempt, connect to the receiver's answer",
    buckets=STAGE_BUCKETS,
)
