"""One store boundary: whatever redis-py or obstore raise leaves ``aic.store`` as the store's own exception, and no
module outside the store names a client library's exception (the import contract keeps their imports out)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from aic.core.errors import StoreError, StoreUnavailable
from aic.core.settings import ObjectStoreSettings, RedisSettings
from aic.local.ports import free_port
from aic.store.connection import connect
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
