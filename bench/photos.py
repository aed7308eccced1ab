"""The benchmark's uploads: real photos (scikit-image's bundled data) as JPEGs from 320 px to 3,000 px.

Deterministic: the same list of (name, bytes) on every run, so two runs upload the same work.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from skimage import data as skdata

SOURCES = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
LONG_SIDES = (320, 480, 640, 800, 1024, 1280, 1600, 2048, 2400, 3000)
QUALITY = 90


def jpeg(pixels: np.ndarray[Any, Any], long_side: int) -> bytes:
    image = Image.fromarray(pixels).convert("RGB")
    scale = long_side / max(image.size)
    image = image.resize(
        (max(32, round(image.width * scale)), max(32, round(image.height * scale))), Image.Resampling.BICUBIC
    )
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=QUALITY)
    return out.getvalue()


def photo_set() -> list[tuple[str, bytes]]:
    """Every source at every size, interleaved so neighbours differ in size: one list, always the same."""
    sources = {name: getattr(skdata, name)() for name in SOURCES}
    photos: list[tuple[str, bytes]] = []
    for i in range(len(LONG_SIDES)):
        for j, name in enumerate(SOURCES):
            side = LONG_SIDES[(i + j) % len(LONG_SIDES)]
            photos.append((f"{name}-{side}.jpg", jpeg(sources[name], side)))
    return photos


def write(folder: Path) -> list[tuple[str, bytes]]:
    """The standard set as files in ``folder`` (file order = upload order), returned as well."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = photo_set()
    for index, (name, body) in enumerate(photos):
        (folder / f"{index:03d}-{name}").write_bytes(body)
    return photos


def describe(photos: list[tuple[str, bytes]]) -> dict[str, object]:
    sizes = [len(b) for _, b in photos]
    return {
        "count": len(photos),
        "long_sides_px": list(LONG_SIDES),
        "sources": list(SOURCES),
        "bytes_mean": round(float(np.mean(sizes))),
        "bytes_max": max(sizes),
        "jpeg_quality": QUALITY,
    }
