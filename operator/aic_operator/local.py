"""``aic models apply -f FILE`` / ``aic models delete NAME`` / ``aic models status``: the operator's reconcile
without a cluster.

The same ``Reconciler`` as in the cluster runs against MODEL_REPOSITORY, the Triton replicas in TRITON_URL
and REDIS_URL, so ``aic up`` users manage models with the ModelVersion YAML they would ``kubectl apply``. A
version with a ``rollout`` is then followed in the foreground, tick by tick, until it is promoted or rolled back
(the state is kept in Redis, ``models:rollouts``: run ``apply`` again to resume after an interruption).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from aic.store import evidence, layout
from aic.store.connection import connect
from aic.store.routes import RouteStore

from aic_operator.config import load_config
from aic_operator.reconcile import ReconcileError, Reconciler
from aic_operator.rollout import TERMINAL, Rollouts
from aic_operator.spec import parse
from aic_operator.status import Status
from aic_operator.triton import Fleet


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The ModelVersion documents of a YAML file (``-`` reads standard input); other kinds are skipped."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind") == "ModelVersion"]


STARTING = "TritonUnavailable"
"""The one transient failure ``apply`` waits out: a Triton that is still starting (``aic triton &``)."""


async def _run(action: str, targets: list[Any], wait_s: float = 0.0) -> int:
    config = load_config(local=True)
    fleet = Fleet(config.static_replicas, config.operator.triton_load_timeout_s)
    redis = connect(config.redis)
    await layout.check(redis)  # another key layout than the data's: refused (LayoutMismatch, exit 2)
    reconciler = Reconciler(config, fleet, RouteStore(redis))
    code = 0
    try:
        for target in targets:
            try:
                if action == "apply":
                    name = target.get("metadata", {}).get("name", "")
                    status = await _apply(reconciler, name, target.get("spec") or {}, wait_s)
                    print(f"modelversion/{name} {status.phase}: {status.message}")
                    if parse(target.get("spec") or {}).rollout is not None:
                        code = max(code, await _follow(reconciler, name, target.get("spec") or {}))
                else:
                    state = (await reconciler.evidence.rollouts()).get(target) or {}
                    await reconciler.delete(target, restore=tuple(state.get("previous") or ()))
                    print(f"modelversion/{target} deleted")
            except ReconcileError as exc:
                print(json.dumps(exc.status.as_dict(), indent=2), file=sys.stderr)
                code = 1
    finally:
        await fleet.close()
        await redis.aclose()
    return code


async def _apply(reconciler: Reconciler, name: str, spec: dict[str, Any], wait_s: float) -> Status:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            status = await reconciler.apply(name, spec, None)
            assert status is not None  # None only where a ``wanted`` said no
            return status
        except ReconcileError as exc:
            if exc.status.reason != STARTING or time.monotonic() + 1 > deadline:
                raise
            print(f"modelversion/{name} waiting for Triton: {exc.status.message}", file=sys.stderr)
            await asyncio.sleep(1)


async def _follow(reconciler: Reconciler, name: str, spec: dict[str, Any]) -> int:
    """Move the rollout of ``name`` on every ROLLOUT_TICK_S until it ends: 0 promoted, 1 rolled back."""
    rollouts = Rollouts(reconciler.routes, reconciler.evidence)
    parsed = parse(spec)
    while True:
        state = (await reconciler.evidence.rollouts()).get(name)
        new, events = await rollouts.tick(name, parsed, state, ready=True)
        for event in events:
            print(f"modelversion/{name} {event.reason}: {event.message}")
        if new is not None and new.get("phase") in TERMINAL:
            return 0 if new["phase"] == "Promoted" else 1
        await asyncio.sleep(reconciler.config.operator.rollout_tick_s)


async def _status(as_json: bool) -> int:
    config = load_config(local=True)
    redis = connect(config.redis)
    try:
        found = await evidence.overview(redis)
    finally:
        await redis.aclose()
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    print(f"{'ALIAS':<16} {'VERSION':<28} {'WEIGHT':>7} {'REQUESTED':>9} {'JOBS':>6} {'ERRORS':>6} {'P95MS':>6}")
    for v in found["versions"]:
        p95 = "-" if v["p95Ms"] is None else f"{v['p95Ms']:g}"
        line = f"{v['alias']:<16} {v['version']:<28} {v['weight']:>7} {v['requestedWeight']:>9} {v['jobs']:>6}"
        print(f"{line} {v['errors']:>6} {p95:>6}")
    for c in found["comparisons"]:
        agreement = "-" if c["agreement"] is None else f"{c['agreement']:.3f}"
        print(
            f"{c['mode']} {c['candidate']} vs {c['reference']} on {c['alias']!r} ({c['percent']:g} %): "
            f"{c['compared']} compared, agreement {agreement}, top-5 overlap {c['top5Overlap']}, "
            f"confidence delta {c['confidenceDelta']}, {c['errors']} errors"
        )
    for r in found["rollouts"]:
        where = f"{r.get('phase')} step {r.get('step')}, {r.get('effectiveWeight')} %"
        print(f"rollout {r['version']}: {where}: {r.get('message')}")
    return 0


def status(as_json: bool = False) -> int:
    """Print every alias's versions and weights, shadows' and mirrors' agreement and rollouts (last 15 min)."""
    return asyncio.run(_status(as_json))


def apply_file(path: Path, wait_s: float = 0.0) -> int:
    """Apply every ModelVersion of ``path``; a Triton that does not answer yet is waited for up to ``wait_s``."""
    documents = load_documents(path)
    if not documents:
        print(f"aic: no ModelVersion in {path}", file=sys.stderr)
        return 2
    return asyncio.run(_run("apply", documents, wait_s))


def delete(names: list[str]) -> int:
    return asyncio.run(_run("delete", names))
