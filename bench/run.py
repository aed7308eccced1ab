"""`make bench`: raw Triton throughput (a) against the whole service end to end (b), in one run on one machine.

    .venv/bin/python bench/run.py --perf-analyzer .bench/perf_analyzer/bin/perf_analyzer

(a) NVIDIA's perf_analyzer on a preprocessed photo, swept over batch size and concurrency, then the best pair
again in every round. (b) `aic api` + `aic dispatcher` processes over a redis-server and the same Triton, loaded
by bench/loadgen.py (N clients uploading JPEGs of 320-3,000 px and polling for results). The rounds alternate
(a) and (b) so both see the same neighbours on the CPU; the ratio is mean (b) / mean (a). Writes
bench/results/latest.{md,json} and a timestamped copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import perf  # noqa: E402
import photos  # noqa: E402
import procs  # noqa: E402
import profiles  # noqa: E402
import report  # noqa: E402
from aic.core import modelspec  # noqa: E402
from aic.core import settings as aic_settings  # noqa: E402
from aic.dispatch import preprocess  # noqa: E402
from aic.local import up  # noqa: E402
from aic.local.modelbuild import ensure_default_model  # noqa: E402
from aic.local.ports import free_port  # noqa: E402
from aic.local.triton import LocalTriton, on_free_ports  # noqa: E402
from aic.modelrepo import layout  # noqa: E402

TUNING_ENV = (
    "BATCH_MAX_SIZE",
    "BATCH_MAX_WAIT_MS",
    "DISPATCHER_CONCURRENCY",
    "PREPROCESS_THREADS",
    "AIC_ORT_INTRA_OP_THREADS",
)


def arguments() -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--perf-analyzer", type=Path, default=ROOT / ".bench/perf_analyzer/bin/perf_analyzer")
    cli.add_argument("--work", type=Path, default=ROOT / ".bench/run", help="logs, photos, Redis data")
    cli.add_argument("--out", type=Path, default=BENCH / "results")
    cli.add_argument("--batches", default="1,4,8,16,32", help="perf_analyzer -b values of the sweep")
    cli.add_argument("--concurrency", default="1,2,4", help="perf_analyzer concurrency values of the sweep")
    cli.add_argument("--rounds", type=int, default=3, help="alternations of (a) at the best pair and (b)")
    cli.add_argument("--clients", type=int, default=32, help="concurrent clients of the load generator")
    cli.add_argument("--poll-ms", type=int, default=50)
    cli.add_argument("--warmup-s", type=float, default=5.0)
    cli.add_argument("--duration-s", type=float, default=30.0, help="measured seconds of (b) per round")
    cli.add_argument("--dispatchers", type=int, default=1)
    cli.add_argument(
        "--triton-cpus",
        type=int,
        default=0,
        metavar="N",
        help="0: every process shares every core (default). N: Triton alone on the first N cores and everything "
        "else (redis, API, dispatchers, clients, perf_analyzer) on the rest, as separate pods would be placed (with "
        "the chart's DISPATCHER_CONCURRENCY 2)",
    )
    cli.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the rounds, profile API, dispatcher and Triton's stub with py-spy for this long",
    )
    return cli.parse_args()


def placement(triton_cpus: int) -> tuple[set[int], set[int]]:
    """(Triton's cores, everyone else's): all cores for both, or the first N for Triton alone."""
    cpus = sorted(os.sched_getaffinity(0))
    if triton_cpus <= 0:
        return set(cpus), set(cpus)
    if triton_cpus >= len(cpus):
        raise SystemExit(f"--triton-cpus {triton_cpus} leaves no core for the rest of the service ({len(cpus)} cores)")
    # one intra-op thread per core Triton has, as a pod's CPU limit would be matched (unless set explicitly)
    os.environ.setdefault("AIC_ORT_INTRA_OP_THREADS", str(triton_cpus))
    # the chart's dispatchers, beside Triton's own Pods: the next batch decodes while Triton runs one (unless set)
    os.environ.setdefault("DISPATCHER_CONCURRENCY", "2")
    return set(cpus[:triton_cpus]), set(cpus[triton_cpus:])


def preprocessed_input(spec: modelspec.ModelSpec, folder: Path, chelsea: bytes) -> Path:
    """perf_analyzer's --input-data folder: one real photo, preprocessed exactly as a dispatcher does it."""
    folder.mkdir(parents=True, exist_ok=True)
    preprocess.preprocess(chelsea, spec.preprocessing).tofile(folder / spec.input.name)
    return folder


def load(
    args: argparse.Namespace, url: str, key: str, photo_dir: Path, duration_s: float, body: str = "form"
) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        f"--url={url}",
        f"--key={key}",
        f"--photos={photo_dir}",
        f"--clients={args.clients}",
        f"--poll-ms={args.poll_ms}",
        f"--warmup-s={args.warmup_s}",
        f"--duration-s={duration_s}",
        f"--body={body}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration_s + 300)
    return dict(json.loads(done.stdout))


def start_service(
    stack: ExitStack, args: argparse.Namespace, triton: LocalTriton, key: str, redis_port: int | None = None
) -> tuple[str, dict[int, str]]:
    """redis-server (on ``redis_port``, else a free port), `aic api` and the dispatchers as real processes; returns
    the API URL and the sessions."""
    work: Path = args.work
    (work / "redis").mkdir(parents=True, exist_ok=True)
    redis_port = redis_port or free_port()
    persistence = getattr(args, "redis_options", None) or procs.REDIS_PERSISTENCE  # bench/compare.py's "before"
    redis = procs.start_redis(redis_port, work / "redis", work / "redis.log", persistence)
    stack.callback(procs.stop, redis)
    redis_url = f"redis://127.0.0.1:{redis_port}"
    asyncio.run(up.publish_models(redis_url, triton.repository))
    api_port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "TRITON_URL": triton.grpc_url,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(api_port),
        "API_KEYS": f"bench:{key}",
        "LOG_LEVEL": "WARNING",
        "MODEL_REPOSITORY": str(triton.repository),
        "SECRET_KEY": secrets.token_urlsafe(32),
        # one tenant stands for many clients here: per-key and per-IP limits would measure the limiter
        "RATE_LIMIT_PER_MINUTE": "0",
    }
    api = procs.start_aic("api", env, work / "api.log")
    stack.callback(procs.stop, api)
    dispatchers = [procs.start_aic("dispatcher", env, work / f"dispatcher-{i}.log") for i in range(args.dispatchers)]
    for dispatcher in dispatchers:
        stack.callback(procs.stop, dispatcher)
    base = f"http://127.0.0.1:{api_port}/api/v1"
    procs.wait_http(f"{base}/health", 60, [api, *dispatchers])
    assert triton.process is not None
    sessions = {triton.process.pid: "triton", redis.pid: "redis", api.pid: "api"}
    sessions.update({d.pid: "dispatcher" for d in dispatchers})
    return base, sessions


def service_cpu(service: dict[str, Any], cpu_b: procs.CpuMeter, a_ms: float) -> dict[str, Any]:
    """What each job of a (b) run cost in CPU, all our processes (clients included) and per component."""
    b = cpu_b.as_dict()
    jobs, counted_by = loadgen.jobs_of(service)
    b_ms = 1000 * float(b["ours_cpu_s"]) / jobs  # jobs_of counts at least one
    per_job = {k: round(1000 * v / jobs, 2) for k, v in cpu_b.components.items()}
    return {
        "b": service,
        "cpu_b": b,
        "jobs_b": jobs,
        "jobs_b_counted_by": counted_by,
        "cpu_ms_per_job_b": round(b_ms, 2),
        "cpu_ms_per_job_b_by_component": per_job,
        "cpu_ratio": round(a_ms / b_ms, 3) if b_ms else None,
        "sizing": sizing(per_job),
    }


def sizing(per_job: dict[str, float]) -> dict[str, float | None]:
    """Jobs per second one core carries: of dispatcher work, and of all service work outside Triton (API,
    dispatcher, redis) - the numbers that size the pods in front of a GPU Triton."""

    def per_core(ms: float) -> float | None:
        return round(1000 / ms, 1) if ms > 0 else None

    outside = sum(per_job.get(k, 0.0) for k in ("api", "dispatcher", "redis"))
    return {
        "dispatcher_jobs_per_core_s": per_core(per_job.get("dispatcher", 0.0)),
        "service_jobs_per_core_s": per_core(outside),
    }


def one_round(
    raw: perf.Measurement,
    cpu_a: procs.CpuMeter,
    form: tuple[dict[str, Any], procs.CpuMeter],
    raw_body: tuple[dict[str, Any], procs.CpuMeter],
) -> dict[str, Any]:
    """One alternation, with what each inference and each job cost in CPU (all our processes, clients included):
    (b) with multipart uploads, and (b) with the image itself as the body."""
    a = cpu_a.as_dict()
    inferences = raw.inferences_per_s * cpu_a.wall_s
    a_ms = 1000 * float(a["ours_cpu_s"]) / max(inferences, 1e-9)
    return {
        "a": raw.as_dict(),
        "cpu_a": a,
        "cpu_ms_per_inference_a": round(a_ms, 2),
        "cpu_ms_per_inference_a_by_component": {
            k: round(1000 * v / max(inferences, 1e-9), 2) for k, v in cpu_a.components.items()
        },
        **service_cpu(*form, a_ms),
        "raw_body": service_cpu(*raw_body, a_ms),
    }


def cpu_ratio(rounds: list[dict[str, Any]], of: Any) -> float:
    """Mean CPU per inference in (a) over mean CPU per job in (b), over the rounds."""
    a_ms = float(np.mean([r["cpu_ms_per_inference_a"] for r in rounds]))
    return round(a_ms / float(np.mean([of(r)["cpu_ms_per_job_b"] for r in rounds])), 3)


def main() -> int:
    args = arguments()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    base_settings = aic_settings.load(aic_settings.TritonSettings)
    model_dir = ensure_default_model(base_settings.model_repository, ("python",))
    spec = layout.load(model_dir)
    photo_set = photos.write(args.work / "photos")
    chelsea = next(body for name, body in photo_set if name.startswith("chelsea-480"))
    input_dir = preprocessed_input(spec, args.work / "perf_input", chelsea)
    key = secrets.token_urlsafe(24)
    triton_settings = on_free_ports(base_settings, triton_timeout_s=180.0)
    triton_cpus, other_cpus = placement(args.triton_cpus)
    with ExitStack() as stack:
        # Processes inherit the CPU set of the process that starts them: Triton (and the stub it starts) gets
        # its cores, then everything this script starts afterwards gets the others.
        os.sched_setaffinity(0, triton_cpus)
        triton = stack.enter_context(LocalTriton(triton_settings, log_path=args.work / "triton.log"))
        os.sched_setaffinity(0, other_cpus)
        url, sessions = start_service(stack, args, triton, key)
        analyzer = perf.PerfAnalyzer(args.perf_analyzer.resolve(), triton.grpc_url, spec.name, input_dir)
        print(f"bench: Triton {triton.grpc_url}, API {url}; warming up", flush=True)
        analyzer.measure(1, 1)
        load(args, url, key, args.work / "photos", 3.0)
        sweep: list[perf.Measurement] = []
        for batch in (int(b) for b in args.batches.split(",")):
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                sweep.append(analyzer.measure(batch, concurrency))
                print(f"bench: (a) sweep b={batch} c={concurrency}: {sweep[-1].inferences_per_s:.1f} inf/s", flush=True)
        best = max(sweep, key=lambda m: m.inferences_per_s)
        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            with procs.CpuMeter(sessions) as cpu_a:
                raw = analyzer.measure(best.batch, best.concurrency)
            with procs.CpuMeter(sessions) as cpu_b:
                service = load(args, url, key, args.work / "photos", args.duration_s)
            with procs.CpuMeter(sessions) as cpu_raw:
                service_raw = load(args, url, key, args.work / "photos", args.duration_s, body="raw")
            rounds.append(one_round(raw, cpu_a, (service, cpu_b), (service_raw, cpu_raw)))
            print(
                f"bench: round {index + 1}: (a) {raw.inferences_per_s:.1f} inf/s, (b) {service['jobs_per_s']} jobs/s "
                f"p50 {service['latency_ms']['p50']} ms (raw body: {service_raw['jobs_per_s']} jobs/s); others used "
                f"{cpu_b.as_dict()['other_processes_pct']}% of the CPU",
                flush=True,
            )
        profiled: dict[str, str] = {}
        if args.profile > 0:
            try:  # the measurements stand without profiles (py-spy needs ptrace, which a container may deny)
                profiled = profiles.record(
                    sessions,
                    args.profile,
                    args.out / "profiles",
                    lambda: load(args, url, key, args.work / "photos", args.profile),
                )
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"bench: no profiles: {exc}", file=sys.stderr, flush=True)
    a_mean = float(np.mean([r["a"]["inferences_per_s"] for r in rounds]))
    b_mean = float(np.mean([r["b"]["jobs_per_s"] for r in rounds]))
    result = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "command": "make bench  # = " + " ".join(["bench/run.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg())},
        "model": {"name": spec.name, "input": spec.input.data_type, "max_batch_size": spec.max_batch_size},
        "tuning_env": {k: os.environ[k] for k in TUNING_ENV if k in os.environ},
        "dispatchers": args.dispatchers,
        "placement": {"triton_cpus": sorted(triton_cpus), "other_cpus": sorted(other_cpus)},
        "photos": photos.describe(photo_set),
        "sweep": [m.as_dict() for m in sweep],
        "best": {"batch": best.batch, "concurrency": best.concurrency},
        "rounds": rounds,
        "a_inferences_per_s": round(a_mean, 2),
        "b_jobs_per_s": round(b_mean, 2),
        "ratio_b_over_a": round(b_mean / a_mean, 3) if a_mean else None,
        "ratio_per_round": [round(r["b"]["jobs_per_s"] / r["a"]["inferences_per_s"], 3) for r in rounds],
        "cpu_ratio": cpu_ratio(rounds, lambda r: r),
        "b_raw_jobs_per_s": round(float(np.mean([r["raw_body"]["b"]["jobs_per_s"] for r in rounds])), 2),
        "cpu_ratio_raw": cpu_ratio(rounds, lambda r: r["raw_body"]),
        "profiles": profiled,
    }
    report.write(result, args.out, "latest" if args.triton_cpus <= 0 else f"latest-triton-cpus-{args.triton_cpus}")
    print(report.markdown(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
