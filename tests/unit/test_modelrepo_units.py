"""The model repository's pure parts: the default model's description, rendering its config, model.json."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from aic.core import modelspec
from aic.core.modelspec import ResizeRule
from aic.local.modelbuild import MAX_QUEUE_DELAY_US, ModelBuildError, default_spec, render_config
from aic.modelrepo import layout
from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]
from tritonclient.grpc import model_config_pb2 as pb


def parse(text: str) -> pb.ModelConfig:
    return text_format.Parse(text, pb.ModelConfig())


def test_onnxruntime_backend_is_preferred_when_the_server_has_it() -> None:
    config = parse(render_config(default_spec(), ("python", "onnxruntime")))
    assert config.backend == "onnxruntime"
    assert config.platform == "onnxruntime_onnx"
    assert config.default_model_filename == "model.onnx"
    assert "onnx_model_filename" not in config.parameters


def test_python_backend_runs_the_onnx_file_when_only_python_is_available() -> None:
    config = parse(render_config(default_spec(), ("python",)))
    assert config.backend == "python"
    assert config.platform == ""
    assert config.parameters["onnx_model_filename"].string_value == "model.onnx"


@pytest.mark.parametrize("backends", [("python",), ("onnxruntime",)])
def test_config_carries_tensors_batching_and_cpu_instances_from_the_spec(backends: tuple[str, ...]) -> None:
    spec = default_spec()
    config = parse(render_config(spec, backends))
    assert config.name == "efficientnet-lite0"
    assert config.max_batch_size == spec.max_batch_size == 32
    (model_input,) = config.input
    (model_output,) = config.output
    assert (model_input.name, list(model_input.dims)) == ("input", [224, 224, 3])
    assert (model_output.name, list(model_output.dims)) == ("logits", [1000])
    assert (model_input.data_type, model_output.data_type) == (pb.TYPE_UINT8, pb.TYPE_FP32)
    assert config.dynamic_batching.max_queue_delay_microseconds == MAX_QUEUE_DELAY_US
    (group,) = config.instance_group
    assert (group.kind, group.count) == (pb.ModelInstanceGroup.KIND_CPU, 1)


def test_render_is_a_pure_function_of_its_arguments() -> None:
    assert render_config(default_spec(), ("python",)) == render_config(default_spec(), ("python",))


@pytest.mark.parametrize("backends", [(), ("tensorrt",), ("pytorch", "tensorflow")])
def test_a_triton_without_an_onnx_capable_backend_is_refused(backends: tuple[str, ...]) -> None:
    with pytest.raises(ModelBuildError, match="onnxruntime"):
        render_config(default_spec(), backends)


def test_non_onnx_models_are_refused() -> None:
    spec = msgspec.structs.replace(default_spec(), format="tensorrt")
    with pytest.raises(ModelBuildError, match="ONNX"):
        render_config(spec, ("onnxruntime",))


def test_unknown_tensor_type_is_refused() -> None:
    spec = default_spec()
    spec = msgspec.structs.replace(spec, input=msgspec.structs.replace(spec.input, data_type="FP128"))
    with pytest.raises(ModelBuildError, match="FP128"):
        render_config(spec, ("python",))


def test_default_spec_describes_imagenet_preprocessing() -> None:
    prep = default_spec().preprocessing
    assert (prep.height, prep.width, prep.resize, prep.interpolation) == (
        224,
        224,
        ResizeRule.STRETCH,
        "bilinear",
    )
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)
    # uint8 pixels go over the wire; scale, mean and std say what the model itself does with them
    assert (prep.layout, prep.dtype, prep.scale) == ("NHWC", "UINT8", 255.0)


def test_spec_round_trips_through_model_json_with_labels_merged_from_labels_txt(tmp_path: Path) -> None:
    spec = msgspec.structs.replace(default_spec(), sha256="ab" * 32)
    document = msgspec.to_builtins(spec)
    document.pop("labels")
    document["build"] = {"fingerprint": "x"}  # extra keys written by the builder must not break decoding
    (tmp_path / layout.MODEL_SPEC_FILE).write_bytes(msgspec.json.encode(document))
    (tmp_path / layout.LABELS_FILE).write_text("tench\ngoldfish\n")
    loaded = layout.load(tmp_path)
    assert loaded == msgspec.structs.replace(spec, labels=("tench", "goldfish"))
    assert modelspec.decode(modelspec.encode(loaded)) == loaded
    assert loaded.label(1) == "goldfish" and loaded.label(7) == "class_7"
