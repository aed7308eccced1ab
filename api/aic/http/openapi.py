"""The OpenAPI document's shared parts: security schemes, error responses and the submit routes' request bodies.

The submit routes parse their body while it streams (``aic.http.uploads``), so they have no ``data`` parameter for
Litestar to describe; their bodies and query options are described here, with the limits of the running settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from litestar.enums import ParamType
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from aic.core.enums import Priority
from aic.core.schemas import ErrorResponse
from aic.core.settings import ApiSettings, QueueSettings
from aic.http.submissions import (
    CALLBACK_URL_MAX,
    FORM_FIELDS,
    IMAGE_URL_MAX,
    METADATA_MAX_BYTES,
    RAW_ANY,
    RAW_IMAGE_TYPES,
)
from aic.store.jobs import DEFAULT_RETENTION_S

API_KEY_SCHEME: Final = "ApiKey"
BEARER_SCHEME: Final = "Bearer"
SECURITY: Final[list[dict[str, list[str]]]] = [{API_KEY_SCHEME: []}, {BEARER_SCHEME: []}]
"""What every guarded route lists: an API key header, or a Bearer key or token. Both are declared below."""

_ERROR_DESCRIPTIONS = {
    400: "Invalid image, unsupported type, oversized file, malformed body or unknown model_version",
    # 422 also covers malformed path, query and header parameters
    401: "Missing or invalid API key or token",
    403: "The caller's role may not do this",
    404: "Job not found (or owned by another tenant)",
    409: "Job not in a state that allows this",
    422: "Request validation failed (per-field errors)",
    429: "Rate limit exceeded (see Retry-After)",
    503: "A dependency is unavailable or the queue is full",
}


def security_schemes(api_key_header: str) -> Components:
    return Components(
        security_schemes={
            API_KEY_SCHEME: SecurityScheme(type="apiKey", name=api_key_header, security_scheme_in="header"),
            BEARER_SCHEME: SecurityScheme(
                type="http",
                scheme="bearer",
                bearer_format="JWT",
                description="A token from POST /auth/token, or the API key itself",
            ),
        }
    )


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the ErrorResponse bodies a route can answer with."""
    return {
        c: ResponseSpec(ErrorResponse, description=_ERROR_DESCRIPTIONS[c], generate_examples=False)
        for c in sorted({400, 401, 422, 429, *codes})
    }


_BINARY = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)


def _options(queue: QueueSettings) -> dict[str, Schema]:
    """The submit options as form fields (with their defaults)."""
    options = {
        "priority": Schema(type=OpenAPIType.STRING, enum=[p.value for p in Priority], default="normal"),
        "model_version": Schema(type=OpenAPIType.STRING, default="latest", description="An alias listed by /models"),
        "callback_url": Schema(
            type=OpenAPIType.STRING, max_length=CALLBACK_URL_MAX, pattern="^https://", description="Webhook (https)"
        ),
        "metadata": Schema(type=OpenAPIType.STRING, description=f"A JSON object of at most {METADATA_MAX_BYTES} bytes"),
        "webhook_events": Schema(
            type=OpenAPIType.STRING,
            description="Comma list of started, completed, failed, cancelled (default: the terminal three)",
        ),
        "deadline_s": Schema(
            type=OpenAPIType.INTEGER,
            minimum=1,
            maximum=queue.max_deadline_s,
            description=f"Seconds from the submit: not finished by then, the job fails with error_code TIMEOUT "
            f"(default QUEUE_TTL_S, {queue.queue_ttl_s}). The Cancel-After header says the same as a duration.",
        ),
        "retention_s": Schema(
            type=OpenAPIType.INTEGER,
            minimum=1,
            maximum=queue.max_retention_s,
            description=f"Seconds the ended job's status, result and metadata stay readable "
            f"(default {DEFAULT_RETENTION_S})",
        ),
    }
    assert set(options) == set(FORM_FIELDS)
    return options


def _form(files: tuple[str, Schema], queue: QueueSettings, *, raw: bool = False) -> RequestBody:
    """The multipart form, and with ``raw`` the image itself as the body (its options in the query string)."""
    schema = Schema(type=OpenAPIType.OBJECT, properties={files[0]: files[1], **_options(queue)}, required=[files[0]])
    content = {"multipart/form-data": OpenAPIMediaType(schema=schema)}
    if raw:
        content.update({kind: OpenAPIMediaType(schema=_BINARY) for kind in [*RAW_IMAGE_TYPES, RAW_ANY]})
    description = "A multipart form; options may also be query parameters (not both for one option)."
    if raw:
        description = (
            "A multipart form with the image as `file`, or the image itself as the body (`Content-Type: image/jpeg`, "
            "`image/png` or `image/webp`, matching its bytes, or `application/octet-stream`: the format is read from "
            "the bytes) with the options as query parameters."
        )
    return RequestBody(content=content, required=True, description=description)


def _query_options(queue: QueueSettings) -> list[Parameter]:
    """The submit options as query parameters, without defaults: a client generated from the document then sends an
    option only where its caller set it, so it never sends a default both here and as a form field."""
    found = []
    for name, schema in _options(queue).items():
        described = dataclasses.replace(schema, default=None)
        if schema.default is not None:
            described.description = f"{schema.description or ''} (default {schema.default})".strip()
        found.append(Parameter(name=name, param_in=ParamType.QUERY, schema=described))
    return found


_UPLOAD_ID = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID, description="An upload_id from POST /uploads")


_IMAGE_URL = Schema(
    type=OpenAPIType.STRING,
    format=OpenAPIFormat.URI,
    max_length=IMAGE_URL_MAX,
    description="An https URL the dispatcher fetches the image from (instead of a file)",
)


def _by_upload(
    field: str, schema: Schema, url_field: str, url_schema: Schema, queue: QueueSettings
) -> tuple[OpenAPIMediaType, list[Parameter]]:
    """A submit by direct upload (with OBJECT_STORE_URL) or by image URL: a JSON body naming it with the options,
    or the query."""
    options = _options(queue)
    metadata = Schema(one_of=[options["metadata"], Schema(type=OpenAPIType.OBJECT)])
    properties: dict[str, Schema | Reference] = {field: schema, url_field: url_schema, **options, "metadata": metadata}
    body = OpenAPIMediaType(
        schema=Schema(
            type=OpenAPIType.OBJECT,
            properties=properties,
            description=f"Exactly one of {field} and {url_field}, with the options",
        )
    )
    comma_list = Schema(type=OpenAPIType.STRING, description="Comma list")
    query_schema = _UPLOAD_ID if field == "upload_id" else comma_list
    url_query = _IMAGE_URL if url_field == "image_url" else comma_list
    return body, [
        Parameter(name=field, param_in=ParamType.QUERY, schema=query_schema),
        Parameter(name=url_field, param_in=ParamType.QUERY, schema=url_query),
    ]


def submit_operations(settings: ApiSettings, queue: QueueSettings) -> dict[str, type[Operation]]:
    """Operation classes of the submit routes by operation id, with this app's file and lifetime limits."""

    @dataclass
    class ClassifyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = _form(("file", _BINARY), queue, raw=True)
            body, parameters = _by_upload("upload_id", _UPLOAD_ID, "image_url", _IMAGE_URL, queue)
            self.request_body.content["application/json"] = body
            self.parameters = [*(self.parameters or []), *_query_options(queue), *parameters]

    @dataclass
    class BatchOperation(Operation):
        def __post_init__(self) -> None:
            files = Schema(type=OpenAPIType.ARRAY, items=_BINARY, min_items=1, max_items=settings.batch_max_files)
            self.request_body = _form(("files", files), queue)
            ids = Schema(type=OpenAPIType.ARRAY, items=_UPLOAD_ID, min_items=1, max_items=settings.batch_max_files)
            urls = Schema(type=OpenAPIType.ARRAY, items=_IMAGE_URL, min_items=1, max_items=settings.batch_max_files)
            body, parameters = _by_upload("upload_ids", ids, "image_urls", urls, queue)
            self.request_body.content["application/json"] = body
            self.parameters = [*(self.parameters or []), *_query_options(queue), *parameters]

    return {"classify": ClassifyOperation, "classifyBatch": BatchOperation}
