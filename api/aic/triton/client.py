"""The dispatcher's side of Triton: one aio gRPC client per process, batched calls, and checking that a model
Triton serves is the model its spec describes."""

from __future__ import annotations

from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from numpy.typing import NDArray
from tritonclient.utils import InferenceServerException

from aic.core import telemetry
from aic.core.modelspec import ModelSpec, TensorSpec

# gRPC codes after which the same request may succeed later: the server is away (an outage: wait for it) or
# was slow or overloaded this time (retry a bounded number of times).
_OUTAGE = {"StatusCode.UNAVAILABLE"}
_TRANSIENT = {"StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.ABORTED"}
_tracer = telemetry.tracer("aic.triton")
_SERVICE = "inference.GRPCInferenceService"
CHECK_TIMEOUT_S = 5.0
"""A model check waits no longer than this: a hung Triton must not stall the heartbeat that reports it."""


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
        host, _, port = url.rpartition(":")
        self._server: dict[str, str | int] = {
            "server.address": host or url,
            **({"server.port": int(port)} if port.isdigit() else {}),
        }

    async def infer(self, spec: ModelSpec, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Logits for a batch (first axis) of input tensors."""
        tensor = grpcclient.InferInput(spec.input.name, list(batch.shape), spec.input.data_type)
        tensor.set_data_from_numpy(batch)
        wanted = grpcclient.InferRequestedOutput(spec.output.name)
        if not telemetry.enabled():
            response = await self._infer(spec, tensor, wanted, None)
        else:  # an RPC client span; its traceparent goes in the gRPC metadata, so Triton's own spans join the trace
            attributes: dict[str, str | int] = {
                "rpc.system": "grpc",
                "rpc.service": _SERVICE,
                "rpc.method": "ModelInfer",
                **self._server,
            }
            attributes.update({"aic.model": spec.name, "aic.batch_size": int(batch.shape[0])})
            kind = telemetry.SpanKind.CLIENT
            with _tracer.start_as_current_span(f"{_SERVICE}/ModelInfer", kind=kind, attributes=attributes):
                response = await self._infer(spec, tensor, wanted, telemetry.carrier())
        logits = response.as_numpy(spec.output.name)
        if logits is None or logits.shape[0] != batch.shape[0]:
            raise InferenceError(f"Triton returned no usable '{spec.output.name}' output", retryable=False)
        return np.asarray(logits, dtype=np.float32)

    async def _infer(
        self,
        spec: ModelSpec,
        tensor: grpcclient.InferInput,
        wanted: grpcclient.InferRequestedOutput,
        headers: dict[str, str] | None,
    ) -> grpcclient.InferResult:
        try:
            return await self.client.infer(
                spec.name,
                [tensor],
                model_version=str(spec.version),
                outputs=[wanted],
                client_timeout=self.timeout_s,
                headers=headers,
            )
        except Exception as exc:
            raise classify_error(exc) from exc

    async def check(self, spec: ModelSpec) -> str | None:
        """Why Triton cannot serve ``spec`` as described (not loaded, or other input/output tensors), or None.

        A dispatcher checks every published model when it starts and whenever a spec changes, and reports the
        problems as not-ready in its heartbeat: a spec that does not match its model fails every job."""
        version = str(spec.version)
        timeout_s = min(self.timeout_s, CHECK_TIMEOUT_S)
        try:
            if not await self.client.is_model_ready(spec.name, version, client_timeout=timeout_s):
                return f"{spec.name}: not loaded in Triton"
            metadata = await self.client.get_model_metadata(spec.name, version, as_json=True, client_timeout=timeout_s)
        except Exception as exc:
            return f"{spec.name}: {classify_error(exc)}"
        batched = spec.max_batch_size > 0
        problems = [
            *_tensor_problems("input", spec.input, metadata.get("inputs") or [], batched),
            *_tensor_problems("output", spec.output, metadata.get("outputs") or [], batched),
        ]
        return f"{spec.name}: {'; '.join(problems)}" if problems else None

    async def server_problem(self) -> str | None:
        """Why Triton is not ready to serve (unreachable, starting, stopping), or None."""
        try:
            if await self.client.is_server_ready(client_timeout=min(self.timeout_s, CHECK_TIMEOUT_S)):
                return None
            return "not ready"
        except Exception as exc:
            return str(classify_error(exc))

    async def close(self) -> None:
        await self.client.close()


def _tensor_problems(kind: str, wanted: TensorSpec, served: list[dict[str, Any]], batched: bool) -> list[str]:
    """How the tensor Triton serves under ``wanted.name`` differs from ``wanted`` (-1 in a spec matches any size)."""
    found = next((t for t in served if t.get("name") == wanted.name), None)
    if found is None:
        names = ", ".join(repr(t.get("name")) for t in served) or "none"
        return [f"no {kind} named {wanted.name!r} (the model has {names})"]
    problems = []
    if found.get("datatype") != wanted.data_type:
        problems.append(f"{kind} {wanted.name!r} is {found.get('datatype')}, the spec says {wanted.data_type}")
    shape = [int(d) for d in found.get("shape") or []]
    dims = shape[1:] if batched else shape
    fits = len(dims) == len(wanted.dims) and all(
        w in (-1, d) or d == -1 for w, d in zip(wanted.dims, dims, strict=True)
    )
    if not fits:
        problems.append(f"{kind} {wanted.name!r} has dims {dims}, the spec says {list(wanted.dims)}")
    return problems
