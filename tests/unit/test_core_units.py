"""Pure units: key names, settings parsing, softmax/top-k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from aic.core import settings
from aic.core.modelspec import ModelSpec, Preprocessing, TensorSpec
from aic.core.settings import ApiSettings, DispatcherSettings, TritonSettings
from aic.store import keys
from aic.triton.topk import top_k


def test_job_keys_follow_the_seed_and_share_a_cluster_hash_tag() -> None:
    assert keys.LEGACY.job_status("abc") == "job:{abc}:status"
    assert keys.LEGACY.job_result("abc") == "job:{abc}:result"
    assert keys.LEGACY.job_image("abc") == "job:{abc}:image"
    assert keys.LEGACY.queue("low") == "queue:low"


def test_a_finished_job_keeps_its_status_as_long_as_its_result() -> None:
    assert keys.JOB_RESULT_TTL_S == 86400
    assert keys.JOB_STATUS_TTL_S == 3600
    assert keys.JOB_IMAGE_TTL_S >= keys.JOB_STATUS_TTL_S


def test_settings_read_seed_names_from_the_environment() -> None:
    api = settings.load(
        ApiSettings,
        {"API_PORT": "9001", "MAX_FILE_SIZE": "123", "ALLOWED_HOSTS": "a.example, b.example"},
    )
    assert (api.api_port, api.max_file_size) == (9001, 123)
    assert api.allowed_hosts == ("a.example", "b.example")
    triton = settings.load(TritonSettings, {"MODEL_REPOSITORY": "/srv/models", "TRITON_BACKENDS": "onnxruntime"})
    assert triton.model_repository == Path("/srv/models")
    assert triton.triton_backends == ("onnxruntime",)
    assert settings.load(DispatcherSettings, {}).lease_ms <= 30_000


def test_bad_numbers_in_settings_are_reported_by_name() -> None:
    try:
        settings.load(ApiSettings, {"API_PORT": "eighty"})
    except settings.SettingsError as exc:
        assert "API_PORT" in str(exc)
    else:
        raise AssertionError("expected SettingsError")


def spec_with(labels: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        name="m",
        input=TensorSpec(name="input", data_type="FP32", dims=(3, 4, 4)),
        output=TensorSpec(name="logits", data_type="FP32", dims=(len(labels),)),
        preprocessing=Preprocessing(height=4, width=4),
        labels=labels,
    )


def test_top_k_is_softmax_ordered_and_named() -> None:
    labels = tuple(f"c{i}" for i in range(8))
    logits = np.array([[0, 5, 1, 4, 2, 3, -1, -2], [9, 0, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    rows = top_k(logits, spec_with(labels))
    assert [p.class_id for p in rows[0]] == [1, 3, 5, 4, 2]
    assert [p.class_name for p in rows[0]][:2] == ["c1", "c3"]
    expected = np.exp(5) / np.exp(logits[0].astype(np.float64)).sum()
    assert abs(rows[0][0].confidence - expected) < 1e-6
    assert rows[1][0].class_id == 0 and rows[1][0].confidence > 0.99
    assert all(a.confidence >= b.confidence for a, b in zip(rows[0], rows[0][1:], strict=False))
