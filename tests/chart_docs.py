"""The chart's values, documented: every `# --` comment of values.yaml and the key it stands above.

`python tests/chart_docs.py` prints the values table of charts/async-image-classifier/README.md; a test checks the
README's table against values.yaml, so neither can change alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "async-image-classifier"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9_]*):")


def documented(values_file: Path = CHART / "values.yaml") -> dict[str, str]:
    """Dotted key -> description, for every key with a `# --` comment above it, in file order."""
    found: dict[str, str] = {}
    path: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in values_file.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped.removeprefix("# --").strip()]
            continue
        if stripped.startswith("#") and comment:
            comment.append(stripped.removeprefix("#").strip())
            continue
        match = _KEY.match(line)
        if match is None:
            if not stripped.startswith("- ") and stripped:
                comment = []
            continue
        indent = len(match["indent"])
        path = [(i, k) for i, k in path if i < indent] + [(indent, match["key"])]
        if comment:
            found[".".join(k for _, k in path)] = " ".join(comment)
        comment = []
    return found


def default(values: dict[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        node = node[part]
    return node


def leaves(node: Any, prefix: str = "") -> list[str]:
    """Every leaf key of a values tree (a map's children, a list as one value)."""
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def table(values_file: Path = CHART / "values.yaml") -> str:
    values = yaml.safe_load(values_file.read_text())
    lines = ["| Key | Default | Description |", "|---|---|---|"]
    for key, description in documented(values_file).items():
        shown = json.dumps(default(values, key), separators=(",", ":")).replace("|", "\\|")
        lines.append(f"| `{key}` | `{shown}` | {description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
