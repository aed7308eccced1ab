"""Upload validation: the type is decided from the bytes, never from a header or file name, and the
dimensions are read from the header before any pixel is decoded, so a decompression bomb is refused
without being expanded."""

from __future__ import annotations

import io
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError

from aic.core import images
from aic.core.errors import ImageValidationError

# Header-declared size is bounded; this stops PIL's own check from ever being the one that fires.
Image.MAX_IMAGE_PIXELS = images.MAX_PIXELS


def validate(data: bytes, max_size: int) -> dict[str, Any]:
    """Check an upload without decoding its pixels; returns the seed's image metadata."""
    if len(data) > max_size:
        raise ImageValidationError(f"File size exceeds limit of {max_size} bytes")
    fmt = images.sniff(data)
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
    low, high = images.MIN_SIDE, images.MAX_SIDE
    if width < low or height < low:
        raise ImageValidationError(f"Image too small: {width}x{height} (minimum {low}x{low})")
    if width > high or height > high:
        raise ImageValidationError(f"Image too large: {width}x{height} (maximum {high}x{high})")
    return {"format": fmt, "mode": mode, "size": [width, height], "file_size": len(data)}
