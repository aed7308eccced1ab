"""``aic.client``: a typed Python client of the job API (sync ``Client``, asyncio ``AsyncClient``).

It speaks HTTP only (httpx): it never imports the server's packages, Litestar, Redis or Triton, only the wire
types and the retry policy of ``aic.core``. 429 and 503 are retried after their ``Retry-After``
(``DEFAULT_RETRY``); every other error raises an ``ApiError`` subclass carrying the service's ErrorResponse::

    from aic.client import Client

    with Client("http://127.0.0.1:8000/api/v1", api_key="...") as aic:
        job = aic.submit("cat.jpg")
        if aic.wait(job.job_id).status == "completed":
            print(aic.result(job.job_id).predictions[0].class_name)
"""

from aic.client._async import AsyncClient
from aic.client._sync import Client
from aic.client._wire import DEFAULT_RETRY
from aic.client.errors import (
    ApiError,
    AuthenticationError,
    BadRequest,
    ClientError,
    Conflict,
    JobTimeout,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    ServiceUnreachable,
)
from aic.client.models import Image, Job, JobStatus, Prediction, Result, Status, Token, Upload
from aic.core.retry import RetryPolicy

__all__ = [
    "DEFAULT_RETRY",
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "Image",
    "Job",
    "JobStatus",
    "JobTimeout",
    "NotFound",
    "Prediction",
    "RateLimited",
    "Result",
    "RetryPolicy",
    "ServiceUnavailable",
    "ServiceUnreachable",
    "Status",
    "Token",
    "Upload",
]
