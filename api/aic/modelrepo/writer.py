"""Writing the model repository: one directory per Triton model, replaced as a whole by a rename.

A model is staged in a dot-directory of the repository (same filesystem) and renamed into place, so Triton,
which reads the repository only when asked to load, sees the old model or the new one, never half of one.
``model.json`` records the caller's fingerprint of what it wrote, so an unchanged model is left alone.

Everything written is readable by other users: files 0644, directories 0755, set explicitly (``FILE_MODE``,
``DIR_MODE``). Triton reads the repository as another user than the one who writes it (in the chart the operator
and the default-model Job write a volume the Triton container reads, under an fsGroup they share), and neither
``tempfile`` (0600 files, 0700 directories, whatever the umask) nor a container's umask can be relied on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from aic.core.modelspec import ModelSpec
from aic.modelrepo.layout import CONFIG_FILE, LABELS_FILE, MODEL_SPEC_FILE, RUNNER_FILE, RUNNER_SOURCE

FINGERPRINT_KEY: Final = "fingerprint"
"""Extra key of ``model.json`` (ModelSpec decoding ignores it): identifies what was written."""
FILES_KEY: Final = "files"
"""Extra key of ``model.json``: the files of the model, relative to its directory."""
FILE_MODE: Final = 0o644
"""Every file of a model: Triton, another user, reads it (group-readable too, for the chart's fsGroup)."""
DIR_MODE: Final = 0o755
"""Every directory of the repository the writers create."""


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """Everything one model directory holds."""

    spec: ModelSpec
    """With its labels: they go to ``labels.txt``, the rest to ``model.json``."""
    config_pbtxt: str
    artifact: Path
    """The file to place in the version directory (hard-linked where possible, else copied)."""
    artifact_file: str
    """Its name there (``model.onnx``, ``model.plan``)."""
    runner: bool = False
    """Copy the python-backend ONNX runner next to it as ``model.py``."""
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """More keys for ``model.json`` (what the default model was built from, say)."""

    @property
    def relative_files(self) -> list[str]:
        version = str(self.spec.version)
        found = [f"{version}/{self.artifact_file}", CONFIG_FILE, LABELS_FILE, MODEL_SPEC_FILE]
        if self.runner:
            found.append(f"{version}/{RUNNER_FILE}")
        return sorted(found)

    def fingerprint(self) -> str:
        """Changes whenever anything Triton or a dispatcher would read changes; the artifact by its checksum."""
        runner = sha256_file(RUNNER_SOURCE) if self.runner else ""
        spec = msgspec.json.encode(self.spec)
        parts = (self.config_pbtxt, self.spec.sha256, self.artifact_file, runner, spec.decode())
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def is_current(model_dir: Path, fingerprint: str, *, verify_artifact: bool = False) -> bool:
    """Whether ``model_dir`` holds what ``fingerprint`` names, with all its files (and, with ``verify_artifact``,
    an artifact whose sha256 is the recorded one)."""
    try:
        recorded = json.loads((model_dir / MODEL_SPEC_FILE).read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get(FINGERPRINT_KEY) != fingerprint:
        return False
    files = recorded.get(FILES_KEY)
    if not isinstance(files, list) or not all((model_dir / str(f)).is_file() for f in files):
        return False
    if not all(_readable_by_others(model_dir / str(f)) for f in files):
        return False  # written by a version that left 0600 files: Triton, another user, cannot load them
    if verify_artifact:
        artifacts = [f for f in files if "/" in str(f) and not str(f).endswith(RUNNER_FILE)]
        return bool(artifacts) and all(sha256_file(model_dir / str(f)) == recorded.get("sha256") for f in artifacts)
    return True


def write(repository: Path, files: ModelFiles, fingerprint: str, *, force: bool = False) -> bool:
    """Make ``repository/<model>`` exactly ``files``; False when it already was (nothing written, unless
    ``force``)."""
    spec = files.spec
    target = repository / spec.name
    if not force and is_current(target, fingerprint):
        return False
    ensure_dir(repository)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=repository))  # 0700, but only its content is moved out
    try:
        staged = stage / spec.name
        version_dir = staged / str(spec.version)
        ensure_dir(version_dir)
        place(files.artifact, version_dir / files.artifact_file)
        if files.runner:
            write_file(version_dir / RUNNER_FILE, RUNNER_SOURCE.read_bytes())
        write_file(staged / CONFIG_FILE, files.config_pbtxt.encode())
        write_file(staged / LABELS_FILE, "".join(f"{label}\n" for label in spec.labels).encode())
        write_file(staged / MODEL_SPEC_FILE, _model_json(files, fingerprint))
        if target.exists():
            target.rename(stage / ".previous")
        staged.rename(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return True


def remove(repository: Path, name: str) -> bool:
    """Delete ``repository/<name>``: renamed away first, so Triton never reads a half-deleted model."""
    target = repository / name
    if not target.exists():
        return False
    trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=repository))
    try:
        target.rename(trash / name)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    return True


def place(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` with ``FILE_MODE``: a hard link where possible (no copy of a large model; the
    shared inode is made readable, so the cached source is too), else a copy."""
    ensure_dir(target.parent)
    try:
        os.link(source, target)
        _chmod(target, FILE_MODE)
    except OSError:  # another filesystem, or a source of another owner that we may not chmod
        target.unlink(missing_ok=True)
        shutil.copyfile(source, target)
        os.chmod(target, FILE_MODE)


def write_file(path: Path, data: bytes) -> None:
    """A new file holding ``data``, mode ``FILE_MODE`` whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away
        out.write(data)


def ensure_dir(path: Path) -> None:
    """``path`` and its missing parents, those created here with ``DIR_MODE`` whatever the umask (an existing
    directory, a mounted volume say, is left as it is)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:
        with contextlib.suppress(PermissionError):  # made meanwhile by another user: theirs to set
            _chmod(created, DIR_MODE)


def _chmod(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) != mode:  # no chmod (and no EPERM) where nothing changes
        os.chmod(path, mode)


def _readable_by_others(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _model_json(files: ModelFiles, fingerprint: str) -> bytes:
    document: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(files.spec, labels=()))
    document.pop("labels", None)  # labels.txt holds them; layout.load() merges
    document.update(files.extra)
    document[FINGERPRINT_KEY] = fingerprint
    document[FILES_KEY] = files.relative_files
    return bytes(msgspec.json.format(msgspec.json.encode(document), indent=2)) + b"\n"
