"""The seed design's enumerations: job status, priority, processing stage, error code."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        """Still moving: it may be processed, cancelled or finished. The store's Lua scripts are built from
        ``LIVE_STATUSES`` too, so this rule is written once."""
        return self in LIVE_STATUSES

    @property
    def terminal(self) -> bool:
        return not self.live


LIVE_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.PENDING, JobStatus.PROCESSING})
"""The statuses a job can still leave; every other status is terminal and never changes again."""


class Priority(StrEnum):
    """Queue priority, most urgent first; each has its own stream."""

    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITY_WEIGHTS: dict[Priority, int] = {
    Priority.URGENT: 8,
    Priority.HIGH: 4,
    Priority.NORMAL: 2,
    Priority.LOW: 1,
}
"""Share of each batch a dispatcher takes from each queue; every queue gets at least one place."""

ESTIMATE_MULTIPLIER: dict[Priority, float] = {
    Priority.URGENT: 0.25,
    Priority.HIGH: 0.5,
    Priority.NORMAL: 1.0,
    Priority.LOW: 2.0,
}


class Stage(StrEnum):
    INITIALIZING = "initializing"
    DOWNLOADING = "downloading"
    """Only a job submitted by URL (``image_url``): the dispatcher fetches its image."""
    PREPROCESSING = "preprocessing"
    INFERENCE = "inference"
    POSTPROCESSING = "postprocessing"
    COMPLETED = "completed"


STAGE_PROGRESS: dict[Stage, int] = {
    Stage.INITIALIZING: 10,
    Stage.DOWNLOADING: 20,
    Stage.PREPROCESSING: 40,
    Stage.INFERENCE: 80,
    Stage.COMPLETED: 100,
}
"""Progress (percent) a job reports on entering each stage (seed: 10, 40, 80, 100)."""


class ErrorCode(StrEnum):
    INVALID_IMAGE = "INVALID_IMAGE"
    MODEL_ERROR = "MODEL_ERROR"
    TIMEOUT = "TIMEOUT"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    RATE_LIMITED = "RATE_LIMITED"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    CONFLICT = "CONFLICT"
    HTTP_ERROR = "HTTP_ERROR"
    """The seed's code for what the framework itself refuses: an unknown path, a method the path lacks."""
