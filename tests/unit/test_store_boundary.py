"""One store boundary: whatever redis-py or obstore raise leaves ``aic.store`` as the store's own exception, and no
module outside the store names a client library's exception (the import contract keeps their imports out)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import redis.exceptions as redis_errors
from aic.core.errors import StoreError, StoreUnavailable
from aic.core.settings import ObjectStoreSettings, RedisSettings
from aic.local.ports import free_port
from aic.store.connection import boundary, connect
from aic.store.jobs import JobStore
from aic.store.objects import connect_uploads

API = Path(__file__).resolve().parents[2] / "api" / "aic"
INTERNAL = {"UNAVAILABLE", "STORE_ERRORS", "boundary", "guard", "guarded"}


async def test_a_store_call_while_redis_is_away_is_store_unavailable_with_its_cause() -> None:
    redis = connect(RedisSettings(redis_url=f"redis://127.0.0.1:{free_port()}"))  # nothing listens there
    try:
        with pytest.raises(StoreUnavailable) as away:
            await JobStore(redis).get("some-job")
    finally:
        await redis.aclose()
    assert away.value.status_code == 503 and away.value.headers["Retry-After"] == "1"
    assert type(away.value.__cause__).__module__.startswith("redis")


async def test_an_object_store_failure_is_a_store_error(tmp_path: Path) -> None:
    uploads = connect_uploads(ObjectStoreSettings(object_store_url=f"file://{tmp_path}"))
    assert uploads is not None
    (tmp_path / "acme").write_text("a file where the tenant's directory should be")
    with pytest.raises(StoreError):
        await uploads.put([("acme/job", b"pixels")])
    assert await uploads.get(["globex/missing", None]) == [None, None], "a missing object is an answer"


def test_no_module_outside_the_store_uses_the_stores_translation_internals() -> None:
    offenders = []
    for path in API.rglob("*.py"):
        if path.is_relative_to(API / "store"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("aic.store", "redis", "obstore")):
                names = {alias.name for alias in node.names}
                if (node.module or "").startswith(("redis", "obstore")) or names & INTERNAL:
                    offenders.append(f"{path.relative_to(API)}: from {node.module} import {sorted(names)}")
    assert offenders == []


@pytest.mark.parametrize(
    "raised",
    [
        redis_errors.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis_errors.MasterDownError("MASTERDOWN Link with MASTER is down"),
        redis_errors.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        redis_errors.MovedError("3999 127.0.0.1:6381"),
        redis_errors.AskError("3999 127.0.0.1:6381"),
        redis_errors.SlotNotCoveredError("Slot 3999 not covered by the cluster"),
        redis_errors.RedisClusterUnreachableError("Redis Cluster cannot be connected"),
        redis_errors.RedisClusterException("All slots are not covered after query all startup_nodes"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_a_cluster_mid_failover_is_store_unavailable(raised: Exception) -> None:
    """What redis-py's RedisCluster raises while a primary is replaced (once its own retries are spent) is a 503 to
    wait out, in the API and in a dispatcher's loops alike; a RedisClusterException is not even a RedisError."""
    with pytest.raises(StoreUnavailable) as caught, boundary():
        raise raised
    assert caught.value.status_code == 503 and caught.value.__cause__ is raised


@pytest.mark.parametrize(
    "raised", [redis_errors.CrossSlotTransactionError("cross slot"), redis_errors.ResponseError("WRONGTYPE")]
)
def test_a_cluster_misuse_stays_a_store_error_not_a_retry(raised: Exception) -> None:
    with pytest.raises(StoreError) as caught, boundary():
        raise raised
    assert not isinstance(caught.value, StoreUnavailable)
