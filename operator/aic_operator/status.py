"""The status a ModelVersion reports: phase, conditions (Ready, Loaded, Failed), replicas, message.

Pure functions from what the reconcile saw to the ``status`` stanza of the custom resource.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from aic.core.timeutil import now_iso

from aic_operator.triton import ReplicaState


@dataclasses.dataclass(frozen=True)
class Status:
    phase: str  # Ready | Degraded | Loading | Failed
    reason: str
    message: str
    triton_model: str
    observed_generation: int | None
    ready_replicas: int = 0
    replicas: int = 0
    device: str = ""

    def as_dict(self, previous: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The CR's ``status`` (camelCase); a condition keeps its ``lastTransitionTime`` until it flips."""
        since = {c.get("type"): (c.get("status"), c.get("lastTransitionTime")) for c in previous}
        now = now_iso()
        ready = self.phase == "Ready"
        loaded = self.ready_replicas > 0
        failing = self.phase == "Failed"
        conditions = [
            _condition("Ready", ready, self.reason if not ready else "AllReplicasLoaded", self.message, now, since),
            _condition("Loaded", loaded, "Loaded" if loaded else self.reason, self._loaded_message(), now, since),
            _condition("Failed", failing, self.reason if failing else "", self.message if failing else "", now, since),
        ]
        body: dict[str, Any] = {
            "phase": self.phase,
            "message": self.message,
            "tritonModel": self.triton_model,
            "readyReplicas": self.ready_replicas,
            "replicas": self.replicas,
            "device": self.device or None,
            "conditions": conditions,
        }
        if self.observed_generation is not None:
            body["observedGeneration"] = self.observed_generation
        return body

    def _loaded_message(self) -> str:
        return f"loaded on {self.ready_replicas} of {self.replicas} Triton replicas"


def _condition(
    kind: str, true: bool, reason: str, message: str, now: str, since: Mapping[Any, tuple[Any, Any]]
) -> dict[str, Any]:
    state = "True" if true else "False"
    before, when = since.get(kind, (None, None))
    return {
        "type": kind,
        "status": state,
        "reason": reason or kind,
        "message": message,
        "lastTransitionTime": when if before == state and when else now,
    }


def failed(name: str, reason: str, message: str, generation: int | None) -> Status:
    return Status("Failed", reason, message, name, generation)


def from_replicas(name: str, replicas: Sequence[ReplicaState], generation: int | None, device: str) -> Status:
    """Ready when every replica serves the model; Degraded when some do; else Loading or Failed."""
    ready = sum(1 for r in replicas if r.ready)
    total = len(replicas)
    problems = "; ".join(f"{r.url}: {r.error}" for r in replicas if not r.ready and r.error)
    if total == 0:
        return Status("Loading", "NoReplicas", "no Triton replica known yet", name, generation, 0, 0, device)
    if ready == total:
        message = f"served by {total} Triton replica{'s' if total > 1 else ''} on {device}"
        return Status("Ready", "AllReplicasLoaded", message, name, generation, ready, total, device)
    refused = any(r.reachable and not r.ready for r in replicas)
    if ready > 0:
        return Status("Degraded", "SomeReplicasNotLoaded", problems, name, generation, ready, total, device)
    if refused:
        return Status("Failed", "LoadFailed", problems, name, generation, 0, total, device)
    return Status("Loading", "TritonUnavailable", problems, name, generation, 0, total, device)
