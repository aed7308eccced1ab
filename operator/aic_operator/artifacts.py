"""Artifacts: fetch a model or labels file by URI, verify its sha256, keep it in a content-addressed cache.

Sources: ``file://``, ``http(s)://`` and ``pvc://CLAIM/PATH`` (a claim mounted under ``PVC_MOUNT_ROOT``).
``s3://`` is refused with a clear message (not supported yet: use a presigned https URL). Files are
written under a temporary name and renamed once verified, so no reader ever sees half of one; with mode 0644
(``writer.FILE_MODE``, not ``mkstemp``'s 0600), as they are hard-linked into model directories Triton reads as
another user. Blocking I/O: callers run these functions in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from aic.modelrepo import writer

CACHE_DIR = ".artifacts"
"""Inside the model repository; the leading dot keeps Triton and ``aic.modelrepo.layout.discover`` away."""
_CHUNK = 1 << 20


class ArtifactError(Exception):
    """An artifact cannot be had. ``permanent``: only a spec change can help (bad URI, wrong checksum)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def local_path(uri: str, pvc_root: Path, claims: Mapping[str, Path] | None = None) -> Path | None:
    """The file a ``file://`` or ``pvc://`` URI names; None for remote URIs. A claim is mounted at
    ``pvc_root/CLAIM`` unless ``claims`` names its folder."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "pvc":
        claim, path = parsed.netloc, urllib.parse.unquote(parsed.path).lstrip("/")
        if not claim or not path:
            raise ArtifactError(f"{uri}: expected pvc://CLAIM/PATH", permanent=True)
        root = ((claims or {}).get(claim) or pvc_root / claim).resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root):  # "pvc://claim/../other" must not leave the claim
            raise ArtifactError(f"{uri}: the path leaves the claim", permanent=True)
        return target
    return None


def fetch(
    uri: str,
    sha256: str,
    cache: Path,
    pvc_root: Path,
    timeout_s: float,
    *,
    claims: Mapping[str, Path] | None = None,
    max_bytes: int | None = None,
) -> Path:
    """A verified local copy of ``uri`` in ``cache`` (named by its checksum), fetched only if missing.

    An empty ``sha256`` (allowed for labels) is not verified and the file is fetched every time. A file longer
    than ``max_bytes`` is refused (permanently) as soon as the copy passes the limit.
    """
    writer.ensure_dir(cache)
    if sha256 and (cache / sha256).is_file():
        return cache / sha256
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "s3":
        raise ArtifactError(f"{uri}: s3:// is not supported yet; use a presigned https URL or pvc://", permanent=True)
    fd, partial_name = tempfile.mkstemp(prefix=".partial-", dir=cache)
    partial = Path(partial_name)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(fd, writer.FILE_MODE)  # mkstemp makes 0600: Triton could not read the model linked to it
            actual = _copy(uri, out, local_path(uri, pvc_root, claims), timeout_s, max_bytes)
        if sha256 and actual != sha256:
            raise ArtifactError(f"{uri}: sha256 is {actual}, the spec says {sha256}", permanent=True)
        target = cache / (sha256 or f"unverified-{actual}")
        os.replace(partial, target)
        return target
    finally:
        partial.unlink(missing_ok=True)


def _copy(uri: str, out: IO[bytes], path: Path | None, timeout_s: float, max_bytes: int | None) -> str:
    digest = hashlib.sha256()
    copied = 0
    try:
        with contextlib.ExitStack() as stack:
            if path is not None:
                source: IO[bytes] = stack.enter_context(path.open("rb"))
            elif urllib.parse.urlsplit(uri).scheme in ("http", "https"):
                source = stack.enter_context(urllib.request.urlopen(uri, timeout=timeout_s))  # noqa: S310 - scheme checked
            else:
                raise ArtifactError(f"{uri}: unsupported scheme", permanent=True)
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                copied += len(chunk)
                if max_bytes is not None and copied > max_bytes:
                    raise ArtifactError(f"{uri}: larger than the limit of {max_bytes} bytes", permanent=True)
                digest.update(chunk)
                out.write(chunk)
    except FileNotFoundError:
        # A volume being mounted or a file still being copied shows up later: worth retrying.
        raise ArtifactError(f"{uri}: no such file", permanent=False) from None
    except urllib.error.HTTPError as exc:
        raise ArtifactError(f"{uri}: HTTP {exc.code} {exc.reason}", permanent=400 <= exc.code < 500) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ArtifactError(f"{uri}: {exc}", permanent=False) from None
    return digest.hexdigest()
