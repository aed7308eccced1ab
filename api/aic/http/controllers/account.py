"""What a caller may ask about itself and the service: a Bearer token for its key, the models it may use."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency

from aic.core.errors import ForbiddenError
from aic.core.schemas import ModelInfo, ModelsResponse, TokenResponse
from aic.core.settings import ApiSettings
from aic.http.auth import Principal, Role
from aic.http.openapi import SECURITY, error_responses
from aic.http.tokens import issue
from aic.store import evidence
from aic.store.routes import RouteStore


class AccountController(Controller):
    path = "/"
    tags = ["auth"]  # noqa: RUF012
    security = SECURITY

    @post(
        "/auth/token",
        operation_id="issueToken",
        summary="Exchange an API key for a short-lived Bearer token (JWT)",
        status_code=200,
        responses=error_responses(403),
    )
    async def token(
        self, request: Request[Principal, Any, State], api_settings: NamedDependency[ApiSettings]
    ) -> TokenResponse:
        principal = request.user
        if principal.via_token:
            raise ForbiddenError("Send an API key, not a token, to get a token")
        ttl_s = api_settings.access_token_expire_minutes * 60
        secret: str = request.app.state.secret_key
        return TokenResponse(
            access_token=issue(secret, principal.key_id, principal.tenant, ttl_s),
            token_type="bearer",  # noqa: S106 - the scheme's name, not a secret
            expires_in=ttl_s,
        )

    @get(
        "/models",
        operation_id="listModels",
        summary="Model versions and aliases clients may use",
        responses=error_responses(),
    )
    async def models(
        self, request: Request[Principal, Any, State], routes: NamedDependency[RouteStore]
    ) -> ModelsResponse:
        by_model: dict[str, list[str]] = {}
        for alias, name in sorted((await routes.aliases()).items()):
            by_model.setdefault(name, []).append(alias)
        response = ModelsResponse(
            models=[ModelInfo(name=name, aliases=aliases) for name, aliases in sorted(by_model.items())],
            default="latest",
        )
        if request.user.role is Role.ADMIN:  # weights, shadows and rollouts are the operators' business
            found = await evidence.overview(routes.redis)
            response.versions, response.comparisons, response.rollouts = (
                found["versions"],
                found["comparisons"],
                found["rollouts"],
            )
        return response
