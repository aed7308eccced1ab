"""Pure parts of the dispatcher: its retry policy as data, batch quotas by priority, the weighted choice among a
canary's models, and telling a served model from the spec that describes it."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from aic.core.enums import Priority
from aic.core.modelspec import TensorSpec
from aic.core.settings import DispatcherSettings, load
from aic.dispatch.intake import quotas
from aic.dispatch.models import pick_weighted
from aic.dispatch.retry import triton_policy
from aic.triton.client import _tensor_problems


def test_triton_retries_are_data_read_from_settings() -> None:
    policy = triton_policy(DispatcherSettings())
    assert policy.schedule_s() == [1.0, 2.0, 4.0]  # seed section 6: 2^n seconds, MAX_RETRIES 3
    assert [policy.retries_left(n) for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert policy.nominal_delay_s(10) == 10.0  # an outage is tried again at the cap
    tuned = triton_policy(load(DispatcherSettings, {"MAX_RETRIES": "5", "TRITON_RETRY_BASE_S": "0.5"}))
    assert tuned.max_attempts == 6 and tuned.schedule_s()[:3] == [0.5, 1.0, 2.0]


def test_triton_retry_delays_carry_jitter_that_only_shortens_them() -> None:
    policy = triton_policy(DispatcherSettings())
    rng = random.Random(3)
    delays = [policy.delay_s(3, rng=rng) for _ in range(200)]
    assert all(3.2 <= d <= 4.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100


def test_an_outage_waited_out_for_hours_does_not_overflow_the_backoff() -> None:
    assert triton_policy(DispatcherSettings()).nominal_delay_s(5_000) == 10.0


def test_deliveries_and_retries_are_separate_settings() -> None:
    settings = load(DispatcherSettings, {"MAX_RETRIES": "1", "MAX_DELIVERIES": "7"})
    assert (settings.max_retries, settings.max_deliveries) == (1, 7)
    assert DispatcherSettings().max_deliveries == DispatcherSettings().max_retries + 1  # the old coupling's value


def test_every_priority_gets_a_place_in_every_batch() -> None:
    assert quotas(16) == {Priority.URGENT: 8, Priority.HIGH: 4, Priority.NORMAL: 2, Priority.LOW: 1}
    assert set(quotas(1).values()) == {1}


def test_smooth_weighted_round_robin_gives_each_model_its_weight_interleaved() -> None:
    credit: dict[str, int] = {}
    picks = [pick_weighted({"v1": 3, "v2": 1}, credit) for _ in range(8)]
    assert Counter(picks) == {"v1": 6, "v2": 2}
    assert picks[:4].count("v2") == 1  # interleaved, not a run of v1 then v2


def test_zero_weight_is_never_picked_and_all_zero_picks_nothing() -> None:
    credit: dict[str, int] = {}
    assert {pick_weighted({"v1": 1, "shadow": 0}, credit) for _ in range(5)} == {"v1"}
    assert pick_weighted({"v1": 0}, {}) is None


SERVED = [{"name": "input", "datatype": "UINT8", "shape": ["-1", "224", "224", "3"]}]


@pytest.mark.parametrize(
    ("wanted", "problem"),
    [
        (TensorSpec(name="input", data_type="UINT8", dims=(224, 224, 3)), None),
        (TensorSpec(name="input", data_type="UINT8", dims=(-1, -1, 3)), None),
        (TensorSpec(name="input", data_type="FP32", dims=(224, 224, 3)), "is UINT8, the spec says FP32"),
        (TensorSpec(name="input", data_type="UINT8", dims=(3, 224, 224)), "has dims [224, 224, 3]"),
        (TensorSpec(name="pixels", data_type="UINT8", dims=(224, 224, 3)), "no input named 'pixels'"),
    ],
)
def test_a_spec_is_checked_against_the_tensors_triton_serves(wanted: TensorSpec, problem: str | None) -> None:
    found = _tensor_problems("input", wanted, SERVED, batched=True)
    assert (found == []) if problem is None else (problem in " ".join(found)), found
