"""What an uploaded image may be: its formats, told from the bytes, and the limits on its sides.

The API validates uploads against these and the dispatcher decodes with the format found here, so the two
never disagree about what an image is. Pure: bytes in, answers out.
"""

from __future__ import annotations

from typing import Final

MIN_SIDE: Final = 32
MAX_SIDE: Final = 4096
MAX_PIXELS: Final = MAX_SIDE * MAX_SIDE
"""A header declaring more is refused before any pixel is decoded (decompression bombs)."""

_SIGNATURES: tuple[tuple[str, bytes, int], ...] = (
    ("JPEG", b"\xff\xd8\xff", 0),
    ("PNG", b"\x89PNG\r\n\x1a\n", 0),
    ("WEBP", b"WEBP", 8),
)
FORMATS: Final = tuple(fmt for fmt, _, _ in _SIGNATURES)


def sniff(data: bytes) -> str | None:
    """The image format the bytes start with (JPEG, PNG, WEBP), or None."""
    for fmt, magic, offset in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic and (fmt != "WEBP" or data[:4] == b"RIFF"):
            return fmt
    return None
