"""OpenAPI request bodies of the submit routes, which parse their multipart body while it streams
(``aic.uploads``) and so have no ``data`` parameter for Litestar to describe."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from aic.enums import Priority
from aic.submissions import CALLBACK_URL_MAX, FORM_FIELDS

_BINARY = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
_OPTIONS: dict[str, Schema] = {
    "priority": Schema(type=OpenAPIType.STRING, enum=[p.value for p in Priority], default="normal"),
    "model_version": Schema(type=OpenAPIType.STRING, default="latest", description="An alias listed by /models"),
    "callback_url": Schema(
        type=OpenAPIType.STRING, max_length=CALLBACK_URL_MAX, pattern="^https://", description="Webhook (https)"
    ),
    "metadata": Schema(type=OpenAPIType.STRING, description="A JSON object of at most 1 KB"),
    "webhook_events": Schema(
        type=OpenAPIType.STRING,
        description="Comma list of started, completed, failed, cancelled (default: the terminal three)",
    ),
}
assert set(_OPTIONS) == set(FORM_FIELDS)


def _form(files: tuple[str, Schema]) -> RequestBody:
    schema = Schema(type=OpenAPIType.OBJECT, properties={files[0]: files[1], **_OPTIONS}, required=[files[0]])
    return RequestBody(content={"multipart/form-data": OpenAPIMediaType(schema=schema)}, required=True)


@dataclass
class ClassifyOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _form(("file", _BINARY))


@dataclass
class BatchOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _form(("files", Schema(type=OpenAPIType.ARRAY, items=_BINARY, min_items=1, max_items=10)))
