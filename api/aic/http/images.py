"""Upload validation: the type is decided from the bytes, never from a header or file name, and the
dimensions are read from the header before any pixel is decoded, so a decompression bomb is refused
without being expanded."""

from __future__ import annotations

from aic.core.images import validate

__all__ = ["validate"]
