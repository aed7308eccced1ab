"""The dispatcher's floor: CPU per photo of decoding and resizing the benchmark's photos, one thread, no service.

    .venv/bin/python bench/decode.py [--rounds 5]

The 70 photos of ``photos.py`` through the default model's preprocessing (``aic.dispatch.preprocess``), in this
process on one thread, CPU time from ``time.thread_time``; each figure is the best of ``--rounds`` passes over the
set (the least disturbed by neighbours on the CPU). Rows:

- ``decode``: as the dispatcher decodes (the smallest DCT scale that still covers the model's input, EXIF
  orientation applied).
- ``decode at 1/8``: every photo at libjpeg's smallest scale, whatever the model needs: the entropy decoding that
  no scale avoids, the floor under the row above.
- ``decode, full size``: no DCT scaling, for reference.
- ``resize + tensor``: what follows the decode, on the decoded images.
- ``preprocess``: the dispatcher's whole step (``preprocess.preprocess``): decode, resize, tensor.

A dispatcher's CPU per job cannot go below ``preprocess`` (its decoding threads run exactly that); in the
service it is higher by what the cores' other work costs those threads. Writes bench/results/decode.{md,json}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import photos  # noqa: E402
from aic.dispatch import preprocess  # noqa: E402
from aic.local.modelbuild import default_spec  # noqa: E402


def best_ms_per_photo(step: Callable[[Any], object], items: list[Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.thread_time()
        for item in items:
            step(item)
        best = min(best, time.thread_time() - began)
    return round(1000 * best / len(items), 3)


def at_scale(size: tuple[int, int] | None) -> Callable[[bytes], object]:
    def step(data: bytes) -> object:
        image = Image.open(io.BytesIO(data), formats=["JPEG"])
        if size is not None:
            image.draft("RGB", size)
        image.load()
        return image

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    spec = default_spec().preprocessing
    photo_set = photos.photo_set()
    uploads = [body for _, body in photo_set]
    decoded = [preprocess.decode(body, spec) for body in uploads]
    rows = {
        "decode": best_ms_per_photo(lambda body: preprocess.decode(body, spec), uploads, args.rounds),
        "decode at 1/8": best_ms_per_photo(at_scale((1, 1)), uploads, args.rounds),
        "decode, full size": best_ms_per_photo(at_scale(None), uploads, args.rounds),
        "resize + tensor": best_ms_per_photo(
            lambda image: preprocess.to_tensor(preprocess.resize(image, spec), spec), decoded, args.rounds
        ),
        "preprocess": best_ms_per_photo(lambda body: preprocess.preprocess(body, spec), uploads, args.rounds),
    }
    result = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([".venv/bin/python bench/decode.py", *sys.argv[1:]]),
        "cpus": os.cpu_count(),
        "photos": photos.describe(photo_set),
        "preprocessing": {"height": spec.height, "width": spec.width, "resize": str(spec.resize)},
        "cpu_ms_per_photo": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# The dispatcher's floor: decoding and resizing the benchmark's photos",
        "",
        f"`{result['command']}` at {result['started_at']}: {len(uploads)} JPEGs, "
        f"{result['photos']['bytes_mean']:,} bytes on average, to {spec.width}x{spec.height} ({spec.resize}); one "
        f"thread, best of {args.rounds} passes.",
        "",
        "| step | CPU ms per photo |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows.items()),
        "",
    ]
    (args.out / "decode.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
