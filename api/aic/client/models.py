"""What the client returns: the API's own wire types (``aic.core.schemas``, msgspec Structs decoded from the
answers, so client and server never disagree on a field), under the names a caller thinks in."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aic.core.enums import JobStatus, Priority
from aic.core.schemas import (
    ClassificationResponse,
    ClassificationResult,
    ErrorResponse,
    JobListResponse,
    JobStatusResponse,
    ModelsResponse,
    Prediction,
    TokenResponse,
    UsageResponse,
)

Job = ClassificationResponse
"""A submitted job: ``job_id``, ``status``, ``created_at`` (and ``result`` when a ``wait_s`` submit completed)."""
Status = JobStatusResponse
"""``job_id``, ``status``, ``progress`` (percent), ``stage``, ``updated_at``, ``error_code``/``error_message``."""
Result = ClassificationResult
"""``predictions`` (``class_name``, ``confidence``, ``class_id``; best first), ``processing_time``, ..."""
Token = TokenResponse
Models = ModelsResponse
JobPage = JobListResponse
"""One page of ``GET /jobs``: ``jobs`` (statuses, newest first) and ``next_cursor``."""
Usage = UsageResponse
"""``GET /usage``: per tenant its ``totals`` and ``days`` (or ``models``)."""


@dataclass(frozen=True)
class Upload:
    """One image to send: its file name (shown in errors) and its bytes; the service reads the type from the
    bytes, so the content type sent is only a hint."""

    filename: str
    content: bytes

    @classmethod
    def of(cls, image: Upload | bytes | str | os.PathLike[str]) -> Upload:
        """An Upload from bytes, a path, or an Upload."""
        if isinstance(image, Upload):
            return image
        if isinstance(image, bytes):
            return cls("image", image)
        path = Path(image)
        return cls(path.name, path.read_bytes())


Image = Upload | bytes | str | os.PathLike[str]
"""What ``submit`` accepts for an image."""

__all__ = [
    "ErrorResponse",
    "Image",
    "Job",
    "JobPage",
    "JobStatus",
    "Models",
    "Prediction",
    "Priority",
    "Result",
    "Status",
    "Token",
    "Upload",
    "Usage",
]
