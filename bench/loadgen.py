"""Closed-loop load on the running service: N clients, each uploads a photo, waits for its result, repeats.

    python bench/loadgen.py --url http://127.0.0.1:8000/api/v1 --key KEY --photos DIR --clients 32

A job's latency runs from the start of its upload to the 200 of ``GET /result/{id}``. A client submits with
``Prefer: wait=60`` (the API holds the answer until the job ends), then fetches the result; where the API does
not honour it, the client polls the result (409 while pending) every ``--poll-ms``. Only jobs finished inside
the measurement window (after ``--warmup-s``) count. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

WAIT_S = 60
CAT = 285  # ImageNet "Egyptian cat": every chelsea upload, at every size, should come back as one


@dataclass
class Tally:
    window: tuple[float, float]
    latencies_s: list[float] = field(default_factory=list)
    failed: int = 0
    errors: int = 0
    requests: int = 0
    cats: int = 0
    cats_right: int = 0

    def counts(self, finished: float) -> bool:
        return self.window[0] <= finished < self.window[1]


async def one_job(http: httpx.AsyncClient, name: str, body: bytes, poll_s: float, wait: bool, tally: Tally) -> None:
    started = time.monotonic()
    headers = {"Prefer": f"wait={WAIT_S}"} if wait else {}
    accepted = await http.post("/classify", files={"file": (name, body, "image/jpeg")}, headers=headers)
    tally.requests += 1
    if accepted.status_code != 200:
        tally.errors += int(tally.counts(time.monotonic()))
        return
    job_id = accepted.json()["job_id"]
    held = "Preference-Applied" in accepted.headers  # the API held the answer until the job ended
    while True:
        if not held:
            await asyncio.sleep(poll_s)
        held = False
        answer = await http.get(f"/result/{job_id}")
        tally.requests += 1
        if answer.status_code == 200 or "failed" in answer.text:
            break
        if answer.status_code != 409:
            tally.errors += int(tally.counts(time.monotonic()))
            return
    finished = time.monotonic()
    if not tally.counts(finished):
        return
    if answer.status_code != 200:
        tally.failed += 1
        return
    tally.latencies_s.append(finished - started)
    if "chelsea" in name:
        tally.cats += 1
        tally.cats_right += int(answer.json()["predictions"][0]["class_id"] == CAT)


async def client(
    index: int, http: httpx.AsyncClient, photos: list[tuple[str, bytes]], args: argparse.Namespace, tally: Tally
) -> None:
    turn = index
    while time.monotonic() < tally.window[1]:
        name, body = photos[turn % len(photos)]
        turn += args.clients
        try:
            await one_job(http, name, body, args.poll_ms / 1000, args.prefer_wait, tally)
        except httpx.HTTPError:
            tally.errors += 1
            await asyncio.sleep(0.1)


def summary(tally: Tally, duration_s: float, args: argparse.Namespace) -> dict[str, object]:
    lat = np.asarray(tally.latencies_s) * 1000 if tally.latencies_s else np.zeros(1)
    return {
        "clients": args.clients,
        "poll_ms": args.poll_ms,
        "prefer_wait": args.prefer_wait,
        "warmup_s": args.warmup_s,
        "duration_s": duration_s,
        "completed": len(tally.latencies_s),
        "failed": tally.failed,
        "errors": tally.errors,
        "jobs_per_s": round(len(tally.latencies_s) / duration_s, 2),
        "http_requests_per_s": round(tally.requests / (duration_s + args.warmup_s), 1),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p95": round(float(np.percentile(lat, 95)), 1),
            "p99": round(float(np.percentile(lat, 99)), 1),
            "mean": round(float(lat.mean()), 1),
            "max": round(float(lat.max()), 1),
        },
        "chelsea_top1_egyptian_cat": f"{tally.cats_right}/{tally.cats}",
    }


def read_photos(folder: Path) -> list[tuple[str, bytes]]:
    photos = [(path.name, path.read_bytes()) for path in sorted(folder.glob("*.jpg"))]
    if not photos:
        raise SystemExit(f"no *.jpg in {folder} (bench/photos.py writes them)")
    return photos


async def run(args: argparse.Namespace, photos: list[tuple[str, bytes]]) -> dict[str, object]:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    headers = {"X-API-Key": args.key}
    async with httpx.AsyncClient(base_url=args.url, headers=headers, limits=limits, timeout=120) as http:
        begin = time.monotonic()
        tally = Tally(window=(begin + args.warmup_s, begin + args.warmup_s + args.duration_s))
        await asyncio.gather(*(client(i, http, photos, args, tally) for i in range(args.clients)))
    return summary(tally, args.duration_s, args)


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--url", required=True, help="API base URL, e.g. http://127.0.0.1:8000/api/v1")
    cli.add_argument("--key", required=True, help="an API key")
    cli.add_argument("--photos", required=True, help="a folder of JPEGs (bench/photos.py writes the standard set)")
    cli.add_argument("--clients", type=int, default=32)
    cli.add_argument("--poll-ms", type=int, default=50)
    cli.add_argument(
        "--prefer-wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="submit with 'Prefer: wait=60' (poll only if the API does not honour it)",
    )
    cli.add_argument("--warmup-s", type=float, default=10.0)
    cli.add_argument("--duration-s", type=float, default=60.0)
    return cli.parse_args(argv)


if __name__ == "__main__":
    args = arguments()
    print(json.dumps(asyncio.run(run(args, read_photos(Path(args.photos))))))
