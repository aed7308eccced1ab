"""Upload validation (the API) and decoding of every image mode into the model's input (the dispatcher)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from aic.core import images as formats
from aic.core.errors import ImageValidationError
from aic.core.modelspec import Layout, Preprocessing, ResizeRule
from aic.dispatch import preprocess
from aic.http import images
from PIL import Image

SPEC = Preprocessing(height=224, width=224)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def gradient(size: tuple[int, int] = (300, 200)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2), "RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_sniff_decides_the_format_from_the_bytes(fmt: str) -> None:
    assert formats.sniff(encode(gradient(), fmt)) == fmt


def test_text_is_an_unsupported_file_type() -> None:
    with pytest.raises(ImageValidationError, match="Unsupported file type"):
        images.validate(b"not an image at all", 10_000)


def test_gif_is_an_unsupported_file_type() -> None:
    with pytest.raises(ImageValidationError, match="Unsupported file type"):
        images.validate(encode(gradient(), "GIF"), 10_000_000)


def test_size_over_the_limit_is_refused() -> None:
    with pytest.raises(ImageValidationError, match="exceeds limit"):
        images.validate(b"\xff\xd8\xff" + b"\0" * 100, 50)


def test_metadata_of_a_valid_image() -> None:
    data = encode(gradient((320, 240)), "PNG")
    meta = images.validate(data, 10_000_000)
    assert meta == {"format": "PNG", "mode": "RGB", "size": [320, 240], "file_size": len(data)}


@pytest.mark.parametrize(("size", "word"), [((31, 100), "too small"), ((4097, 40), "too large")])
def test_dimensions_outside_32_to_4096_are_refused(size: tuple[int, int], word: str) -> None:
    with pytest.raises(ImageValidationError, match=word):
        images.validate(encode(Image.new("L", size), "PNG"), 10_000_000)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares huge dimensions: a bomb if anyone decoded it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [5000, 60000])
def test_decompression_bomb_is_refused_from_its_header(side: int) -> None:
    with pytest.raises(ImageValidationError, match=r"too large|bomb"):
        images.validate(png_header_only(side, side), 10_000_000)


def test_truncated_jpeg_is_undecodable() -> None:
    data = encode(gradient(), "JPEG")[:400]
    with pytest.raises(ImageValidationError):
        preprocess.preprocess(data, SPEC)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1"])
def test_every_mode_becomes_an_rgb_tensor(mode: str) -> None:
    source = (
        gradient().convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.asarray(gradient().convert("L"), dtype=np.uint16) * 257)
    )
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG" if mode != "CMYK" else "JPEG"
    tensor = preprocess.preprocess(encode(source, fmt), SPEC)
    assert tensor.shape == (3, 224, 224)
    assert tensor.dtype == np.float32
    assert np.isfinite(tensor).all()


def test_transparent_pixels_are_laid_on_white() -> None:
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgb = preprocess.decode(encode(clear, "PNG"), SPEC)
    assert rgb.getpixel((10, 10)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    base = Image.new("RGB", (200, 100), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = preprocess.decode(encode(base, "JPEG", exif=exif.tobytes()), SPEC)
    assert decoded.size == (100, 200)


def test_jpeg_is_decoded_at_reduced_scale_but_never_below_the_target() -> None:
    big = encode(gradient((2400, 1800)), "JPEG")
    decoded = preprocess.decode(big, SPEC)
    assert decoded.size[0] < 2400
    assert min(decoded.size) >= 224


def test_normalisation_follows_the_spec() -> None:
    grey = Image.new("RGB", (64, 64), (124, 116, 104))  # about the ImageNet mean
    tensor = preprocess.preprocess(encode(grey, "PNG"), SPEC)
    assert np.abs(tensor).max() < 0.02


def test_center_crop_rule_keeps_the_middle() -> None:
    spec = Preprocessing(height=32, width=32, resize=ResizeRule.SHORTER_SIDE_CENTER_CROP, crop_fraction=1.0)
    wide = Image.new("RGB", (96, 32), (0, 0, 0))
    wide.paste((255, 255, 255), (32, 0, 64, 32))  # a white middle third
    out = preprocess.resize(wide, spec)
    assert out.size == (32, 32)
    assert np.asarray(out).min() > 200


def _normalised(pixels: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """The spec's normalisation written out plainly, height x width x 3 in float64."""
    return (pixels / spec.scale - np.asarray(spec.mean)) / np.asarray(spec.std)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_uint8_input_is_the_resized_pixels_unnormalised(layout: str) -> None:
    spec = Preprocessing(height=64, width=48, layout=Layout(layout), dtype="UINT8")
    rgb = preprocess.resize(preprocess.decode(encode(gradient(), "PNG"), spec), spec)
    tensor = preprocess.to_tensor(rgb, spec)
    pixels = np.asarray(rgb)
    assert tensor.dtype == np.uint8
    expected = pixels.transpose(2, 0, 1) if layout == "NCHW" else pixels
    assert tensor.shape == expected.shape and np.array_equal(tensor, expected)
    assert tensor.flags.c_contiguous


@pytest.mark.parametrize(("dtype", "numpy_type", "tolerance"), [("FP32", np.float32, 1e-5), ("FP16", np.float16, 4e-3)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_float_input_is_normalised_in_the_declared_type_and_layout(
    dtype: str, numpy_type: type, tolerance: float, layout: str
) -> None:
    spec = Preprocessing(height=32, width=40, layout=Layout(layout), dtype=dtype)
    rgb = preprocess.resize(preprocess.decode(encode(gradient(), "PNG"), spec), spec)
    tensor = preprocess.to_tensor(rgb, spec)
    expected = _normalised(np.asarray(rgb, dtype=np.float64), spec)
    if layout == "NCHW":
        expected = expected.transpose(2, 0, 1)
    assert tensor.dtype == numpy_type and tensor.shape == expected.shape
    assert np.allclose(tensor.astype(np.float64), expected, rtol=tolerance, atol=tolerance)


def test_an_unknown_input_type_is_refused() -> None:
    spec = Preprocessing(height=32, width=32, dtype="INT64")
    with pytest.raises(ValueError, match="INT64"):
        preprocess.to_tensor(Image.new("RGB", (32, 32)), spec)
