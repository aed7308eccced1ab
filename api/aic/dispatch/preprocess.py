"""Decoding an upload and preprocessing it into a model's input tensor, as the model's spec says.

Runs in the dispatcher's worker threads. The format is the one the bytes declare (``aic.core.images``),
so PIL never guesses; JPEGs decode at the smallest DCT scale that still covers the model's input.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from aic.core import images
from aic.core.errors import ImageValidationError
from aic.core.modelspec import Layout, Preprocessing, ResizeRule

# Header-declared size is bounded; this stops PIL's own check from ever being the one that fires.
Image.MAX_IMAGE_PIXELS = images.MAX_PIXELS


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparent pixels are laid on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        image = Image.fromarray(np.clip(pixels * (255.0 / peak), 0, 255).astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode(data: bytes, spec: Preprocessing) -> Image.Image:
    """Decode to RGB with EXIF orientation applied; JPEGs decode at a reduced scale when that is enough."""
    try:
        fmt = images.sniff(data)
        opened = Image.open(io.BytesIO(data), formats=[fmt] if fmt else None)
        if opened.format == "JPEG":
            # DCT scaling: decode at 1/2, 1/4 or 1/8 as long as both sides stay >= what the resize needs.
            side = max(spec.height, spec.width)
            if spec.resize is ResizeRule.SHORTER_SIDE_CENTER_CROP:
                side = int(side / min(1.0, spec.crop_fraction)) + 1  # the crop is taken from a larger image
            opened.draft("RGB", (side, side))
        # in place: without an orientation tag this decodes once and copies nothing (a copy cost ~2 ms a photo)
        ImageOps.exif_transpose(opened, in_place=True)
        return _to_rgb(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageValidationError(f"Undecodable image: {exc}") from None


def _resample(name: str) -> Image.Resampling:
    return Image.Resampling[name.upper()]


def resize(image: Image.Image, spec: Preprocessing) -> Image.Image:
    method = _resample(spec.interpolation)
    if spec.resize is ResizeRule.STRETCH:
        return image.resize((spec.width, spec.height), method)
    # shorter side to size / crop_fraction, then the centre size x size
    width, height = image.size
    scale = max(spec.width, spec.height) / spec.crop_fraction / min(width, height)
    resized = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), method)
    left = (resized.width - spec.width) // 2
    top = (resized.height - spec.height) // 2
    return resized.crop((left, top, left + spec.width, top + spec.height))


_FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {"FP32": np.float32, "FP16": np.float16}


@functools.lru_cache(maxsize=16)
def _lookup(scale: float, mean: tuple[float, ...], std: tuple[float, ...], dtype: str) -> NDArray[Any]:
    """The normalised value of every 8-bit level, per channel, in the input's float type: shape (3, 256)."""
    levels = np.arange(256, dtype=np.float64)
    table = (levels - np.asarray(mean, dtype=np.float64)[:, None] * scale) / (
        np.asarray(std, dtype=np.float64)[:, None] * scale
    )
    return np.ascontiguousarray(table, dtype=_FLOAT_TYPES[dtype])


def to_tensor(image: Image.Image, spec: Preprocessing) -> NDArray[Any]:
    """RGB pixels to the input tensor of one image (no batch dimension), of the spec's layout and type.

    ``UINT8``: the pixels as they are (the model normalises; a quarter of the bytes of FP32 on the wire).
    ``FP32`` / ``FP16``: normalised here by a per-channel table lookup written straight into the target
    layout, one pass instead of four (bench/).
    """
    pixels = np.asarray(image, dtype=np.uint8)  # height x width x 3
    if spec.dtype == "UINT8":
        return pixels if spec.layout is Layout.NHWC else np.ascontiguousarray(pixels.transpose(2, 0, 1))
    if spec.dtype not in _FLOAT_TYPES:
        raise ValueError(f"unsupported input data type {spec.dtype!r}")
    table = _lookup(spec.scale, tuple(spec.mean), tuple(spec.std), spec.dtype)
    height, width = pixels.shape[:2]
    if spec.layout is Layout.NCHW:
        tensor = np.empty((3, height, width), dtype=table.dtype)
        for channel in range(3):
            np.take(table[channel], pixels[:, :, channel], out=tensor[channel])
    else:
        tensor = np.empty((height, width, 3), dtype=table.dtype)
        for channel in range(3):
            np.take(table[channel], pixels[:, :, channel], out=tensor[:, :, channel])
    return tensor


def preprocess(data: bytes, spec: Preprocessing) -> NDArray[Any]:
    """Bytes of an uploaded image to the model's input tensor (runs in a worker thread)."""
    return to_tensor(resize(decode(data, spec), spec), spec)
