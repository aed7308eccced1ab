"""Domain errors. They know their HTTP status and seed error code but never import the web framework;
one exception handler in the API renders them as the seed's ErrorResponse."""

from __future__ import annotations

from typing import Any

from aic.core.enums import ErrorCode


class AppError(Exception):
    status_code = 500
    error_code = ErrorCode.INTERNAL_ERROR

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class ImageValidationError(AppError):
    status_code = 400
    error_code = ErrorCode.INVALID_IMAGE


class RequestValidationError(AppError):
    """A field of the request is malformed (422 with per-field ``errors``)."""

    status_code = 422
    error_code = ErrorCode.VALIDATION_ERROR

    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.errors = errors


class BadRequestError(AppError):
    status_code = 400
    error_code = ErrorCode.VALIDATION_ERROR


class JobNotFoundError(AppError):
    status_code = 404
    error_code = ErrorCode.JOB_NOT_FOUND

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job not found: {job_id}")


class UploadNotFoundError(AppError):
    """An upload id that is unknown, expired or another tenant's (all answered alike). An upload id is the id of the
    job its submit creates, hence the job's error code."""

    status_code = 404
    error_code = ErrorCode.JOB_NOT_FOUND

    def __init__(self, upload_id: str) -> None:
        super().__init__(f"Upload not found: {upload_id}")


class JobConflictError(AppError):
    status_code = 409
    error_code = ErrorCode.CONFLICT


class JobEndedError(JobConflictError):
    """The job already reached a terminal status, so it can no longer be changed that way."""

    def __init__(self, detail: str, status: str) -> None:
        super().__init__(detail)
        self.status = status


class UnauthorizedError(AppError):
    status_code = 401
    error_code = ErrorCode.UNAUTHORIZED


class ServiceUnavailableError(AppError):
    status_code = 503
    error_code = ErrorCode.SERVICE_UNAVAILABLE


class StoreError(ServiceUnavailableError):
    """A store call failed: Redis refused a command, or Redis or the object store did not answer. The one
    exception that leaves ``aic.store`` (redis-py's and obstore's own never do): its cause is chained."""

    def __init__(self, detail: str = "A dependency is unavailable; retry later", *, retry_after_s: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class StoreUnavailable(StoreError):
    """Redis or the object store is unreachable (refused, reset, timed out): wait and retry, or answer 503."""


class ModelError(AppError):
    status_code = 500
    error_code = ErrorCode.MODEL_ERROR


class ForbiddenError(AppError):
    status_code = 403
    error_code = ErrorCode.FORBIDDEN


class RateLimitedError(AppError):
    status_code = 429
    error_code = ErrorCode.RATE_LIMITED
