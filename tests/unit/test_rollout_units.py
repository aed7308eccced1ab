"""Pure pieces of shadows and rollouts: the comparison of two answers, the job share, the histogram's p95, the
step weights, the analysis verdicts and the rollout spec's checks."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from aic.core.modelspec import InvalidSpec
from aic.core.schemas import Prediction
from aic.dispatch.versions import Rule, compare, selected
from aic.store.evidence import Agreement, Outcomes, Tally, latency_slot
from aic_operator.rollout import analyse, weights
from aic_operator.spec import RolloutSpec, duration_s, parse

CRD = Path(__file__).resolve().parents[2] / "charts" / "async-image-classifier" / "crds" / "modelversion.yaml"


def answer(*classes: tuple[int, str, float]) -> list[Prediction]:
    return [Prediction(class_id=c, class_name=n, confidence=p) for c, n, p in classes]


def test_same_answers_agree_fully() -> None:
    a = answer((285, "Egyptian cat", 0.8), (281, "tabby", 0.1), (282, "tiger cat", 0.05))
    assert compare(a, a) == (True, 1.0, 0.0)


def test_a_shifted_label_disagrees_though_the_class_id_matches() -> None:
    ours = answer((285, "Persian cat", 0.8), (281, "tabby", 0.1))
    theirs = answer((285, "Egyptian cat", 0.7), (281, "tabby", 0.2))
    same, overlap, delta = compare(ours, theirs)
    assert (same, overlap) == (False, 0.5) and delta == pytest.approx(0.1)


def test_the_share_of_jobs_is_decided_by_job_id_and_matches_the_percent() -> None:
    ids = [f"job-{i}" for i in range(20000)]
    chosen = sum(selected(i, 10) for i in ids)
    assert 1700 < chosen < 2300
    assert all(selected(i, 100) for i in ids[:100]) and not any(selected(i, 0) for i in ids[:100])
    assert [selected(i, 37) for i in ids[:50]] == [selected(i, 37) for i in ids[:50]]


def test_a_shadow_runs_beside_the_serving_version_and_a_mirror_beside_the_canary_only() -> None:
    shadow = Rule("v2", "shadow", 50, frozenset({"latest"}))
    assert shadow.extra_run("latest", "v1") == ("v2", "v2", "v1")
    assert shadow.extra_run("latest", "v2") is None and shadow.extra_run("other", "v1") is None
    mirror = Rule("v2", "mirror", 100, frozenset({"latest"}), reference="v1")
    assert mirror.extra_run("latest", "v2") == ("v1", "v2", "v1")
    assert mirror.extra_run("latest", "v1") is None


def test_p95_is_the_upper_bound_of_the_bucket_holding_it() -> None:
    outcomes = Outcomes()
    tally = Tally()
    for i in range(100):
        tally.outcome("a", "m", 0.0, 0.030 if i < 94 else 0.400)
    for fields in tally.counts.values():
        outcomes.add({k.encode(): str(v).encode() for k, v in fields.items()})
    assert outcomes.jobs == 100 and outcomes.p95_ms == 500.0
    assert latency_slot(0.004) == 0 and latency_slot(99.0) == 11


def test_step_weights_give_the_canary_exactly_its_share() -> None:
    canary, previous = weights(5, {"v1": 100, "v0": 300})
    assert canary / (canary + sum(previous.values())) == 0.05
    assert weights(100, {"v1": 100})[1] == {"v1": 0}


def verdict(jobs: int, errors: int = 0, agreed: int | None = None, **rollout: object) -> str:
    outcomes = Outcomes(jobs=jobs, errors=errors)
    outcomes.latency[3] = jobs
    agreement = Agreement() if agreed is None else Agreement(compared=jobs, top1=agreed)
    spec = RolloutSpec(min_jobs=10, min_agreement=0.9, **rollout)  # type: ignore[arg-type]
    return analyse(outcomes, agreement, spec, "now").outcome


def test_the_analysis_waits_for_jobs_then_passes_or_fails_on_each_threshold() -> None:
    assert verdict(5, agreed=5) == "wait"
    assert verdict(20, agreed=None) == "wait"
    assert verdict(20, agreed=20) == "pass"
    assert verdict(20, agreed=10) == "fail"
    assert verdict(20, errors=5, agreed=20) == "fail"
    assert verdict(20, agreed=20, max_latency_p95_ms=10.0) == "fail"  # bucket 3 is <= 50 ms


def test_a_rollout_spec_is_checked() -> None:
    base = {"aliases": ["latest"], "source": {"uri": "file:///m.onnx", "sha256": "0" * 64}}
    assert parse({**base, "rollout": {"steps": [10, 100], "interval": "2s"}}).rollout == RolloutSpec(
        steps=(10, 100), interval="2s"
    )
    assert duration_s("10m") == 600 and duration_s("1.5h") == 5400 and duration_s("250ms") == 0.25
    for bad in ({"steps": [50, 10]}, {"interval": "0.5s"}, {"minAgreement": 0.9, "mirrorPercent": 0}):
        with pytest.raises(InvalidSpec):
            parse({**base, "rollout": bad})
    with pytest.raises(InvalidSpec, match="either shadows"):
        parse({**base, "rollout": {}, "traffic": {"shadow": {"percent": 10}}})


def test_the_crd_takes_a_rollout_and_a_shadow_and_refuses_what_the_operator_refuses() -> None:
    crd = yaml.safe_load(CRD.read_text())
    (served,) = crd["spec"]["versions"]
    columns = {c["name"]: c["jsonPath"] for c in served["additionalPrinterColumns"]}
    assert columns["Effective"] == ".status.rollout.effectiveWeight" and columns["Rollout"] == ".status.rollout.phase"
    validator = jsonschema.Draft4Validator(served["schema"]["openAPIV3Schema"])
    base = {"aliases": ["latest"], "source": {"uri": "file:///m.onnx", "sha256": "0" * 64}}
    good = {**base, "rollout": {"steps": [5, 100], "interval": "90s", "minAgreement": 0.9}}
    assert validator.is_valid({"spec": good}) and parse(good).rollout is not None
    shadow = {**base, "traffic": {"shadow": {"percent": 10}}}
    assert validator.is_valid({"spec": shadow}) and parse(shadow).traffic.shadow is not None
    for bad in ({"steps": [0]}, {"interval": "soon"}, {"minAgreement": 2}):
        assert not validator.is_valid({"spec": {**base, "rollout": bad}})
        with pytest.raises(InvalidSpec):
            parse({**base, "rollout": bad})
