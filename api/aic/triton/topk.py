"""From logits to predictions: softmax over the classes, then the k most likely, named by the model's labels."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from aic.core.modelspec import ModelSpec
from aic.core.schemas import Prediction

TOP_K = 5


def top_k(logits: NDArray[np.float32], spec: ModelSpec, k: int = TOP_K) -> list[list[Prediction]]:
    """Softmax over classes, then the k most likely classes of each row, most likely first."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    k = min(k, probs.shape[1])
    best = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    rows: list[list[Prediction]] = []
    for row, candidates in zip(probs, best, strict=True):
        ordered = candidates[np.argsort(-row[candidates], kind="stable")]
        rows.append(
            [Prediction(class_name=spec.label(int(c)), confidence=float(row[c]), class_id=int(c)) for c in ordered]
        )
    return rows
