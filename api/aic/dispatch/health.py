"""What a dispatcher's ``/livez`` and ``/readyz`` answer (on its METRICS_PORT, from the metrics server's thread).

Live: the event loop is not wedged. The loop stamps a pulse every ``PULSE_S``; a pulse older than ``stall_s``
means something blocks the loop (a synchronous call, a CPU-bound step), and only a restart helps. The probe
answers from another thread, so it can say so while the loop is stuck.

Ready: live, Redis answers a PING and Triton says it is ready; the loop checks both every ``PROBE_INTERVAL_S``
and the outcome counts only while fresh. The models' own problems (a spec Triton does not serve as published)
are the heartbeat's ``ready`` and ``/api/v1/health``'s business, not the probe's: a Pod restarted or taken out
for them would not fix them.

The loop writes whole values and the thread reads them: no lock is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

PULSE_S: Final = 1.0
"""How often the event loop stamps its pulse."""
PROBE_INTERVAL_S: Final = 2.0
"""How often the event loop checks Redis and Triton for ``/readyz``."""
PROBE_TIMEOUT_S: Final = 5.0
"""Longest wait for one check's answer."""


class Health:
    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._clock = clock
        self._pulse_at = clock()
        self._probed_at: float | None = None
        self._problems: Mapping[str, str] = {}

    def pulse(self) -> None:
        """The event loop is running (called on it)."""
        self._pulse_at = self._clock()

    def probed(self, problems: Mapping[str, str]) -> None:
        """What the loop's latest check found wrong, by dependency (``redis``, ``triton``); empty: nothing."""
        self._problems = dict(problems)
        self._probed_at = self._clock()

    def live(self) -> tuple[bool, dict[str, Any]]:
        stalled = self._clock() - self._pulse_at
        if stalled > self.stall_s:
            return False, {"loop": f"stalled for {stalled:.1f} s (the limit is {self.stall_s:g} s)"}
        return True, {"loop": "ok"}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        live, said = self.live()
        probed_at, problems = self._probed_at, self._problems
        if probed_at is None:
            problems = {"redis": "not checked yet", "triton": "not checked yet"}
        elif self._clock() - probed_at > self.stall_s + PROBE_INTERVAL_S + 2 * PROBE_TIMEOUT_S:
            problems = {name: "no recent check" for name in ("redis", "triton")}
        said.update({name: problems.get(name, "ok") for name in ("redis", "triton")})
        return live and not problems, said
