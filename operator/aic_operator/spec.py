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


Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]


class Shadow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """This share of its aliases' jobs also runs on this version, compared, never answered with."""

    percent: Percent = 100


class Traffic(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    weight: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 100
    shadow: Shadow | None = None


DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str) -> float:
    """``"10m"`` -> 600.0 (units ms, s, m, h; none: seconds)."""
    match = re.match(DURATION_PATTERN, text)
    if not match:
        raise InvalidSpec(f"invalid duration {text!r}: a number with ms, s, m or h")
    unit = match.group(2) or "s"
    return float(text.removesuffix(unit) if match.group(2) else text) * _UNIT_S[unit]


class RolloutSpec(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """A progressive rollout: the share of the first alias's traffic, step by step, while each step's analysis
    passes (``aic_operator.rollout``)."""

    steps: Annotated[
        tuple[Annotated[int, msgspec.Meta(ge=1, le=100)], ...], msgspec.Meta(min_length=1, max_length=20)
    ] = (
        5,
        25,
        50,
        100,
    )
    interval: Annotated[str, msgspec.Meta(pattern=DURATION_PATTERN)] = "10m"
    min_jobs: Annotated[int, msgspec.Meta(ge=0)] = 200
    max_error_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.01
    max_latency_p95_ms: Annotated[float, msgspec.Meta(gt=0)] | None = None
    min_agreement: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    mirror_percent: Percent = 100
    paused: bool = False

    @property
    def interval_s(self) -> float:
        return duration_s(self.interval)


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
    rollout: RolloutSpec | None = None


def parse(spec: Any) -> ModelVersionSpec:
    """Validate a ModelVersion ``spec`` mapping; ``InvalidSpec`` names the first bad field."""
    try:
        parsed = msgspec.convert(spec, type=ModelVersionSpec, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidSpec(f"invalid spec: {exc}") from None
    if parsed.format is Format.TENSORRT and parsed.fallback is None and parsed.runtime.device is Device.CPU:
        raise InvalidSpec("invalid spec: TensorRT runs only on GPU; device cpu needs an ONNX `fallback` source")
    _check_rollout(parsed)
    return parsed


def _check_rollout(parsed: ModelVersionSpec) -> None:
    rollout = parsed.rollout
    if rollout is None:
        return
    if parsed.traffic.shadow is not None:
        raise InvalidSpec("invalid spec: a version either shadows (`traffic.shadow`) or rolls out (`rollout`)")
    if list(rollout.steps) != sorted(set(rollout.steps)):
        raise InvalidSpec(f"invalid spec: rollout.steps must increase, got {list(rollout.steps)}")
    if rollout.interval_s < 1:
        raise InvalidSpec(f"invalid spec: rollout.interval is at least 1s, got {rollout.interval!r}")
    if rollout.min_agreement is not None and rollout.mirror_percent == 0:
        raise InvalidSpec("invalid spec: rollout.minAgreement needs mirrored jobs (rollout.mirrorPercent > 0)")


def check_name(name: str) -> str:
    """The Triton model name is the ModelVersion's name: a DNS-1123 label keeps it a safe directory name."""
    if len(name) > 63 or not re.match(NAME_PATTERN, name):
        raise InvalidSpec(f"invalid name {name!r}: lower-case letters, digits and '-', at most 63 characters")
    return name
