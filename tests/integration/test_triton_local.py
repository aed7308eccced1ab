"""The wheel's real tritonserver, started by LocalTriton, serving the default model via the python backend."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from aic.core import modelspec
from aic.core.modelspec import Preprocessing
from aic.core.settings import TritonSettings
from aic.local.triton import LocalTriton, TritonStartError, on_free_ports, server_command
from aic.modelrepo import layout
from numpy.typing import NDArray
from PIL import Image
from skimage import data as skdata

pytestmark = pytest.mark.integration


def preprocess(pixels: NDArray[np.uint8], prep: Preprocessing) -> NDArray[np.uint8]:
    """The spec's rule, written out independently of the dispatcher's code: uint8 NHWC, the model normalises."""
    assert prep.resize == modelspec.ResizeRule.STRETCH
    assert (prep.layout, prep.dtype) == (modelspec.Layout.NHWC, "UINT8")
    image = Image.fromarray(pixels).convert("RGB")
    image = image.resize((prep.width, prep.height), Image.Resampling[prep.interpolation.upper()])
    return np.ascontiguousarray(image, dtype=np.uint8)


def infer(server: LocalTriton, batch: NDArray[np.uint8]) -> NDArray[np.float32]:
    spec = layout.load(server.repository / "efficientnet-lite0")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        tensor = grpcclient.InferInput(spec.input.name, list(batch.shape), spec.input.data_type)
        tensor.set_data_from_numpy(batch)
        result = client.infer(spec.name, [tensor], outputs=[grpcclient.InferRequestedOutput(spec.output.name)])
        logits: NDArray[np.float32] = result.as_numpy(spec.output.name)
        return logits
    finally:
        client.close()


@pytest.fixture(scope="module")
def images(triton_server: LocalTriton) -> dict[str, NDArray[np.uint8]]:
    prep = layout.load(triton_server.repository / "efficientnet-lite0").preprocessing
    return {"chelsea": preprocess(skdata.chelsea(), prep), "coffee": preprocess(skdata.coffee(), prep)}


def test_server_is_ready_with_the_default_model(triton_server: LocalTriton) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        assert client.is_server_ready()
        assert client.is_model_ready("efficientnet-lite0")
        metadata = client.get_model_metadata("efficientnet-lite0")
        assert [i.name for i in metadata.inputs] == ["input"] and [o.name for o in metadata.outputs] == ["logits"]
    finally:
        client.close()


@pytest.mark.parametrize(("name", "class_id"), [("chelsea", 285), ("coffee", 967)])
def test_reference_images_get_their_imagenet_class(
    triton_server: LocalTriton, images: dict[str, NDArray[np.uint8]], name: str, class_id: int
) -> None:
    logits = infer(triton_server, images[name][None])
    assert logits.shape == (1, 1000)
    assert int(logits[0].argmax()) == class_id


def test_a_batch_gives_one_row_per_image_equal_to_single_runs(
    triton_server: LocalTriton, images: dict[str, NDArray[np.uint8]]
) -> None:
    logits = infer(triton_server, np.stack([images["chelsea"], images["coffee"]]))
    assert logits.shape == (2, 1000)
    assert [int(i) for i in logits.argmax(axis=1)] == [285, 967]
    np.testing.assert_allclose(logits[0], infer(triton_server, images["chelsea"][None])[0], atol=1e-4)


def test_a_full_batch_of_32_is_served(triton_server: LocalTriton, images: dict[str, NDArray[np.uint8]]) -> None:
    batch = np.stack([images["coffee"]] * 32)
    assert [int(i) for i in infer(triton_server, batch).argmax(axis=1)] == [967] * 32


def tritonserver_pids_for(port: int) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"grpc-port={port}"], capture_output=True, text=True)
    return found.stdout.split()


def stub_pids_for(shm_prefix_port: int) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"aic_{shm_prefix_port}_"], capture_output=True, text=True)
    return found.stdout.split()


def test_stop_leaves_no_server_or_stub_behind(triton_server: LocalTriton, tmp_path: Path) -> None:
    own = on_free_ports(triton_server.settings)
    grpc_port = own.triton_grpc_port
    server = LocalTriton(own, log_path=tmp_path / "tritonserver.log")
    with server:
        assert tritonserver_pids_for(grpc_port) and stub_pids_for(grpc_port)
    assert server.process is None
    assert tritonserver_pids_for(grpc_port) == [] and stub_pids_for(grpc_port) == []


def test_a_model_that_cannot_load_fails_startup_with_the_log(triton_server: LocalTriton, tmp_path: Path) -> None:
    settings = on_free_ports(triton_server.settings, model_repository=tmp_path / "empty")
    settings.model_repository.mkdir()
    server = LocalTriton(settings, load_models=["missing-model"], log_path=tmp_path / "tritonserver.log")
    with pytest.raises(TritonStartError, match="missing-model"), server:
        pass
    assert server.process is None


def test_server_command_loads_every_model_in_the_repository_on_the_given_ports(
    triton_server: LocalTriton,
) -> None:
    settings = TritonSettings(
        model_repository=triton_server.repository,
        triton_http_port=1,
        triton_grpc_port=2,
        triton_metrics_port=3,
    )
    argv, env = server_command(settings)
    assert argv[0].endswith("tritonserver/bin/tritonserver")
    assert "--load-model=efficientnet-lite0" in argv and "--model-control-mode=explicit" in argv
    assert {"--http-port=1", "--grpc-port=2", "--metrics-port=3"} <= set(argv)
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]
