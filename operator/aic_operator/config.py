"""Settings of the ModelVersion operator and of ``aic models``: one frozen dataclass, read from the environment.

It lives beside the operator rather than in ``aic.core.settings`` because only the operator and the local
``aic models`` commands read it; values come through the same ``aic.core.settings.load``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from aic.core import settings as settings_mod
from aic.core.settings import RedisSettings, TritonSettings

GROUP = "serving.aic.dev"
VERSION = "v1alpha1"
PLURAL = "modelversions"
KIND = "ModelVersion"


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    """How models are placed and where the Triton replicas are."""

    triton_service: str = ""
    """Name of the Triton Service whose EndpointSlices list the replicas; empty: TRITON_URL (comma-separated)."""
    triton_grpc_port_name: str = "grpc"
    """Name of the gRPC port in the Service's EndpointSlices."""
    triton_has_gpu: bool = False
    """Whether the target Triton replicas have GPUs: decides what ``device: auto`` renders."""
    pvc_mount_root: Path = Path("/mnt/pvc")
    """``pvc://CLAIM/PATH`` reads ``PVC_MOUNT_ROOT/CLAIM/PATH`` (the claims are mounted there)."""
    pvc_claims: str = ""
    """``CLAIM=FOLDER,...``: claims mounted somewhere else than ``PVC_MOUNT_ROOT/CLAIM``. ``aic models apply``
    maps ``models`` to MODEL_REPOSITORY when neither this nor PVC_MOUNT_ROOT is set (the local stack's claim)."""
    labels_max_bytes: int = 1024 * 1024
    """A labels file larger than this fails the ModelVersion (1,000 ImageNet names are 15 KB)."""
    watch_namespace: str = ""
    """Namespace of the ModelVersions to serve; empty: every namespace."""
    resync_interval_s: float = 15.0
    """Each ModelVersion is checked on every replica this often: a replica that started later gets it."""
    download_timeout_s: float = 300.0
    operator_health_port: int = 0
    """Port of the operator's ``/healthz`` (liveness probe); 0: none."""
    operator_peering: str = ""
    """Name of the KopfPeering object replicas coordinate through (one works, the others stand by); empty: one
    replica runs standalone."""
    triton_load_timeout_s: float = 300.0
    rollout_tick_s: float = 10.0
    """How often a ModelVersion with a rollout is looked at (its step's interval is the spec's)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a reconcile needs to know about its surroundings."""

    operator: OperatorSettings
    triton: TritonSettings
    redis: RedisSettings

    @property
    def static_replicas(self) -> tuple[str, ...]:
        return tuple(url.strip() for url in self.triton.triton_url.split(",") if url.strip())

    @functools.cached_property
    def claims(self) -> dict[str, Path]:
        """``PVC_CLAIMS`` as claim -> folder (parsed once: every reconcile reads it)."""
        pairs = (item.split("=", 1) for item in self.operator.pvc_claims.split(",") if "=" in item)
        return {claim.strip(): Path(folder.strip()).expanduser() for claim, folder in pairs}


LOCAL_CLAIM = "models"
"""The claim the samples read from (pvc://models/...): on the local stack, the model repository itself."""


def load_config(*, local: bool = False) -> Config:
    """The settings; ``local`` (``aic models apply``): with neither PVC_MOUNT_ROOT nor PVC_CLAIMS set, the
    ``models`` claim is MODEL_REPOSITORY, where ``aic model build`` writes."""
    env = settings_mod.environment()
    config = Config(
        operator=settings_mod.load(OperatorSettings, env),
        triton=settings_mod.load(TritonSettings, env),
        redis=settings_mod.load(RedisSettings, env),
    )
    if local and "PVC_MOUNT_ROOT" not in env and "PVC_CLAIMS" not in env:
        claims = f"{LOCAL_CLAIM}={config.triton.model_repository}"
        config = dataclasses.replace(config, operator=dataclasses.replace(config.operator, pvc_claims=claims))
    return config
