"""Pure rendering: a ModelVersion spec in, the Triton model it becomes out (its ``ModelSpec``, ``config.pbtxt``
text, which artifact to place and whether the python runner goes with it).

The config itself is rendered by ``aic.modelrepo.render``, which the default model's build uses too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import msgspec
from aic.core.modelspec import InvalidSpec, Layout, ModelSpec, Preprocessing, TensorSpec
from aic.modelrepo.layout import ONNX_FILE, PLAN_FILE
from aic.modelrepo.render import Placement, needs_runner, render_pbtxt
from aic.modelrepo.writer import ModelFiles

from aic_operator.spec import Device, Format, ModelVersionSpec, PreprocessingSpec, Source


@dataclasses.dataclass(frozen=True)
class DesiredState:
    """One Triton model as it must be on disk and in Triton."""

    model: ModelSpec  # what dispatchers need (labels are added once fetched)
    artifact: Source  # the file to place: the primary source, or the ONNX fallback
    artifact_file: str  # its name inside the version directory
    runner: bool  # copy the python-backend ONNX runner next to it
    config_pbtxt: str
    device: str  # "gpu" or "cpu", for the status

    def files(self, artifact: Path, labels: tuple[str, ...] = ()) -> ModelFiles:
        """The model directory this becomes once its artifact is at ``artifact`` and its labels are known."""
        return ModelFiles(
            spec=msgspec.structs.replace(self.model, labels=labels),
            config_pbtxt=self.config_pbtxt,
            artifact=artifact,
            artifact_file=self.artifact_file,
            runner=self.runner,
        )

    @property
    def fingerprint(self) -> str:
        """Changes whenever what Triton or a dispatcher would read changes (labels are added by the caller)."""
        return self.files(Path()).fingerprint()


def desired_state(name: str, spec: ModelVersionSpec, backends: Sequence[str], has_gpu: bool) -> DesiredState:
    """What ModelVersion ``name`` becomes on a Triton with ``backends`` (and GPUs when ``has_gpu``).

    ``device: auto`` takes the GPU where the target has one and a backend that uses it, else the CPU;
    a TensorRT model that cannot run there is replaced by its declared ONNX ``fallback``.
    """
    artifact, fmt = spec.source, spec.format
    if fmt is Format.TENSORRT and not _tensorrt_possible(spec.runtime.device, backends, has_gpu):
        if spec.fallback is None:
            raise InvalidSpec(
                f"TensorRT needs a GPU and the tensorrt backend (target: backends {list(backends)}, "
                f"GPU {'yes' if has_gpu else 'no'}); declare an ONNX `fallback` source to run elsewhere"
            )
        artifact, fmt = spec.fallback, Format.ONNX
    gpu = _use_gpu(spec.runtime.device, fmt, backends, has_gpu)
    model = _model_spec(name, spec, fmt, artifact)
    placement = Placement(gpu, spec.runtime.instances, spec.runtime.max_queue_delay_microseconds)
    return DesiredState(
        model=model,
        artifact=artifact,
        artifact_file=PLAN_FILE if fmt is Format.TENSORRT else ONNX_FILE,
        runner=needs_runner(model, backends),
        config_pbtxt=render_pbtxt(model, backends, placement),
        device="gpu" if gpu else "cpu",
    )


def preprocessing(pre: PreprocessingSpec) -> Preprocessing:
    """The dispatcher's ``Preprocessing`` of a ModelVersion's: every field carried by name (``size`` is
    height and width), so a field the model side does not know fails here instead of being dropped."""
    fields = msgspec.structs.asdict(pre)
    height, width = fields.pop("size")
    return Preprocessing(height=height, width=width, **fields)


def _tensorrt_possible(device: Device, backends: Sequence[str], has_gpu: bool) -> bool:
    return device is not Device.CPU and has_gpu and "tensorrt" in backends


def _use_gpu(device: Device, fmt: Format, backends: Sequence[str], has_gpu: bool) -> bool:
    if device is Device.GPU:
        if not has_gpu:
            raise InvalidSpec("device gpu was asked for, but the target Triton has no GPU (TRITON_HAS_GPU)")
        return True
    if device is Device.CPU:
        return False
    gpu_backend = "tensorrt" if fmt is Format.TENSORRT else "onnxruntime"
    return has_gpu and gpu_backend in backends


def _model_spec(name: str, spec: ModelVersionSpec, fmt: Format, artifact: Source) -> ModelSpec:
    pre = spec.preprocessing
    height, width = pre.size
    input_dims = spec.tensors.input.dims or ((3, height, width) if pre.layout is Layout.NCHW else (height, width, 3))
    return ModelSpec(
        name=name,
        version=1,
        aliases=tuple(spec.aliases),
        format=str(fmt),
        input=TensorSpec(name=spec.tensors.input.name, data_type=pre.dtype, dims=tuple(input_dims)),
        output=TensorSpec(name=spec.tensors.output.name, data_type="FP32", dims=spec.tensors.output.dims or (-1,)),
        max_batch_size=spec.runtime.max_batch_size,
        preprocessing=preprocessing(pre),
        sha256=artifact.sha256,
    )
