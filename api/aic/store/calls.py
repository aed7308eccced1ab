"""The typed builders of the job scripts (``lua/<SCRIPT>.lua``): keys and arguments by name (``aic.store.scripts``).

Every key of one call is one job's, or its shard's (``Keyspace``): one slot on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from aic.store.scripts import Call, Item, Value, arg, each, key, rest


@dataclass(frozen=True, kw_only=True)
class CreateJob(Item):
    status: str = key()
    image: str = key()
    metadata: str = key()
    queue: str = key()
    job_id: str = arg()
    metadata_json: str = arg()
    ttl: int = arg()
    record: str = arg()
    """The status hash: a JSON list of field/value pairs."""


@dataclass(frozen=True, kw_only=True)
class Create(Call):
    SCRIPT: ClassVar[str] = "create"
    ITEM: ClassVar[type[Item] | None] = CreateJob
    urgent: str = key()
    high: str = key()
    normal: str = key()
    low: str = key()
    dead_index: str = key()
    max_depth: int = arg()
    jobs: tuple[CreateJob, ...] = each()


@dataclass(frozen=True, kw_only=True)
class Finish(Call):
    SCRIPT: ClassVar[str] = "finish"
    status: str = key()
    result: str = key()
    image: str = key()
    metadata: str = key()
    stream: str = key()
    events: str = key()
    waiter: str = key()
    dead_stream: str = key()
    outbox: str = key()
    dead_index: str = key()
    group: str = arg()
    entry_id: str = arg()
    result_body: bytes = arg()
    ttl: int = arg()
    event: bytes = arg()
    dead_letter: bytes = arg()
    image_ttl: int = arg()
    fields: tuple[Value, ...] = rest()


@dataclass(frozen=True, kw_only=True)
class Advance(Call):
    SCRIPT: ClassVar[str] = "advance"
    status: str = key()
    events: str = key()
    outbox: str = key()
    event: bytes = arg()
    count_attempt: str = arg()
    fields: tuple[Value, ...] = rest()


@dataclass(frozen=True, kw_only=True)
class Cancel(Call):
    SCRIPT: ClassVar[str] = "cancel"
    status: str = key()
    image: str = key()
    metadata: str = key()
    events: str = key()
    waiter: str = key()
    outbox: str = key()
    event: bytes = arg()
    updated_at: str = arg()
    ttl: int = arg()


@dataclass(frozen=True, kw_only=True)
class Timeout(Call):
    SCRIPT: ClassVar[str] = "timeout"
    status: str = key()
    image: str = key()
    metadata: str = key()
    events: str = key()
    waiter: str = key()
    outbox: str = key()
    now_ms: int = arg()
    event: bytes = arg()
    updated_at: str = arg()
    message: str = arg()
    code: str = arg()
    ttl: int = arg()


@dataclass(frozen=True, kw_only=True)
class Purge(Call):
    SCRIPT: ClassVar[str] = "purge"
    status: str = key()
    result: str = key()
    image: str = key()
    metadata: str = key()
    webhooks: str = key()
    dead_stream: str = key()
    dead_index: str = key()
    job_id: str = arg()


@dataclass(frozen=True, kw_only=True)
class Retry(Call):
    SCRIPT: ClassVar[str] = "retry"
    status: str = key()
    image: str = key()
    result: str = key()
    queue: str = key()
    events: str = key()
    dead_stream: str = key()
    dead_index: str = key()
    event: bytes = arg()
    updated_at: str = arg()
    ttl: int = arg()
    job_id: str = arg()
    deadline_ms: int = arg()
