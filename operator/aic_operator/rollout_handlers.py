"""The kopf timer that moves rollouts on (``aic_operator.rollout``): it reads the object's ``status.rollout``, the
evidence in Redis, and patches the next ``status.rollout``, a ``Rollout`` condition and an Event per step."""

from __future__ import annotations

from typing import Any

import kopf
from aic.core.modelspec import InvalidSpec
from aic.core.timeutil import now_iso

from aic_operator.config import GROUP, PLURAL, VERSION, load_config
from aic_operator.reconcile import Reconciler
from aic_operator.rollout import PROMOTED, Rollouts
from aic_operator.spec import parse

CONFIG = load_config()
CONDITION = "Rollout"


def overridden(body: kopf.Body) -> tuple[str, ...]:
    """The versions whose weights this one's rollout overrides (they get theirs back when it goes)."""
    state = body.status.get("rollout") or {}
    return tuple(str(name) for name in state.get("previous") or ())


def _wanted(**kwargs: Any) -> bool:
    return bool(kwargs["spec"].get("rollout") or kwargs["status"].get("rollout"))


@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.operator.rollout_tick_s, initial_delay=1.0, when=_wanted)
async def rollout(name: str, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    rollouts = Rollouts(reconciler.routes, reconciler.evidence)
    state = body.status.get("rollout")
    try:
        parsed = parse(dict(body.spec))
    except InvalidSpec:
        return  # the reconcile reports it
    if parsed.rollout is None:  # the spec dropped its rollout: weights as requested again
        await rollouts.stop(name, state)
        patch.status["rollout"] = None
        return
    ready = body.status.get("phase") in ("Ready", "Degraded")
    new, events = await rollouts.tick(name, parsed, dict(state) if state else None, ready)
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if new is None or new == state:
        return
    patch.status["rollout"] = new
    patch.status["conditions"] = _conditions(body.status.get("conditions") or [], new)


def _conditions(current: list[dict[str, Any]], state: dict[str, Any]) -> list[dict[str, Any]]:
    """The object's conditions with ``Rollout`` (True once promoted; reason the phase) set from ``state``."""
    flag = "True" if state.get("phase") == PROMOTED else "False"
    before = next((c for c in current if c.get("type") == CONDITION), {})
    changed = before.get("status") != flag or before.get("reason") != state.get("phase")
    condition = {
        "type": CONDITION,
        "status": flag,
        "reason": state.get("phase"),
        "message": state.get("message", ""),
        "lastTransitionTime": now_iso() if changed else before.get("lastTransitionTime", now_iso()),
    }
    return [c for c in current if c.get("type") != CONDITION] + [condition]
