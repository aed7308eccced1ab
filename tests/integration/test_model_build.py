"""The default model's build into a Triton repository (the 'build' extra: torch exports the ONNX file)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import pytest
import yaml
from aic.core import settings as aic_settings
from aic.local.modelbuild import build_default_model, default_spec, ensure_default_model
from aic.modelrepo import layout
from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]
from tritonclient.grpc import model_config_pb2 as pb

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def parse(text: str) -> pb.ModelConfig:
    return text_format.Parse(text, pb.ModelConfig())


# uses the cached project repository, like the triton_server fixture


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
    loaded = layout.load(built_model)
    assert loaded.sha256 == sha256(built_model / "1" / "model.onnx")
    assert msgspec.structs.replace(loaded, labels=(), sha256="") == default_spec()
    assert len(loaded.labels) == 1000
    assert "Egyptian" in loaded.label(285) and loaded.label(967) == "espresso"
    assert "labels" not in json.loads((built_model / "model.json").read_bytes())


def test_a_current_build_is_kept_and_returns_quickly(built_model: Path) -> None:
    onnx_mtime = (built_model / "1" / "model.onnx").stat().st_mtime_ns
    assert ensure_default_model(built_model.parent, ("python",)) == built_model
    assert build_default_model(built_model.parent, ("python",)) == built_model
    assert (built_model / "1" / "model.onnx").stat().st_mtime_ns == onnx_mtime  # nothing was rebuilt


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


def test_the_registered_default_build_is_the_sample_modelversion(built_model: Path) -> None:
    """What `aic models register` makes of the build (the chart's default-model Job) serves the same model as
    operator/samples/efficientnet-lite0.yaml, with the checksums of the files it points at."""
    from aic_operator.register import manifest, resource_name
    from aic_operator.render import desired_state
    from aic_operator.spec import parse

    spec = layout.load(built_model)
    registered = manifest(spec, built_model, "pvc://models")
    sample = yaml.safe_load((ROOT / "operator" / "samples" / "efficientnet-lite0.yaml").read_text())
    assert registered["metadata"]["name"] == resource_name(spec) == sample["metadata"]["name"]
    assert registered["spec"]["source"] == {
        **sample["spec"]["source"],
        "sha256": sha256(built_model / "1" / "model.onnx"),
    }
    assert registered["spec"]["labels"] == {**sample["spec"]["labels"], "sha256": sha256(built_model / "labels.txt")}
    for backends, gpu in ((("python",), False), (("onnxruntime", "tensorrt"), True)):
        ours = desired_state("m", parse(registered["spec"]), backends, gpu)
        theirs = desired_state("m", parse({**sample["spec"], "source": registered["spec"]["source"]}), backends, gpu)
        assert ours == theirs
