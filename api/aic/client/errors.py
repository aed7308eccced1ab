"""The client's exceptions: one per way a call can fail, each API answer carrying the service's ErrorResponse."""

from __future__ import annotations

from aic.core.schemas import ErrorResponse


class ClientError(Exception):
    """Anything the client raises."""


class ServiceUnreachable(ClientError):
    """No answer: connection refused, DNS failure, a timeout or a dropped connection."""


class ApiError(ClientError):
    """The service answered with an error; ``error`` is its ErrorResponse (``error``, ``detail``, ``request_id``,
    ``errors`` on 422)."""

    def __init__(self, status_code: int, error: ErrorResponse, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status_code} {error.error}: {error.detail}")
        self.status_code = status_code
        self.error = error
        self.retry_after_s = retry_after_s

    @property
    def detail(self) -> str:
        return self.error.detail


class BadRequest(ApiError):
    """400 or 422: the image or a field was refused (not an image, too big, unknown model, bad priority ...)."""


class AuthenticationError(ApiError):
    """401 or 403: a missing, wrong or expired credential, or a role that may not do this."""


class NotFound(ApiError):
    """404: no such job (or another tenant's)."""


class Conflict(ApiError):
    """409: the job is not in a state that allows this (a result before completion, cancelling an ended job)."""


class RateLimited(ApiError):
    """429, still refused after the retries ``Retry-After`` allowed."""


class ServiceUnavailable(ApiError):
    """503 (Redis away, queue full), still refused after the retries; or another 5xx."""


class JobTimeout(ClientError):
    """``wait`` gave up before the job ended."""

    def __init__(self, job_id: str, timeout_s: float) -> None:
        super().__init__(f"job {job_id} did not end within {timeout_s:g} s")
        self.job_id = job_id


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    422: BadRequest,
    413: BadRequest,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def error_for(status_code: int, error: ErrorResponse, retry_after_s: float | None = None) -> ApiError:
    """The exception for an error answer."""
    kind = _BY_STATUS.get(status_code) or (ServiceUnavailable if status_code >= 500 else ApiError)
    return kind(status_code, error, retry_after_s)
