"""The default model: its description and Triton config (pure), then the build itself (needs torch)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import msgspec
import pytest
from aic import modelspec
from aic import settings as aic_settings
from aic.modelbuild import (
    MAX_QUEUE_DELAY_US,
    ModelBuildError,
    build_default_model,
    default_spec,
    ensure_default_model,
    render_config,
)
from aic.modelspec import ResizeRule
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
    (tmp_path / modelspec.MODEL_SPEC_FILE).write_bytes(msgspec.json.encode(document))
    (tmp_path / modelspec.LABELS_FILE).write_text("tench\ngoldfish\n")
    loaded = modelspec.load(tmp_path)
    assert loaded == msgspec.structs.replace(spec, labels=("tench", "goldfish"))
    assert modelspec.decode(modelspec.encode(loaded)) == loaded
    assert loaded.label(1) == "goldfish" and loaded.label(7) == "class_7"


# ---- the build (the 'build' extra); uses the cached project repository, like the triton_server fixture ----


@pytest.fixture(scope="module")
def built_model() -> Path:
    repository = aic_settings.load(aic_settings.TritonSettings).model_repository
    return ensure_default_model(repository, ("python",))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_writes_the_triton_repository_layout(built_model: Path) -> None:
    assert built_model.name == "efficientnet-lite0"
    # Triton's python stub may leave a __pycache__ next to model.py once it has loaded it.
    files = sorted(
        str(p.relative_to(built_model)) for p in built_model.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    assert files == ["1/model.onnx", "1/model.py", "config.pbtxt", "labels.txt", "model.json"]
    assert parse((built_model / "config.pbtxt").read_text()).backend == "python"


def test_built_spec_matches_the_default_and_records_the_onnx_checksum(built_model: Path) -> None:
    loaded = modelspec.load(built_model)
    assert loaded.sha256 == sha256(built_model / "1" / "model.onnx")
    assert msgspec.structs.replace(loaded, labels=(), sha256="") == default_spec()
    assert len(loaded.labels) == 1000
    assert "Egyptian" in loaded.label(285) and loaded.label(967) == "espresso"
    assert "labels" not in json.loads((built_model / "model.json").read_bytes())


def test_a_current_build_is_kept_and_returns_quickly(built_model: Path) -> None:
    onnx_mtime = (built_model / "1" / "model.onnx").stat().st_mtime_ns
    started = time.monotonic()
    assert ensure_default_model(built_model.parent, ("python",)) == built_model
    assert build_default_model(built_model.parent, ("python",)) == built_model
    assert time.monotonic() - started < 2.0
    assert (built_model / "1" / "model.onnx").stat().st_mtime_ns == onnx_mtime


def test_rebuilding_gives_a_byte_identical_onnx_file(built_model: Path, tmp_path: Path) -> None:
    rebuilt = build_default_model(tmp_path, ("python",), force=True)
    assert sha256(rebuilt / "1" / "model.onnx") == sha256(built_model / "1" / "model.onnx")
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["efficientnet-lite0"]  # no staging left


def test_a_different_backend_set_rebuilds_with_the_matching_config(built_model: Path, tmp_path: Path) -> None:
    python_dir = build_default_model(tmp_path, ("python",))
    onnxruntime_dir = build_default_model(tmp_path, ("onnxruntime",))
    assert python_dir == onnxruntime_dir
    assert parse((onnxruntime_dir / "config.pbtxt").read_text()).backend == "onnxruntime"
    assert not (onnxruntime_dir / "1" / "model.py").exists()
