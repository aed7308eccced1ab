"""Artifacts fetched over HTTP from a real server: downloaded, verified against their sha256, 404 permanent."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aic_operator import artifacts
from aic_operator.artifacts import ArtifactError

pytestmark = pytest.mark.integration

SHA = "a" * 64


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_http_sources_are_downloaded_and_verified(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_root
    (root / "model.onnx").write_bytes(b"over http")
    digest = hashlib.sha256(b"over http").hexdigest()
    cached = artifacts.fetch(f"{base}/model.onnx", digest, tmp_path / "cache", tmp_path, 5)
    assert cached.read_bytes() == b"over http"
    with pytest.raises(ArtifactError, match="HTTP 404") as caught:
        artifacts.fetch(f"{base}/missing.onnx", SHA, tmp_path / "cache", tmp_path, 5)
    assert caught.value.permanent
