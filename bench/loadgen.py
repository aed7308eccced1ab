"""Closed-loop load on the running service: N clients, each uploads a photo, waits for its result, repeats.

    python bench/loadgen.py --url http://127.0.0.1:8000/api/v1 --key KEY --photos DIR --clients 32

A job's latency runs from the start of its upload to the 200 of ``GET /result/{id}``. A client submits with
``Prefer: wait=60`` (the API holds the answer until the job ends), then fetches the result; where the API does
not honour it, the client polls the result (409 while pending) every ``--poll-ms``. Only jobs finished inside
the measurement window (after ``--warmup-s``) count. Prints one JSON object.

The clients share the service's CPU cores, so they are cheap on purpose: one keep-alive HTTP/1.1 connection
each over asyncio streams, and every upload's multipart body built once before the clock starts (httpx cost
as much CPU per job as the API itself; production clients are not on the server's cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WAIT_S = 60
CAT = 285  # ImageNet "Egyptian cat": every chelsea upload, at every size, should come back as one
BOUNDARY = "aic-bench-7d1f0c2e"


@dataclass
class Tally:
    window: tuple[float, float]
    latencies_s: list[float] = field(default_factory=list)
    failed: int = 0
    errors: int = 0
    """Unexpected answers (not 200/409) and broken connections over the whole run, warm-up included."""
    requests: int = 0
    cats: int = 0
    cats_right: int = 0

    def counts(self, finished: float) -> bool:
        return self.window[0] <= finished < self.window[1]


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    prefix: str
    key: str

    @classmethod
    def parse(cls, url: str, key: str) -> Target:
        parts = urllib.parse.urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/"), key)

    def head(self, method: str, path: str, extra: str = "") -> bytes:
        return (
            f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"X-API-Key: {self.key}\r\n{extra}\r\n"
        ).encode()

    def upload(self, name: str, jpeg: bytes, wait: bool, body_form: str = "form") -> bytes:
        """The whole ``POST /classify`` request for one photo, ready to write: a multipart form (``form``) or the
        JPEG itself as the body (``raw``)."""
        extra = f"Prefer: wait={WAIT_S}\r\n" if wait else ""
        if body_form == "raw":
            extra += f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
            return self.head("POST", "/classify", extra) + jpeg
        body = (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + jpeg
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        extra += f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n"
        return self.head("POST", "/classify", extra) + body


class Connection:
    """One keep-alive HTTP/1.1 connection; a request is written whole and its response read whole."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes, bytes]:
        """(status, header block, body)."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.target.host, self.target.port)
        try:
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            headers = head.lower()
            length = _header(headers, b"content-length")
            if length is not None:
                body = await self.reader.readexactly(int(length))
            elif _header(headers, b"transfer-encoding") == b"chunked":
                body = await self._chunked(self.reader)
            else:
                body = b""
            if _header(headers, b"connection") == b"close":
                self.close()
            return status, headers, body
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            raise

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        return b"".join(parts)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _header(block: bytes, name: bytes) -> bytes | None:
    start = block.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    return block[start : block.index(b"\r\n", start)].strip()


async def one_job(conn: Connection, name: str, upload: bytes, poll_s: float, tally: Tally) -> None:
    started = time.monotonic()
    status, headers, body = await conn.request(upload)
    tally.requests += 1
    if status != 200:
        tally.errors += 1  # warm-up included: a burst at the start is an error too
        return
    accepted = json.loads(body)
    if accepted.get("result") is not None:  # Prefer: wait answered with the finished job's result
        _finish(tally, name, started, 200, accepted["result"])
        return
    job_id = accepted["job_id"]
    fetch = conn.target.head("GET", f"/result/{job_id}")
    held = b"\r\npreference-applied:" in headers  # the API held the answer until the job ended
    while True:
        if not held:
            await asyncio.sleep(poll_s)
        held = False
        status, _, body = await conn.request(fetch)
        tally.requests += 1
        if status == 200 or b"failed" in body:
            break
        if status != 409:
            tally.errors += 1  # warm-up included: a burst at the start is an error too
            return
    _finish(tally, name, started, status, json.loads(body) if status == 200 else None)


def _finish(tally: Tally, name: str, started: float, status: int, result: dict[str, Any] | None) -> None:
    finished = time.monotonic()
    if not tally.counts(finished):
        return
    if status != 200 or result is None:
        tally.failed += 1
        return
    tally.latencies_s.append(finished - started)
    if "chelsea" in name:
        tally.cats += 1
        tally.cats_right += int(result["predictions"][0]["class_id"] == CAT)


async def client(index: int, uploads: list[tuple[str, bytes]], args: argparse.Namespace, tally: Tally) -> None:
    conn = Connection(Target.parse(args.url, args.key))
    turn = index
    while time.monotonic() < tally.window[1]:
        name, upload = uploads[turn % len(uploads)]
        turn += args.clients
        try:
            await one_job(conn, name, upload, args.poll_ms / 1000, tally)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            tally.errors += 1
            await asyncio.sleep(0.1)
    conn.close()


def summary(tally: Tally, duration_s: float, args: argparse.Namespace) -> dict[str, object]:
    lat = np.asarray(tally.latencies_s) * 1000 if tally.latencies_s else np.zeros(1)
    return {
        "clients": args.clients,
        "prefer_wait": args.prefer_wait,
        "body": args.body,
        "poll_ms": args.poll_ms,
        "warmup_s": args.warmup_s,
        "duration_s": duration_s,
        "completed": len(tally.latencies_s),
        "failed": tally.failed,
        "errors": tally.errors,
        "jobs_per_s": round(len(tally.latencies_s) / duration_s, 2),
        "http_requests": tally.requests,
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


def jobs_of(service: dict[str, Any]) -> tuple[int, str]:
    """The jobs a run submitted over its warm-up and window (all inside a CPU meter around the run), and how
    they were counted.

    While every submit is answered with its result (``Prefer: wait`` honoured, no job near its 60 s wait), a
    client sends one request per job, so the request count is exact. Otherwise the window's rate times warm-up
    + window, an estimate that missed by up to 2 % either way in 30 s runs (the warm-up is slower than the window,
    and the jobs in flight when the window closes are finished but not counted in its rate)."""
    seconds = float(service["warmup_s"]) + float(service["duration_s"])
    requests = int(service["http_requests"])
    held = service["prefer_wait"] and float(service["latency_ms"]["max"]) < 1000 * WAIT_S / 2
    if held and not service["errors"] and requests > 0:
        return requests, "requests (one per job)"
    return max(1, round(float(service["jobs_per_s"]) * seconds)), "jobs/s x (warm-up + window)"


def read_photos(folder: Path) -> list[tuple[str, bytes]]:
    photos = [(path.name, path.read_bytes()) for path in sorted(folder.glob("*.jpg"))]
    if not photos:
        raise SystemExit(f"no *.jpg in {folder} (bench/photos.py writes them)")
    return photos


async def run(args: argparse.Namespace, photos: list[tuple[str, bytes]]) -> dict[str, object]:
    target = Target.parse(args.url, args.key)
    uploads = [(name, target.upload(name, jpeg, args.prefer_wait, args.body)) for name, jpeg in photos]
    begin = time.monotonic()
    tally = Tally(window=(begin + args.warmup_s, begin + args.warmup_s + args.duration_s))
    await asyncio.gather(*(client(i, uploads, args, tally) for i in range(args.clients)))
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
    cli.add_argument(
        "--body", choices=("form", "raw"), default="form", help="multipart form, or the JPEG itself as the body"
    )
    cli.add_argument("--warmup-s", type=float, default=10.0)
    cli.add_argument("--duration-s", type=float, default=60.0)
    return cli.parse_args(argv)


if __name__ == "__main__":
    args = arguments()
    print(json.dumps(asyncio.run(run(args, read_photos(Path(args.photos))))))
