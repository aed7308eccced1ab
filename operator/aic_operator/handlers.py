"""kopf handlers for ModelVersion: every change, resume and timer tick runs the same reconcile.

Progress lives on the object (status, kopf's annotations), so a restarted operator resumes where it
stopped; the finalizer that kopf adds for the delete handler unloads the model and removes its files.
Each attempt is counted and timed for Prometheus (``aic_operator.metrics``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf
from aic.core.settings import SettingsError
from aic.store import layout
from aic.store.connection import connect
from aic.store.routes import RouteStore

from aic_operator import rollout_handlers  # also registers the rollout timer with kopf
from aic_operator.config import GROUP, PLURAL, VERSION, load_config
from aic_operator.metrics import reconciling
from aic_operator.reconcile import ReconcileError, Reconciler
from aic_operator.status import Status
from aic_operator.triton import Fleet, slice_urls

CONFIG = load_config()
TEMPORARY_DELAY_S = 10.0
TIMER_EXIT_POLLING_S = 1.0
"""How often kopf looks again whether a resync tick that was running when its object was deleted has ended.

kopf holds the finalizer until the object's timers have exited, and a tick in the middle of a reconcile (Triton
calls: long on a busy machine) is not cancelled: kopf's default, 60 s, left a deleted ModelVersion in place for a
minute after its delete handler had run, and then ran that handler again."""
SERVICE_LABEL = "kubernetes.io/service-name"


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # k8s Events only for problems
    settings.persistence.finalizer = f"{GROUP}/unload"
    settings.background.cancellation_polling = TIMER_EXIT_POLLING_S
    fleet = Fleet(CONFIG.static_replicas, CONFIG.operator.triton_load_timeout_s)
    logger.info(
        "model repository %s; Triton replicas %s", CONFIG.triton.model_repository, fleet.urls() or "from endpoints"
    )
    memo.redis = connect(CONFIG.redis)
    try:
        await layout.check(memo.redis)  # another key layout than the data's would publish routes nobody reads
    except SettingsError as exc:
        raise kopf.PermanentError(str(exc)) from None
    memo.reconciler = Reconciler(CONFIG, fleet, RouteStore(memo.redis))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    await reconciler.fleet.close()
    await memo.redis.aclose()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(name: str, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _apply(memo.reconciler, name, body, patch)


@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.operator.resync_interval_s, initial_delay=2.0, idle=1.0)
async def resync(name: str, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    """Replicas that restarted or joined later get the model; a spec that failed stays failed until it changes.

    ``stopped`` is set once the object is being deleted: a tick that was waiting for the model's lock behind the
    delete handler then does nothing (it would load the model and publish its routes again). A generation this
    process refused is not tried again either, even before its Failed status reaches the tick's body (a busy
    machine: the first tick came before the watch event and counted a second permanent error)."""
    stopped: kopf.DaemonStopped = kwargs["stopped"]  # kopf passes it to timers; its TimerFn type does not say so
    reconciler: Reconciler = memo.reconciler
    generation = body.meta.get("generation")
    if body.status.get("phase") == "Failed" and body.status.get("observedGeneration") == generation:
        return

    def wanted() -> bool:  # asked once the model's lock is had: the create handler may have just refused it
        return not stopped.is_set() and not reconciler.refused(name, generation)

    try:
        await _apply(reconciler, name, body, patch, wanted=wanted)
    except kopf.TemporaryError:
        return  # counted as a temporary error; the next tick tries again


@kopf.on.delete(GROUP, VERSION, PLURAL)
@reconciling("delete")
async def delete(name: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    try:
        await reconciler.delete(name, restore=rollout_handlers.overridden(body))
    except ReconcileError as exc:
        raise kopf.TemporaryError(exc.status.message, delay=TEMPORARY_DELAY_S) from None
    logger.info("model %s unloaded and removed", name)


@reconciling("apply")
async def _apply(
    reconciler: Reconciler, name: str, body: kopf.Body, patch: kopf.Patch, wanted: Callable[[], bool] | None = None
) -> None:
    generation = body.meta.get("generation")
    try:
        status: Status | None = await reconciler.apply(name, dict(body.spec), generation, wanted=wanted)
    except ReconcileError as exc:
        _report(exc.status, body.status, patch)
        if exc.permanent:
            raise kopf.PermanentError(exc.status.message) from None
        raise kopf.TemporaryError(exc.status.message, delay=TEMPORARY_DELAY_S) from None
    if status is not None:
        _report(status, body.status, patch)


def _report(status: Status, current: kopf.Status, patch: kopf.Patch) -> None:
    """Patch the status only where it changed: a resync of a healthy model writes nothing."""
    wanted = status.as_dict(previous=current.get("conditions") or [])
    own = {condition["type"] for condition in wanted["conditions"]}  # others' (the rollout's) are kept
    wanted["conditions"] += [c for c in current.get("conditions") or [] if c.get("type") not in own]
    changes = {key: value for key, value in wanted.items() if current.get(key) != value}
    if changes:
        patch.status.update(changes)


def track_replicas(type: str, name: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Keep the replica list current; the resync timer then loads every model on a new replica."""
    fleet: Fleet = memo.reconciler.fleet
    if type == "DELETED":
        changed = fleet.drop_slice(name)
    else:
        changed = fleet.set_slice(name, slice_urls(body, CONFIG.operator.triton_grpc_port_name))
    if changed:
        logger.info("Triton replicas now: %s", ", ".join(fleet.urls()) or "none")


if CONFIG.operator.triton_service:  # else the static TRITON_URL list: no need to watch (or be allowed to)
    kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels={SERVICE_LABEL: CONFIG.operator.triton_service})(
        track_replicas
    )
