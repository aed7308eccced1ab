"""One model directory of a Triton repository, and finding the models of a repository.

```
<repository>/<name>/config.pbtxt      rendered by ``render``
<repository>/<name>/model.json        the ModelSpec (without labels) and the writer's fingerprint
<repository>/<name>/labels.txt        class names, one per line, by class id
<repository>/<name>/<version>/model.onnx | model.plan  (+ model.py, the python-backend runner)
```
Names starting with a dot (staging, trash, the operator's artifact cache) are never models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec

from aic.core import modelspec
from aic.core.modelspec import ModelSpec

CONFIG_FILE: Final = "config.pbtxt"
MODEL_SPEC_FILE: Final = "model.json"
LABELS_FILE: Final = "labels.txt"
ONNX_FILE: Final = "model.onnx"
PLAN_FILE: Final = "model.plan"
RUNNER_FILE: Final = "model.py"
RUNNER_SOURCE: Final = Path(__file__).resolve().parents[1] / "triton" / "backend.py"
"""The python-backend runner (``aic.triton.backend``) that serves an ONNX file on a Triton without onnxruntime:
copied into a model's version directory as ``model.py``."""


def load(model_dir: Path) -> ModelSpec:
    """Read ``model.json`` and ``labels.txt`` of one model directory."""
    spec = modelspec.decode((model_dir / MODEL_SPEC_FILE).read_bytes())
    labels_path = model_dir / LABELS_FILE
    if labels_path.exists() and not spec.labels:
        labels = tuple(line for line in labels_path.read_text().splitlines() if line)
        spec = msgspec.structs.replace(spec, labels=labels)
    return spec


def discover(repository: Path) -> list[ModelSpec]:
    """Every model in a repository that carries a ``model.json``, sorted by name."""
    if not repository.is_dir():
        return []
    return [
        load(d) for d in sorted(repository.iterdir()) if not d.name.startswith(".") and (d / MODEL_SPEC_FILE).is_file()
    ]
