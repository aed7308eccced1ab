"""What an uploaded image may be: its formats, told from the bytes, and the limits on its sides.

The API validates uploads against these and the dispatcher decodes with the format found here, so the two
never disagree about what an image is (the dispatcher also validates images it fetched by URL). Pure: bytes
in, answers out.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Final

from PIL import Image, UnidentifiedImageError

from aic.core.errors import ImageValidationError

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

# Header-declared size is bounded; this stops PIL's own check from ever being the one that fires.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def sniff(data: bytes) -> str | None:
    """The image format the bytes start with (JPEG, PNG, WEBP), or None."""
    for fmt, magic, offset in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic and (fmt != "WEBP" or data[:4] == b"RIFF"):
            return fmt
    return None


def validate(data: bytes, max_size: int) -> dict[str, Any]:
    """Check an upload without decoding its pixels; returns the seed's image metadata."""
    if len(data) > max_size:
        raise ImageValidationError(f"File size exceeds limit of {max_size} bytes")
    fmt = sniff(data)
    if fmt is None:
        raise ImageValidationError("Unsupported file type: only JPEG, PNG and WebP images are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            mode = image.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageValidationError(f"Invalid image file: {exc}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageValidationError("Image too large: decompression bomb refused") from None
    low, high = MIN_SIDE, MAX_SIDE
    if width < low or height < low:
        raise ImageValidationError(f"Image too small: {width}x{height} (minimum {low}x{low})")
    if width > high or height > high:
        raise ImageValidationError(f"Image too large: {width}x{height} (maximum {high}x{high})")
    return {"format": fmt, "mode": mode, "size": [width, height], "file_size": len(data)}
