"""The web page at ``/``: one HTML document and its static assets, shipped in the package (no CDN; works offline).

They are not part of the API: no credential, no rate limit, not in the OpenAPI document. The page's own calls to
the API carry the key the user typed (kept in ``sessionStorage`` only) and, for the WebSocket, a short-lived
token from ``/auth/token`` offered as a subprotocol, never in a URL. Everything is served with a strict
Content-Security-Policy: no inline script or style, connections to this origin only, and, when an object store is
configured (``OBJECT_STORE_URL``), to the store's origin as well: the page PUTs an image over ``MAX_FILE_SIZE`` to a
presigned URL there (README "Presigned direct uploads").
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.middleware import ASGIMiddleware
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, ControllerRouterHandler, Message, Receive, Scope, Send

from aic.core.settings import ApiSettings, ObjectStoreSettings
from aic.store.objects import ENDPOINT_VARIABLES

STATIC_PATH = "/static"
STATIC_DIR = Path(str(resources.files(__package__).joinpath("static")))
PATHS = ("^/$", f"^{STATIC_PATH}/")
"""The page's paths, for the authentication and rate-limit exclusions."""


def content_security_policy(connect: tuple[str, ...] = ()) -> str:
    """The page's policy; ``connect`` adds origins its script may call (the object store's, for direct uploads)."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' blob: data:",
            " ".join(["connect-src 'self'", *connect]),
            "form-action 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


CONTENT_SECURITY_POLICY = content_security_policy()
"""The policy without an object store: connections to this origin only."""


def _origin(url: str) -> str | None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def store_origins(settings: ObjectStoreSettings, env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Where a presigned upload URL of the configured store points, for ``connect-src`` (empty: no store, or one
    that cannot sign, ``file://``). ``OBJECT_STORE_BROWSER_ORIGIN`` names it outright (a CDN or proxy in front of
    the store); otherwise it comes from ``AWS_ENDPOINT_URL`` (MinIO, Ceph) or the cloud's own host names."""
    url = settings.object_store_url
    if not url:
        return ()
    if settings.object_store_browser_origin:
        origins = [_origin(o) for o in settings.object_store_browser_origin.split()]
        return tuple(o for o in origins if o)
    scheme = urlsplit(url).scheme
    if scheme in ("s3", "s3a"):
        endpoint = next((env[name] for name in ENDPOINT_VARIABLES if env.get(name)), "")
        if endpoint:
            origin = _origin(endpoint)
            return (origin,) if origin else ()
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        bucket = urlsplit(url).netloc
        return (f"https://s3.{region}.amazonaws.com", f"https://{bucket}.s3.{region}.amazonaws.com")
    if scheme in ("gs", "gcs"):
        return ("https://storage.googleapis.com",)
    if scheme in ("az", "azure", "abfs", "abfss"):
        account = env.get("AZURE_STORAGE_ACCOUNT_NAME") or env.get("AZURE_STORAGE_ACCOUNT")
        return (f"https://{account}.blob.core.windows.net" if account else "https://*.blob.core.windows.net",)
    return ()


def security_headers(connect: tuple[str, ...] = ()) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(connect),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


SECURITY_HEADERS = security_headers()


class PageHeadersMiddleware(ASGIMiddleware):
    """Puts the security headers on every answer of the page's routes (static files included)."""

    def __init__(self, headers: Mapping[str, str] = SECURITY_HEADERS) -> None:
        self.encoded = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.encoded]
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


def page_routes(
    settings: ApiSettings, object_store: ObjectStoreSettings | None = None
) -> list[ControllerRouterHandler]:
    body = render_index(settings)
    headers = security_headers(store_origins(object_store) if object_store else ())

    @get("/", include_in_schema=False, sync_to_thread=False, middleware=[PageHeadersMiddleware(headers)])
    def index() -> Response[bytes]:
        return Response(body, media_type=MediaType.HTML, headers={"Cache-Control": "no-cache"})

    assets = create_static_files_router(
        path=STATIC_PATH,
        directories=[STATIC_DIR],
        include_in_schema=False,
        middleware=[PageHeadersMiddleware(headers)],
        cache_control=CacheControlHeader(no_cache=True),
        name="page-static",
    )
    return [index, assets]
