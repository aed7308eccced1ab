"""aic.core.malloc: the thresholds are set on glibc, the user's own glibc settings win, and buffers of a job's
size are then reused instead of being mapped and faulted in again (page faults counted in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from aic.core import malloc

CHURN = """
import json, resource, sys
import numpy as np
from aic.core import malloc
tuned = malloc.tune() if sys.argv[1] == "tune" else False
def request():  # what building a Triton request does: a batch, its bytes, a copy of those
    batch = np.stack([np.full((224, 224, 3), i, dtype=np.uint8) for i in range(10)])
    return bytes(bytearray(batch.tobytes()))
request()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    request()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50
print(json.dumps({"tuned": tuned, "faults": faults}))
"""


def churn(mode: str, **env: str) -> dict[str, float]:
    environ = {k: v for k, v in os.environ.items() if k not in malloc.USER_SETTINGS} | env
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, env=environ, check=True)
    return dict(json.loads(done.stdout))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_buffers_of_a_batch_are_reused_not_faulted_in_again() -> None:
    tuned = churn("tune")
    assert tuned["tuned"] is True
    # four buffers of ~1.5 MB per request: ~1,500 page faults if each is mapped afresh
    assert tuned["faults"] < 50, tuned


def test_the_users_own_glibc_settings_win() -> None:
    for name in malloc.USER_SETTINGS:
        assert malloc.tune({name: "1"}) is False
    assert churn("tune", MALLOC_TRIM_THRESHOLD_="0")["tuned"] is False
