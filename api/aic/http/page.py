"""The web page at ``/``: one HTML document and its static assets, shipped in the package (no CDN; works offline).

They are not part of the API: no credential, no rate limit, not in the OpenAPI document. The page's own calls to
the API carry the key the user typed (kept in ``sessionStorage`` only) and, for the WebSocket, a short-lived
token from ``/auth/token`` offered as a subprotocol, never in a URL. Everything is served with a strict
Content-Security-Policy: no inline script or style, connections to this origin only.
"""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.middleware import ASGIMiddleware
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, ControllerRouterHandler, Message, Receive, Scope, Send

from aic.core.settings import ApiSettings

STATIC_PATH = "/static"
STATIC_DIR = Path(str(resources.files(__package__).joinpath("static")))
PATHS = ("^/$", f"^{STATIC_PATH}/")
"""The page's paths, for the authentication and rate-limit exclusions."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_ENCODED_HEADERS = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]


class PageHeadersMiddleware(ASGIMiddleware):
    """Puts the security headers on every answer of the page's routes (static files included)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_ENCODED_HEADERS]
            await send(message)

        await next_app(scope, receive, send_with_headers)


def render_index(settings: ApiSettings) -> bytes:
    """The HTML with this app's API prefix and upload limits filled in (as data attributes the script reads)."""
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    values = {
        "api_prefix": settings.api_prefix,
        "api_key_header": settings.api_key_header,
        "max_file_size": str(settings.max_file_size),
        "batch_max_files": str(settings.batch_max_files),
    }
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", html.escape(value, quote=True))
    return template.encode()


def page_routes(settings: ApiSettings) -> list[ControllerRouterHandler]:
    body = render_index(settings)

    @get("/", include_in_schema=False, sync_to_thread=False, middleware=[PageHeadersMiddleware()])
    def index() -> Response[bytes]:
        return Response(body, media_type=MediaType.HTML, headers={"Cache-Control": "no-cache"})

    assets = create_static_files_router(
        path=STATIC_PATH,
        directories=[STATIC_DIR],
        include_in_schema=False,
        middleware=[PageHeadersMiddleware()],
        cache_control=CacheControlHeader(no_cache=True),
        name="page-static",
    )
    return [index, assets]
