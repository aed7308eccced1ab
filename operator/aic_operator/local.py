"""``aic models apply -f FILE`` / ``aic models delete NAME``: the operator's reconcile without a cluster.

The same ``Reconciler`` as in the cluster runs against MODEL_REPOSITORY, the Triton replicas in TRITON_URL
and REDIS_URL, so ``aic up`` users manage models with the ModelVersion YAML they would ``kubectl apply``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from aic.store.connection import connect
from aic.store.routes import RouteStore

from aic_operator.config import load_config
from aic_operator.reconcile import ReconcileError, Reconciler
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
    reconciler = Reconciler(config, fleet, RouteStore(redis))
    code = 0
    try:
        for target in targets:
            try:
                if action == "apply":
                    name = target.get("metadata", {}).get("name", "")
                    status = await _apply(reconciler, name, target.get("spec") or {}, wait_s)
                    print(f"modelversion/{name} {status.phase}: {status.message}")
                else:
                    await reconciler.delete(target)
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


def apply_file(path: Path, wait_s: float = 0.0) -> int:
    """Apply every ModelVersion of ``path``; a Triton that does not answer yet is waited for up to ``wait_s``."""
    documents = load_documents(path)
    if not documents:
        print(f"aic: no ModelVersion in {path}", file=sys.stderr)
        return 2
    return asyncio.run(_run("apply", documents, wait_s))


def delete(names: list[str]) -> int:
    return asyncio.run(_run("delete", names))
