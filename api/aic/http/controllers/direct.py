"""Presigned direct uploads: ``POST /uploads`` reserves an upload id and a URL the client PUTs its image to; the
upload id is then submitted to ``/classify`` (``upload_id``) or ``/classify/batch`` (``upload_ids``)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency

from aic.core.schemas import UploadReservation
from aic.http.auth import Principal
from aic.http.openapi import SECURITY, error_responses
from aic.http.submissions import Submitter


class DirectUploadController(Controller):
    path = "/uploads"
    tags = ["uploads"]  # noqa: RUF012 - Litestar reads these as class attributes
    security = SECURITY

    @post(
        "/",
        operation_id="createUpload",
        summary="Reserve a direct upload: a presigned PUT URL for one image, then submit its upload_id",
        status_code=200,
        responses=error_responses(400, 503),
    )
    async def create_upload(
        self, request: Request[Principal, Any, State], submitter: NamedDependency[Submitter]
    ) -> UploadReservation:
        return await submitter.reserve_upload(request.user.tenant)
