"""Progressive rollout of a ModelVersion: its share of traffic step by step while the evidence says it answers as
well as the version it replaces; promoted after the last step, rolled back at the first failing analysis.

The user's spec is never rewritten: the state lives in ``status.rollout`` (and, for ``aic models status``, in
``models:rollouts``), and the effective weights only in the published routes, as overrides
(``RouteStore.override``), which no reconcile of any version clobbers (``lua/routes.lua``). At step ``s`` % with
previous versions serving with weights ``w_i`` (sum ``W``), the canary publishes ``W * s`` and each previous
version ``w_i * (100 - s)``: exactly ``s`` % of the alias. Each tick of a running rollout re-publishes what its
state implies; a finished one publishes once, as it finishes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aic.core.timeutil import now_iso
from aic.store.evidence import Agreement, EvidenceStore, Outcomes
from aic.store.routes import RouteStore

from aic_operator.spec import ModelVersionSpec, RolloutSpec

PROGRESSING, PAUSED, PROMOTED, ROLLED_BACK = "Progressing", "Paused", "Promoted", "RolledBack"
TERMINAL = (PROMOTED, ROLLED_BACK)


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: str  # pass | wait | fail
    reason: str
    analysis: dict[str, Any]


def analyse(outcomes: Outcomes, agreement: Agreement, rollout: RolloutSpec, at: str) -> Verdict:
    """Whether a step's evidence lets the rollout go on: enough jobs, few errors, fast enough, agreeing."""
    p95 = outcomes.p95_ms
    analysis = {
        "jobs": outcomes.jobs,
        "errorRate": round(outcomes.error_rate, 4),
        "p95Ms": None if p95 is None or math.isinf(p95) else p95,
        "agreement": None if agreement.agreement is None else round(agreement.agreement, 4),
        "compared": agreement.compared,
        "at": at,
    }
    if outcomes.jobs + outcomes.errors < rollout.min_jobs:
        return Verdict("wait", f"{outcomes.jobs + outcomes.errors} of {rollout.min_jobs} jobs so far", analysis)
    if outcomes.error_rate > rollout.max_error_rate:
        why = f"error rate {outcomes.error_rate:.4f} above maxErrorRate {rollout.max_error_rate}"
        return Verdict("fail", why, analysis)
    limit = rollout.max_latency_p95_ms
    if limit is not None and p95 is not None and p95 > limit:
        return Verdict("fail", f"p95 latency {p95} ms above maxLatencyP95Ms {limit}", analysis)
    wanted = rollout.min_agreement
    if wanted is not None:
        if agreement.agreement is None:
            return Verdict("wait", "no mirrored job compared yet", analysis)
        if agreement.agreement < wanted:
            why = f"agreement {agreement.agreement:.4f} with the previous version below minAgreement {wanted}"
            return Verdict("fail", why, analysis)
    return Verdict("pass", "analysis passed", analysis)


def weights(step: int, base: Mapping[str, int]) -> tuple[int, dict[str, int]]:
    """(canary's weight, each previous version's) for ``step`` % of the traffic."""
    total = sum(base.values())
    return total * step, {name: weight * (100 - step) for name, weight in base.items()}


def _started_s(state: Mapping[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(state.get("stepStartedAt"))).timestamp()
    except ValueError:
        return time.time()


class Rollouts:
    """Moves rollouts on: one ``tick`` per ModelVersion with a rollout, from its status to its next status."""

    def __init__(self, routes: RouteStore, evidence: EvidenceStore) -> None:
        self.routes = routes
        self.evidence = evidence

    async def tick(
        self, name: str, spec: ModelVersionSpec, state: Mapping[str, Any] | None, ready: bool
    ) -> tuple[dict[str, Any] | None, list[Event]]:
        """The next ``status.rollout`` (None: nothing to do yet) and the events to post; publishes its weights."""
        rollout = spec.rollout
        if rollout is None:
            return None, []
        if state is None:
            if not ready:
                return None, []  # the canary is not loaded yet: no traffic, no clock
            new, events = await self._start(name, spec, rollout)
        else:
            new, events = await self._advance(name, rollout, dict(state))
        # a finished rollout publishes once, when it finishes: its versions may take part in a later one
        if events or new.get("phase") in (PROGRESSING, PAUSED):
            await self._publish(name, rollout, new)
        return new, events

    async def _start(
        self, name: str, spec: ModelVersionSpec, rollout: RolloutSpec
    ) -> tuple[dict[str, Any], list[Event]]:
        alias = spec.aliases[0]
        route = (await self.routes.routes([alias]))[alias]
        rolling = await self.evidence.rollouts()
        # the versions serving the alias now (a shadow, a rolled-back or replaced version publishes 0), at the
        # weights they serve with; not another version whose own rollout is under way
        base = {
            other: weight
            for other, weight in route.weights.items()
            if other != name and weight > 0 and rolling.get(other, {}).get("phase") not in (PROGRESSING, PAUSED)
        }
        now = now_iso()
        state: dict[str, Any] = {"alias": alias, "previous": sorted(base), "baseWeights": base, "stepStartedAt": now}
        if not base:
            state.update(
                phase=PROMOTED,
                step=len(rollout.steps),
                effectiveWeight=100,
                message=f"no other version serves {alias!r}: promoted at once",
            )
            return state, [Event("Normal", "RolloutPromoted", state["message"])]
        reference = max(sorted(base), key=lambda other: base[other])
        state.update(phase=PROGRESSING, step=1, effectiveWeight=rollout.steps[0], reference=reference)
        state["message"] = (
            f"step 1 of {len(rollout.steps)}: {rollout.steps[0]} % of {alias!r}, beside {', '.join(sorted(base))}"
        )
        if rollout.paused:
            state.update(phase=PAUSED, message="paused before its first step")
        return state, [Event("Normal", "RolloutStarted", state["message"])]

    async def _advance(
        self, name: str, rollout: RolloutSpec, state: dict[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        phase = state.get("phase")
        if phase in TERMINAL:
            return state, []
        if rollout.paused:
            if phase == PAUSED:
                return state, []
            state.update(phase=PAUSED, message=f"paused at step {state.get('step')}")
            return state, [Event("Normal", "RolloutPaused", state["message"])]
        if phase == PAUSED:  # resumed: the step's clock starts again
            state.update(phase=PROGRESSING, stepStartedAt=now_iso(), message=f"resumed at step {state.get('step')}")
            return state, [Event("Normal", "RolloutResumed", state["message"])]
        previous = [str(other) for other in state.get("previous") or ()]
        if previous and not [other for other in previous if await self.routes.spec(other) is not None]:
            state.update(phase=PROMOTED, effectiveWeight=100, message="the versions it replaced are gone: promoted")
            return state, [Event("Normal", "RolloutPromoted", state["message"])]
        started = _started_s(state)
        if time.time() - started < rollout.interval_s:
            return state, []
        alias, reference = str(state["alias"]), str(state.get("reference", ""))
        outcomes = await self.evidence.outcomes(alias, name, started)
        agreement = await self.evidence.agreement(alias, name, reference, started) if reference else Agreement()
        verdict = analyse(outcomes, agreement, rollout, now_iso())
        state["lastAnalysis"] = verdict.analysis
        step = int(state.get("step", 1))
        if verdict.outcome == "wait":
            state["message"] = f"step {step}: waiting: {verdict.reason}"
            return state, []
        if verdict.outcome == "fail":
            state.update(phase=ROLLED_BACK, effectiveWeight=0, message=f"rolled back at step {step}: {verdict.reason}")
            return state, [Event("Warning", "RolloutRolledBack", state["message"])]
        if step >= len(rollout.steps):
            state.update(phase=PROMOTED, effectiveWeight=100, message=f"promoted after {step} steps")
            return state, [Event("Normal", "RolloutPromoted", state["message"])]
        step += 1
        share = rollout.steps[step - 1]
        state.update(step=step, effectiveWeight=share, stepStartedAt=now_iso())
        state["message"] = f"step {step} of {len(rollout.steps)}: {share} % of {alias!r}"
        return state, [Event("Normal", "RolloutStep", state["message"])]

    async def _publish(self, name: str, rollout: RolloutSpec, state: Mapping[str, Any]) -> None:
        """The weights and the mirror comparison ``state`` implies (idempotent)."""
        base = {str(k): int(v) for k, v in (state.get("baseWeights") or {}).items()}
        phase = state.get("phase")
        if phase == PROMOTED:
            await self.routes.override(name, -1)  # its requested weight
            for other in base:
                await self.routes.override(other, 0)
        elif phase == ROLLED_BACK:
            await self.routes.override(name, 0)
            for other in base:
                await self.routes.override(other, None)
        else:
            mine, theirs = weights(int(state.get("effectiveWeight", 0)), base)
            await self.routes.override(name, mine)
            for other, weight in theirs.items():
                await self.routes.override(other, weight)
        mirroring = phase in (PROGRESSING, PAUSED) and state.get("reference") and rollout.mirror_percent > 0
        rule = {
            "mode": "mirror",
            "percent": rollout.mirror_percent,
            "aliases": [state.get("alias")],
            "reference": state.get("reference"),
        }
        await self.evidence.set_comparison(name, rule if mirroring else None)
        await self.evidence.set_rollout(name, state)

    async def stop(self, name: str, state: Mapping[str, Any] | None) -> None:
        """The spec no longer asks for a rollout: every version gets its requested weight back."""
        for other in (state or {}).get("previous") or ():
            await self.routes.override(str(other), None)
        await self.routes.override(name, None)
        await self.evidence.set_comparison(name, None)
        await self.evidence.set_rollout(name, None)
