"""What the request bounds cost: CPU of `aic api` per request with the header bounds on and off.

    .venv/bin/python bench/headers.py [--requests 20000] [--rounds 3]

Two `aic api` processes on one redis-server: the default (``BoundedHttpToolsProtocol``: request line, header
lines, header bytes and header count counted while httptools parses) and ``MAX_HEADER_BYTES=0`` (uvicorn's plain
httptools protocol, the reference). One client sends the same requests to each over a keep-alive connection,
one at a time, alternating in rounds so both meet the same neighbours on the CPU, and the API's CPU time is read
from /proc (utime + stime of its session). Two request shapes: a browser-like GET of 12 headers (~700 bytes) and
a GET with 90 headers (~10 KB, within the bounds: the counting's worst case). The route is `/livez`, which does
no I/O, so the parsing is as large a share of the request as it gets. Writes bench/results/headers.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import procs  # noqa: E402
from aic.local.ports import free_port  # noqa: E402

BROWSER = (
    b"Host: classify.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 "
    b"Firefox/133.0\r\nAccept: application/json,text/plain;q=0.9,*/*;q=0.8\r\nAccept-Language: en-GB,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\nX-API-Key: bench-key-0123456789abcdef0123\r\n"
    b"X-Request-ID: 4b5c1f0e-bench-request-0000000000000000\r\nConnection: keep-alive\r\n"
    b"Sec-Fetch-Dest: empty\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Site: same-origin\r\n"
    b"Cookie: session=" + b"c" * 200 + b"\r\n"
)
SHAPES = {
    "browser-like, 12 headers": b"GET /livez HTTP/1.1\r\n" + BROWSER + b"\r\n",
    "90 headers, 10 KB": b"GET /livez HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-Filler-%02d: %s\r\n" % (i, b"v" * 100) for i in range(89))
    + b"\r\n",
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per shape, server and round")
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def exchange(sock: socket.socket, request: bytes, count: int) -> None:
    """``count`` requests on one keep-alive connection, each answer read whole before the next is sent."""
    for _ in range(count):
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"unexpected answer: {head[:120]!r}")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += sock.recv(65536)


def api_cpu_s(pid: int) -> float:
    return procs.sessions_cpu_s({pid: "api"}).get("api", 0.0)


def main() -> int:
    args = arguments()
    work = Path(tempfile.mkdtemp(prefix="aic-bench-headers-"))
    with ExitStack() as stack:
        redis_port = free_port()
        redis = procs.start_redis(redis_port, work, work / "redis.log")
        stack.callback(procs.stop, redis)
        servers: dict[str, tuple[Any, int]] = {}
        for name, extra in (
            ("bounded (default)", {}),
            ("plain httptools (MAX_HEADER_BYTES=0)", {"MAX_HEADER_BYTES": "0"}),
        ):
            port = free_port()
            env = {
                **os.environ,
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
                "API_PORT": str(port),
                "API_KEYS": "bench:bench-key-0123456789abcdef0123",
                "SECRET_KEY": "bench-secret-0123456789abcdef",
                "RATE_LIMIT_PER_MINUTE": "0",
                "LOG_LEVEL": "WARNING",
                **extra,
            }
            process = procs.start_aic("api", env, work / f"api-{port}.log")
            stack.callback(procs.stop, process)
            procs.wait_http(f"http://127.0.0.1:{port}/livez", 60, [process])
            servers[name] = (process, port)
        samples: dict[str, dict[str, list[float]]] = {shape: {name: [] for name in servers} for shape in SHAPES}
        for shape, request in SHAPES.items():
            for _, port in servers.values():  # warm-up: imports, caches, the allocator
                with socket.create_connection(("127.0.0.1", port)) as sock:
                    exchange(sock, request, 2000)
            for _ in range(args.rounds):
                for name, (process, port) in servers.items():
                    with socket.create_connection(("127.0.0.1", port)) as sock:
                        before = api_cpu_s(process.pid)
                        exchange(sock, request, args.requests)
                        time.sleep(0.05)  # the last answer's bookkeeping
                        samples[shape][name].append(round((api_cpu_s(process.pid) - before) / args.requests * 1e6, 1))
    result = {
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "cpu_us_per_request": {
            shape: {name: round(statistics.mean(values), 1) for name, values in by_server.items()}
            for shape, by_server in samples.items()
        },
        "samples_us": samples,
    }
    for by_server in result["cpu_us_per_request"].values():  # type: ignore[union-attr]
        bounded, plain = by_server.values()
        by_server["ratio bounded / plain"] = round(bounded / plain, 3)
    write(result)
    print(json.dumps(result["cpu_us_per_request"], indent=2))
    return 0


def write(result: dict[str, Any]) -> None:
    out = BENCH / "results"
    (out / "headers.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# CPU of `aic api` per request: header bounds on and off",
        "",
        f"{result['rounds']} alternating rounds of {result['requests_per_round']:,} keep-alive `GET /livez` per "
        "shape and server; API CPU (utime + stime) from /proc. `python bench/headers.py` writes this file.",
        "",
        "| request | bounded (default) µs | plain httptools µs | bounded / plain |",
        "|---|---|---|---|",
    ]
    for shape, by_server in result["cpu_us_per_request"].items():
        bounded, plain, ratio = by_server.values()
        lines.append(f"| {shape} | {bounded} | {plain} | {ratio} |")
    (out / "headers.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
