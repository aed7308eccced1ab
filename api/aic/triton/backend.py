"""Triton python-backend runner: serves an ONNX file with onnxruntime on a Triton without that backend.

`aic model build` copies this file to ``<model>/<version>/model.py``. It runs inside Triton's python
stub, so it imports nothing from ``aic``. Threads: ``AIC_ORT_INTRA_OP_THREADS`` (0 = onnxruntime decides);
``AIC_ORT_ALLOW_SPINNING`` (default 0: idle threads sleep instead of spinning, see initialize).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils

THREADS_ENV = "AIC_ORT_INTRA_OP_THREADS"
SPINNING_ENV = "AIC_ORT_ALLOW_SPINNING"
_ONNX_TYPES = {"TYPE_FP32": "tensor(float)", "TYPE_FP16": "tensor(float16)", "TYPE_UINT8": "tensor(uint8)"}


class TritonPythonModel:
    """One onnxruntime session per model instance; each ``execute`` runs all its requests as one batch."""

    session: Any
    input_name: str
    output_name: str

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        parameters = config.get("parameters", {})
        filename = parameters.get("onnx_model_filename", {}).get("string_value", "model.onnx")
        path = Path(args["model_repository"]) / args["model_version"] / filename
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get(THREADS_ENV, "0"))
        # Triton already overlaps requests; a second pool of inter-op threads only contends for cores.
        options.inter_op_num_threads = 1
        # Spinning threads burn whole cores between batches; on machines where Triton shares its CPUs with
        # decoding (and always between requests) that time is taken from useful work.
        options.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get(SPINNING_ENV, "0"))
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if self.input_name not in inputs or self.output_name not in outputs:
            raise pb_utils.TritonModelException(
                f"{path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
                f"config expects {self.input_name!r} -> {self.output_name!r}"
            )
        # As Triton's onnxruntime backend does: a config whose input type or shape is not the model's own
        # fails the load (the ModelVersion reports it) instead of every request at run time.
        declared = config["input"][0]
        wanted = _ONNX_TYPES.get(declared["data_type"], declared["data_type"])
        found = inputs[self.input_name]
        dims = [int(d) for d in declared["dims"]]
        model_dims = [d if isinstance(d, int) else -1 for d in found.shape[1:]]
        fits = len(model_dims) == len(dims) and all(m in (-1, d) for m, d in zip(model_dims, dims, strict=True))
        if found.type != wanted or not fits:
            raise pb_utils.TritonModelException(
                f"{path} takes {self.input_name!r} as {found.type} {found.shape}, but the config declares "
                f"{declared['data_type']} {dims} (check the ModelVersion's preprocessing layout and dtype)"
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Exactly one response per request, in order; a bad request fails alone, a failed run fails all."""
        responses: list[Any] = [None] * len(requests)
        batches: list[np.ndarray[Any, Any]] = []
        taken: list[int] = []
        for index, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            if tensor is None:
                responses[index] = _error(f"missing input {self.input_name!r}")
                continue
            # Triton has checked the data type against config.pbtxt, which declares the ONNX input's own type.
            batches.append(tensor.as_numpy())
            taken.append(index)
        if batches:
            try:
                (logits,) = self.session.run([self.output_name], {self.input_name: np.concatenate(batches)})
            except Exception as exc:  # any failure is reported per request; raising would fail the whole call
                for index in taken:
                    responses[index] = _error(f"inference failed: {exc}")
                return responses
            start = 0
            for index, batch in zip(taken, batches, strict=True):
                part = logits[start : start + len(batch)]
                start += len(batch)
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(self.output_name, np.ascontiguousarray(part))]
                )
        return responses

    def finalize(self) -> None:
        self.session = None


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
