"""``aic selftest``: one real classification through a running service, as ``helm test`` runs it.

Submits the bundled photo (scikit-image's "chelsea", 27 KB) with ``Prefer: wait`` and checks the top-1 class.
Exit 0 when it is the expected one, 1 when the service answered otherwise, 2 when it could not be reached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx

PHOTO = "selftest.jpg"
EXPECTED = "Egyptian cat"


@dataclass(frozen=True)
class Outcome:
    code: int
    report: dict[str, Any]


def run(url: str, api_key: str, *, expected: str = EXPECTED, wait_s: int = 60) -> Outcome:
    """Classify the bundled photo at ``url`` (the API prefix, e.g. ``http://api:8000/api/v1``)."""
    photo = resources.files(__package__).joinpath(PHOTO).read_bytes()
    try:
        answer = httpx.post(
            f"{url.rstrip('/')}/classify",
            files={"file": (PHOTO, photo, "image/jpeg")},
            headers={"X-API-Key": api_key, "Prefer": f"wait={wait_s}"},
            timeout=wait_s + 30,
        )
    except httpx.HTTPError as exc:
        return Outcome(2, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    body: dict[str, Any] = (
        answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    )
    predictions = (body.get("result") or {}).get("predictions") or []
    top = predictions[0]["class_name"] if predictions else None
    report = {"ok": top == expected, "status_code": answer.status_code, "status": body.get("status"), "top": top}
    if answer.status_code != 200:
        report["error"] = body
    return Outcome(0 if top == expected else 1, report)


def main(url: str, api_key: str, expected: str) -> int:
    outcome = run(url, api_key, expected=expected)
    print(json.dumps(outcome.report))
    return outcome.code
