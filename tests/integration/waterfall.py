"""One trace as a waterfall picture (Pillow): a row per span in tree order, indented by depth, a bar per span on
a shared time axis, coloured by service. The README's trace picture is drawn by test_observability with
``AIC_WATERFALL=docs/trace.png``."""

from __future__ import annotations

from pathlib import Path

from otlp import CollectedSpan
from PIL import Image, ImageDraw, ImageFont

COLOURS = {"aic-api": (52, 120, 198), "aic-dispatcher": (46, 160, 92), "triton": (214, 120, 36)}
OTHER = (130, 130, 130)
ROW, LABEL_W, BAR_W, PAD = 22, 430, 760, 12


def tree_order(spans: list[CollectedSpan]) -> list[tuple[int, CollectedSpan]]:
    """(depth, span) depth first, children by start time; spans whose parent is absent are roots."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[CollectedSpan]] = {}
    for span in spans:
        children.setdefault(span.parent_span_id if span.parent_span_id in ids else "", []).append(span)
    ordered: list[tuple[int, CollectedSpan]] = []

    def walk(parent: str, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_ns):
            ordered.append((depth, span))
            walk(span.span_id, depth + 1)

    walk("", 0)
    return ordered


def render(spans: list[CollectedSpan], path: Path, title: str) -> None:
    rows = tree_order(spans)
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    scale = BAR_W / max(end - start, 1)
    height = PAD * 2 + ROW * (len(rows) + 2)
    image = Image.new("RGB", (LABEL_W + BAR_W + PAD * 3 + 60, height), "white")  # room for the last labels
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    draw.text((PAD, PAD), title, fill="black", font=font)
    axis_y = PAD + ROW
    x0 = LABEL_W + PAD * 2
    total_ms = (end - start) / 1e6
    for tick in range(6):
        x = x0 + BAR_W * tick / 5
        draw.line([(x, axis_y + ROW - 4), (x, height - PAD)], fill=(230, 230, 230))
        draw.text((x - 10, axis_y), f"{total_ms * tick / 5:.0f} ms", fill=(90, 90, 90), font=font)
    for index, (depth, span) in enumerate(rows):
        y = axis_y + ROW * (index + 1)
        colour = COLOURS.get(span.service, OTHER)
        label = f"{span.service}: {span.name}"
        draw.text((PAD + depth * 12, y + 3), label[: 58 - depth * 2], fill=colour, font=font)
        left = x0 + (span.start_ns - start) * scale
        right = max(left + 2, x0 + (span.end_ns - start) * scale)
        draw.rectangle([left, y + 4, right, y + ROW - 4], fill=colour)
        draw.text((right + 4, y + 3), f"{span.duration_ms:.1f} ms", fill=(60, 60, 60), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
