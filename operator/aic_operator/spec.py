"""The ModelVersion spec as typed data: parsed and validated from the custom resource (or a YAML file).

Field names are the CRD's (camelCase); the CRD's openAPIV3Schema and these Structs say the same thing, and
``tests/test_render_modelversion.py`` checks the samples against both.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from aic.core.modelspec import InvalidSpec, Layout, ResizeRule

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
SHA256_PATTERN = r"^[a-f0-9]{64}$"
MAX_ALIASES = 32
"""Aliases one ModelVersion may carry (the CRD says the same): routes are rewritten per alias on every change."""


class Format(StrEnum):
    ONNX = "onnx"
    TENSORRT = "tensorrt"


class Device(StrEnum):
    AUTO = "auto"
    GPU = "gpu"
    CPU = "cpu"


class Source(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An artifact: where it is and the sha256 it must have."""

    uri: Annotated[str, msgspec.Meta(pattern=r"^(file|https?|pvc|s3)://.+")]
    sha256: Annotated[str, msgspec.Meta(pattern=SHA256_PATTERN)]


class LabelsSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Class names, one per line, by class id."""

    uri: Annotated[str, msgspec.Meta(pattern=r"^(file|https?|pvc|s3)://.+")]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^([a-f0-9]{64})?$")] = ""


Positive = Annotated[int, msgspec.Meta(ge=1)]
Alias = Annotated[str, msgspec.Meta(pattern=ALIAS_PATTERN)]


class PreprocessingSpec(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    size: Annotated[tuple[Positive, Positive], msgspec.Meta(description="[height, width]")] = (224, 224)
    resize: ResizeRule = ResizeRule.STRETCH
    interpolation: Annotated[str, msgspec.Meta(pattern="^(nearest|bilinear|bicubic|lanczos|box|hamming)$")] = "bilinear"
    crop_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.875
    scale: Annotated[float, msgspec.Meta(gt=0)] = 255.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: Layout = Layout.NCHW
    dtype: Annotated[str, msgspec.Meta(pattern="^(FP32|FP16|UINT8)$")] = "FP32"


class TensorRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    dims: tuple[int, ...] | None = None  # without the batch dimension; None: derived


class Tensors(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    input: TensorRef = TensorRef(name="input")
    output: TensorRef = TensorRef(name="logits")


class RuntimeSpec(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    device: Device = Device.AUTO
    instances: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    max_batch_size: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32
    max_queue_delay_microseconds: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 2000


class Traffic(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    weight: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 100


class ModelVersionSpec(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """What a ModelVersion asks for; see the CRD for each field's meaning."""

    aliases: Annotated[
        tuple[Annotated[str, msgspec.Meta(pattern=ALIAS_PATTERN)], ...],
        msgspec.Meta(min_length=1, max_length=MAX_ALIASES),
    ]
    source: Source
    format: Format = Format.ONNX
    fallback: Source | None = None  # an ONNX artifact for where the primary format cannot run
    labels: LabelsSource | None = None
    preprocessing: PreprocessingSpec = PreprocessingSpec()
    tensors: Tensors = Tensors()
    runtime: RuntimeSpec = RuntimeSpec()
    traffic: Traffic = Traffic()


def parse(spec: Any) -> ModelVersionSpec:
    """Validate a ModelVersion ``spec`` mapping; ``InvalidSpec`` names the first bad field."""
    try:
        parsed = msgspec.convert(spec, type=ModelVersionSpec, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidSpec(f"invalid spec: {exc}") from None
    if parsed.format is Format.TENSORRT and parsed.fallback is None and parsed.runtime.device is Device.CPU:
        raise InvalidSpec("invalid spec: TensorRT runs only on GPU; device cpu needs an ONNX `fallback` source")
    return parsed


def check_name(name: str) -> str:
    """The Triton model name is the ModelVersion's name: a DNS-1123 label keeps it a safe directory name."""
    if len(name) > 63 or not re.match(NAME_PATTERN, name):
        raise InvalidSpec(f"invalid name {name!r}: lower-case letters, digits and '-', at most 63 characters")
    return name
