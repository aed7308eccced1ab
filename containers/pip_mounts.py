"""What a container build needs of the host's pip configuration: reads `pip config list` on stdin, writes a pip.conf
of the options that name local files (or remote URLs, kept as they are), the files and folders to mount read-only at
the same paths, and the find-links folder that holds the model-builder's torch wheel, if any.

    python3 -m pip config list | python3 containers/pip_mounts.py --conf F --volumes F --torch-find-links F
"""

from __future__ import annotations

import argparse
import ast
import configparser
import io
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

TORCH_WHEEL = "torch-2.13.0*.whl"
PATH_OPTIONS = {"cert", "client-cert", "constraint"}
LOCATION_OPTIONS = {"find-links", "index-url", "extra-index-url"}
KEPT_OPTIONS = PATH_OPTIONS | LOCATION_OPTIONS | {"trusted-host", "default-timeout", "retries"}
RANK = {"global": 0, "user": 1, "site": 2, ":env:": 3}  # pip's precedence: the environment wins


def parse(listing: str) -> dict[str, str]:
    """`scope.option='value'` lines -> {option: value} for the kept options, the highest-precedence scope winning."""
    found: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        key, sep, quoted = line.partition("=")
        if not sep or "." not in key:
            continue
        scope, option = key.rsplit(".", 1)
        if option not in KEPT_OPTIONS:
            continue
        rank = RANK.get(scope, 0)
        if option not in found or rank >= found[option][0]:
            found[option] = (rank, str(ast.literal_eval(quoted)))
    return {option: value for option, (_, value) in found.items()}


def local_path(location: str) -> Path | None:
    """The local file or folder a pip location names (a path or a file:// URL), or None for a remote one."""
    if "://" in location:
        url = urlparse(location)
        return Path(unquote(url.path)) if url.scheme == "file" else None
    return Path(location)


def mounts(options: dict[str, str]) -> tuple[dict[str, str], list[Path]]:
    """The options to keep (local ones only where they exist) and the paths to mount for them."""
    kept: dict[str, str] = {}
    volumes: list[Path] = []
    for option, value in options.items():
        if option not in PATH_OPTIONS | LOCATION_OPTIONS:
            kept[option] = value
            continue
        usable = []
        for location in value.split():
            path = local_path(location)
            if path is None:
                usable.append(location)
            elif path.exists():
                usable.append(location)
                # a file:// index's pages link to wheels beside it (../../files/...): its parent is mounted
                volumes.append(path.parent if option.endswith("index-url") else path)
        if usable:
            kept[option] = " ".join(usable)
    return kept, list(dict.fromkeys(volumes))


def torch_folder(options: dict[str, str]) -> Path | None:
    """The first find-links folder holding the torch wheel the model-builder pins."""
    for location in options.get("find-links", "").split():
        path = local_path(location)
        if path is not None and path.is_dir() and any(path.glob(TORCH_WHEEL)):
            return path
    return None


def render(options: dict[str, str]) -> str:
    config = configparser.ConfigParser()
    config["global"] = options
    text = io.StringIO()
    config.write(text)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", type=Path, required=True)
    parser.add_argument("--volumes", type=Path, required=True)
    parser.add_argument("--torch-find-links", type=Path, required=True)
    args = parser.parse_args(argv)
    options, volumes = mounts(parse(sys.stdin.read()))
    args.conf.write_text(render(options) if options else "")
    args.volumes.write_text("".join(f"{path}\n" for path in volumes))
    torch = torch_folder(options)
    args.torch_find_links.write_text(str(torch) if torch else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
