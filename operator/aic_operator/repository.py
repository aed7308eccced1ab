"""The model repository on disk: one directory per Triton model, replaced as a whole by a rename.

A model is staged in a dot-directory of the repository (same filesystem) and renamed into place, so
Triton, which reads the repository only when asked to load, sees the old model or the new one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from aic.modelbuild import CONFIG_FILE, RUNNER_FILE, RUNNER_TEMPLATE
from aic.modelspec import LABELS_FILE, MODEL_SPEC_FILE, ModelSpec

from aic_operator import artifacts
from aic_operator.render import DesiredState

FINGERPRINT_KEY = "operator_fingerprint"  # extra key in model.json; ModelSpec decoding ignores it


def fingerprint(desired: DesiredState, labels: tuple[str, ...]) -> str:
    runner = hashlib.sha256(RUNNER_TEMPLATE.read_bytes()).hexdigest() if desired.runner else ""
    return hashlib.sha256("\0".join((desired.fingerprint, runner, *labels)).encode()).hexdigest()


def current_fingerprint(model_dir: Path) -> str | None:
    try:
        document = json.loads((model_dir / MODEL_SPEC_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    value = document.get(FINGERPRINT_KEY) if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def write_model(repository: Path, desired: DesiredState, artifact: Path, labels: tuple[str, ...]) -> bool:
    """Make ``repository/<model>`` exactly ``desired``; False when it already was (nothing written)."""
    spec = desired.model
    target = repository / spec.name
    stamp = fingerprint(desired, labels)
    if current_fingerprint(target) == stamp:
        return False
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=repository))
    try:
        staged = stage / spec.name
        version_dir = staged / str(spec.version)
        artifacts.place(artifact, version_dir / desired.artifact_file)
        if desired.runner:
            shutil.copyfile(RUNNER_TEMPLATE, version_dir / RUNNER_FILE)
        (staged / CONFIG_FILE).write_text(desired.config_pbtxt)
        (staged / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels))
        (staged / MODEL_SPEC_FILE).write_bytes(_model_json(spec, stamp))
        if target.exists():
            target.rename(stage / ".previous")
        staged.rename(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return True


def remove_model(repository: Path, name: str) -> bool:
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


def _model_json(spec: ModelSpec, stamp: str) -> bytes:
    document: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(spec, labels=()))
    document[FINGERPRINT_KEY] = stamp
    return bytes(msgspec.json.format(msgspec.json.encode(document), indent=2)) + b"\n"
