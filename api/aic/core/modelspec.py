"""The model description: what a Triton model expects and how images become its input.

A `ModelSpec` is data that travels with the model (``model.json`` next to ``config.pbtxt``, see
``aic.modelrepo``) and is published to Redis for dispatchers, so preprocessing is never a constant in
dispatcher code.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class InvalidSpec(ValueError):
    """A model cannot be served as described; retrying will not help until the description changes."""


class ResizeRule(StrEnum):
    """How an image of any shape becomes ``height`` x ``width``."""

    STRETCH = "stretch"  # resize straight to the target size, aspect ratio not kept
    SHORTER_SIDE_CENTER_CROP = "shorter-side-then-center-crop"


class Layout(StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class Preprocessing(msgspec.Struct, frozen=True, kw_only=True):
    """Turns decoded RGB pixels into the model's input tensor."""

    height: int
    width: int
    resize: ResizeRule = ResizeRule.STRETCH
    interpolation: str = "bilinear"  # a PIL.Image.Resampling name, lower case
    crop_fraction: float = 0.875  # only for shorter-side-then-center-crop
    scale: float = 255.0  # pixel / scale before mean/std
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: Layout = Layout.NCHW
    # Triton data type of the input tensor. FP32 / FP16: the dispatcher applies scale, mean and std.
    # UINT8: the dispatcher sends the 0-255 pixels as they are and the model normalises (scale, mean and std
    # then only document what the model does).
    dtype: str = "FP32"


class TensorSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    data_type: str
    dims: tuple[int, ...]  # without the batch dimension


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One servable model version: a Triton model plus everything needed to call it."""

    name: str  # the Triton model name
    version: int = 1
    aliases: tuple[str, ...] = ()  # what clients pass as model_version
    format: str = "onnx"
    input: TensorSpec
    output: TensorSpec
    max_batch_size: int = 32
    preprocessing: Preprocessing
    labels: tuple[str, ...] = ()  # class names by class id
    sha256: str = ""  # of the model artifact

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else f"class_{class_id}"


def encode(spec: ModelSpec) -> bytes:
    return msgspec.json.encode(spec)


def decode(data: bytes | str) -> ModelSpec:
    return msgspec.json.decode(data, type=ModelSpec)
