"""The dispatcher's side of Triton: one aio gRPC client per process, batched calls, softmax and top-k."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc.aio as grpcclient
from numpy.typing import NDArray
from tritonclient.utils import InferenceServerException

from aic.modelspec import ModelSpec
from aic.schemas import Prediction

TOP_K = 5

# gRPC codes after which the same request may succeed later: the server is away (an outage: wait for it) or
# was slow or overloaded this time (retry a bounded number of times).
_OUTAGE = {"StatusCode.UNAVAILABLE"}
_TRANSIENT = {"StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.ABORTED"}


class InferenceError(Exception):
    """A Triton call failed. ``retryable``: trying again later can help; ``outage``: Triton is unreachable."""

    def __init__(self, message: str, *, retryable: bool, outage: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable or outage
        self.outage = outage


def classify_error(exc: BaseException) -> InferenceError:
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = f"Triton: {exc.message()} ({status})"
        return InferenceError(message, retryable=status in _TRANSIENT, outage=status in _OUTAGE)
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return InferenceError(f"Triton unreachable: {exc}", retryable=True, outage=True)
    return InferenceError(f"Triton call failed: {type(exc).__name__}: {exc}", retryable=False)


class TritonRunner:
    """Sends preprocessed batches to Triton. Created once per process and closed on shutdown."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.client = grpcclient.InferenceServerClient(url=url)
        self.timeout_s = timeout_s

    async def infer(self, spec: ModelSpec, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Logits for a batch (first axis) of input tensors."""
        tensor = grpcclient.InferInput(spec.input.name, list(batch.shape), spec.input.data_type)
        tensor.set_data_from_numpy(batch)
        wanted = grpcclient.InferRequestedOutput(spec.output.name)
        try:
            response = await self.client.infer(
                spec.name,
                [tensor],
                model_version=str(spec.version),
                outputs=[wanted],
                client_timeout=self.timeout_s,
            )
        except Exception as exc:
            raise classify_error(exc) from exc
        logits = response.as_numpy(spec.output.name)
        if logits is None or logits.shape[0] != batch.shape[0]:
            raise InferenceError(f"Triton returned no usable '{spec.output.name}' output", retryable=False)
        return np.asarray(logits, dtype=np.float32)

    async def ready(self, spec: ModelSpec) -> bool:
        try:
            return bool(await self.client.is_model_ready(spec.name, str(spec.version)))
        except Exception:
            return False

    async def close(self) -> None:
        await self.client.close()


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
