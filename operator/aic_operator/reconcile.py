"""The reconcile of one ModelVersion, shared by the kopf operator and ``aic models apply``.

desired state (pure) -> artifacts fetched and verified -> model directory swapped in -> loaded on every
Triton replica -> routes published -> a status. The order matters: routes change only once every
reachable replica serves the new model, so no alias ever points at a model that is not there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aic.core.modelspec import InvalidSpec, ModelSpec
from aic.modelrepo import writer
from aic.store.evidence import EvidenceStore
from aic.store.routes import RouteStore

from aic_operator import artifacts
from aic_operator.artifacts import ArtifactError
from aic_operator.config import Config
from aic_operator.render import DesiredState, desired_state
from aic_operator.spec import ModelVersionSpec, check_name, parse
from aic_operator.status import Status, failed, from_replicas
from aic_operator.triton import Fleet

log = logging.getLogger(__name__)


class ReconcileError(Exception):
    """The reconcile stopped; ``status`` says why. ``permanent``: only a spec change helps."""

    def __init__(self, status: Status, *, permanent: bool) -> None:
        super().__init__(status.message)
        self.status = status
        self.permanent = permanent


class Reconciler:
    """Makes ModelVersions true in one model repository, on one fleet of Triton replicas and one Redis."""

    def __init__(self, config: Config, fleet: Fleet, routes: RouteStore) -> None:
        self.config = config
        self.fleet = fleet
        self.routes = routes
        self.evidence = EvidenceStore(routes.redis)
        self._locks: dict[str, asyncio.Lock] = {}
        self._refused: dict[str, int | None] = {}
        """Models whose spec failed permanently, by the generation that failed: only a spec change helps."""

    @property
    def repository(self) -> Path:
        return self.config.triton.model_repository

    def desired(self, name: str, spec: Mapping[str, Any]) -> tuple[ModelVersionSpec, DesiredState]:
        parsed = parse(spec)
        backends = self.config.triton.triton_backends
        return parsed, desired_state(check_name(name), parsed, backends, self.config.operator.triton_has_gpu)

    async def apply(
        self, name: str, spec: Mapping[str, Any], generation: int | None, *, wanted: Callable[[], bool] | None = None
    ) -> Status | None:
        """Bring model ``name`` to ``spec``; return the status, or raise ReconcileError carrying one. None: not
        done, as ``wanted`` said no once the model's lock was had (its object was deleted meanwhile)."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            if wanted is not None and not wanted():
                return None
            try:
                parsed, desired = self.desired(name, spec)
                changed, model = await asyncio.to_thread(self._write, desired, parsed)
            except InvalidSpec as exc:
                raise self._refuse(failed(name, "InvalidSpec", str(exc), generation), permanent=True) from None
            except ArtifactError as exc:
                reason = "ArtifactInvalid" if exc.permanent else "ArtifactUnavailable"
                status = failed(name, reason, str(exc), generation)
                raise self._refuse(status, permanent=exc.permanent) from None
            replicas = await self.fleet.ensure_loaded(name, reload=changed)
            status = from_replicas(name, replicas, generation, desired.device)
            if status.ready_replicas == 0:
                raise self._refuse(status, permanent=status.reason == "LoadFailed")
            self._refused.pop(name, None)
            await self._publish(model, parsed)
            # Degraded (served, some replicas missing) is a status, not an error: the resync timer loads it
            # on the missing replicas as they come up.
            return status

    async def _publish(self, model: ModelSpec, parsed: ModelVersionSpec) -> None:
        """Routes, and what the version is compared with. A shadow never serves (weight 0); a version with a
        rollout starts at weight 0 and the rollout (``aic_operator.rollout``) moves it from there."""
        shadow = parsed.traffic.shadow
        weight = 0 if shadow is not None else parsed.traffic.weight
        await self.routes.publish(model, weight, "init:0" if parsed.rollout is not None else "")
        if shadow is not None:
            rule = {"mode": "shadow", "percent": shadow.percent, "aliases": list(model.aliases)}
            await self.evidence.set_comparison(model.name, rule)
        elif parsed.rollout is None:
            await self.evidence.set_comparison(model.name, None)

    async def delete(self, name: str, restore: tuple[str, ...] = ()) -> None:
        """Withdraw routes first (no new jobs for it), then unload everywhere, then remove the files.

        ``restore``: versions a rollout of this one had overridden: they get their requested weights back
        before this one stops serving, so its aliases stay served."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            for other in restore:
                await self.routes.override(other, None)
            await self.routes.withdraw(name)
            await self.evidence.forget([name])
            replicas = await self.fleet.unload(name)
            unreachable = [r.url for r in replicas if not r.reachable]
            if unreachable:
                message = f"cannot unload from unreachable Triton replicas {unreachable}"
                raise ReconcileError(failed(name, "TritonUnavailable", message, None), permanent=False)
            await asyncio.to_thread(writer.remove, self.repository, name)
        self._locks.pop(name, None)
        self._refused.pop(name, None)

    def refused(self, name: str, generation: int | None) -> bool:
        """Whether this generation of ``name`` failed permanently here (a resync must not try it again)."""
        return name in self._refused and self._refused[name] == generation

    def _refuse(self, status: Status, *, permanent: bool) -> ReconcileError:
        if permanent:
            self._refused[status.triton_model] = status.observed_generation
        return ReconcileError(status, permanent=permanent)

    def _write(self, desired: DesiredState, parsed: ModelVersionSpec) -> tuple[bool, ModelSpec]:
        """Fetch what is missing and swap the model directory in if it differs; (changed, spec with labels)."""
        op = self.config.operator
        cache = self.repository / artifacts.CACHE_DIR
        source = desired.artifact
        claims = self.config.claims
        artifact = artifacts.fetch(
            source.uri, source.sha256, cache, op.pvc_mount_root, op.download_timeout_s, claims=claims
        )
        labels: tuple[str, ...] = ()
        if parsed.labels is not None:
            uri = parsed.labels.uri
            path = artifacts.fetch(
                uri, parsed.labels.sha256, cache, op.pvc_mount_root, op.download_timeout_s,
                claims=claims, max_bytes=op.labels_max_bytes,
            )  # fmt: skip
            labels = read_labels(uri, path, desired.model.output.dims)
        files = desired.files(artifact, labels)
        return writer.write(self.repository, files, files.fingerprint()), files.spec


def read_labels(uri: str, path: Path, output_dims: tuple[int, ...]) -> tuple[str, ...]:
    """The class names of a labels file: UTF-8 text, one per line, as many as the output has classes."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{uri}: the labels file is not UTF-8 text (byte {exc.start})", permanent=True) from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    classes = output_dims[-1] if output_dims else -1
    if classes > 0 and len(labels) != classes:
        raise ArtifactError(
            f"{uri}: the labels file names {len(labels)} classes, the model's output has {classes}", permanent=True
        )
    return labels
