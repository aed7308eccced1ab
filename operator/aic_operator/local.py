"""``aic models apply -f FILE`` / ``aic models delete NAME``: the operator's reconcile without a cluster.

The same ``Reconciler`` as in the cluster runs against MODEL_REPOSITORY, the Triton replicas in TRITON_URL
and REDIS_URL, so ``aic up`` users manage models with the ModelVersion YAML they would ``kubectl apply``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from aic.store.connection import connect
from aic.store.routes import RouteStore

from aic_operator.config import load_config
from aic_operator.reconcile import ReconcileError, Reconciler
from aic_operator.triton import Fleet


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The ModelVersion documents of a YAML file (``-`` reads standard input); other kinds are skipped."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind") == "ModelVersion"]


async def _run(action: str, targets: list[Any]) -> int:
    config = load_config()
    fleet = Fleet(config.static_replicas, config.operator.triton_load_timeout_s)
    redis = connect(config.redis)
    reconciler = Reconciler(config, fleet, RouteStore(redis))
    code = 0
    try:
        for target in targets:
            try:
                if action == "apply":
                    name = target.get("metadata", {}).get("name", "")
                    status = await reconciler.apply(name, target.get("spec") or {}, None)
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


def apply_file(path: Path) -> int:
    documents = load_documents(path)
    if not documents:
        print(f"aic: no ModelVersion in {path}", file=sys.stderr)
        return 2
    return asyncio.run(_run("apply", documents))


def delete(names: list[str]) -> int:
    return asyncio.run(_run("delete", names))
