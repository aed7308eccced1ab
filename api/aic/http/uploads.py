"""Uploads read while they stream, as multipart forms or as a raw image body: a file is refused the moment it
passes its limit, so no more than about ``max_file_size`` bytes of one file (and a few KB of form fields) are ever
held.

Litestar's own form parsing would spool every part (to disk above 1 MB) and only bound the whole body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from multipart import (  # type: ignore[import-untyped]
    MultipartError,
    MultipartSegment,
    PushMultipartParser,
    parse_options_header,
)

from aic.core.errors import BadRequestError, ImageValidationError, RequestValidationError

FIELD_MAX_BYTES = 4096
"""A text field (priority, metadata, callback_url ...) longer than this is refused."""
MAX_TEXT_FIELDS = 16


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    content: bytes


@dataclass
class Form:
    files: list[UploadedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def _field_error(name: str, message: str) -> RequestValidationError:
    return RequestValidationError("Request validation failed", [{"field": name, "message": message}])


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header, lower case and without parameters."""
    return str(parse_options_header(content_type)[0]).lower()


def boundary_of(content_type: str) -> str:
    kind, options = parse_options_header(content_type)
    boundary = options.get("boundary", "")
    if kind != "multipart/form-data" or not boundary:
        raise BadRequestError(
            "Expected a multipart/form-data body with a boundary (or, for one image, the image itself as the body "
            "with Content-Type image/jpeg, image/png or image/webp)"
        )
    return str(boundary)


async def read_raw(stream: AsyncIterator[bytes], max_file_size: int) -> bytes:
    """A body that is the image itself, refused the moment it passes ``max_file_size``."""
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > max_file_size:
            raise ImageValidationError(f"File size exceeds limit of {max_file_size} bytes")
        chunks.append(chunk)
    return b"".join(chunks)  # one copy (a growing bytearray copied each chunk again as it grew)


class _Collector:
    """Keeps the parts of one form within their limits as the parser emits them."""

    def __init__(self, file_field: str, max_files: int, max_file_size: int) -> None:
        self.form = Form()
        self.file_field, self.max_files, self.max_file_size = file_field, max_files, max_file_size
        self.segment: MultipartSegment | None = None
        self.buffer = bytearray()

    def start(self, segment: MultipartSegment) -> None:
        self.segment, self.buffer = segment, bytearray()
        if segment.filename is not None:
            if segment.name != self.file_field:
                raise _field_error(segment.name, f"unexpected file; send images as '{self.file_field}'")
            if len(self.form.files) >= self.max_files:
                raise _field_error(self.file_field, f"at most {self.max_files} file(s) per request")
        elif len(self.form.fields) >= MAX_TEXT_FIELDS:
            raise BadRequestError("Too many form fields")

    def feed(self, chunk: bytes) -> None:
        assert self.segment is not None
        self.buffer.extend(chunk)
        if self.segment.filename is not None:
            if len(self.buffer) > self.max_file_size:
                name = self.segment.filename or f"file {len(self.form.files) + 1}"
                raise ImageValidationError(f"{name}: File size exceeds limit of {self.max_file_size} bytes")
        elif len(self.buffer) > FIELD_MAX_BYTES:
            raise _field_error(self.segment.name, f"must be at most {FIELD_MAX_BYTES} bytes")

    def end(self) -> None:
        segment = self.segment
        if segment is None:
            raise BadRequestError("Invalid multipart/form-data")
        if segment.filename is not None:
            filename = segment.filename or f"file {len(self.form.files) + 1}"
            self.form.files.append(UploadedFile(filename, bytes(self.buffer)))
        else:
            try:
                self.form.fields[segment.name] = self.buffer.decode(segment.charset or "utf-8")
            except (UnicodeDecodeError, LookupError):
                raise _field_error(segment.name, "must be UTF-8 text") from None
        self.segment = None


async def read_form(
    stream: AsyncIterator[bytes], content_type: str, *, file_field: str, max_files: int, max_file_size: int
) -> Form:
    """Parse a multipart body from ``stream``, refusing any part the moment it passes its limit."""
    collector = _Collector(file_field, max_files, max_file_size)
    try:
        with PushMultipartParser(boundary_of(content_type), max_segment_count=max_files + MAX_TEXT_FIELDS) as parser:
            async for chunk in stream:
                _apply(collector, parser.parse(chunk))
            _apply(collector, parser.parse(b""))
            if not parser.closed:
                raise BadRequestError("Invalid multipart/form-data: the body ended early")
    except MultipartError as exc:
        raise BadRequestError(f"Invalid multipart/form-data: {exc}") from None
    return collector.form


def _apply(collector: _Collector, events: object) -> None:
    for event in events:  # type: ignore[attr-defined]
        if isinstance(event, MultipartSegment):
            collector.start(event)
        elif event:
            collector.feed(event)
        else:
            collector.end()
