"""What tracing costs: CPU per job of the whole service with OpenTelemetry off (no ``OTEL_*``) and on.

    .venv/bin/python bench/tracing.py [--rounds 2] [--duration-s 20] [--clients 32]

Every round starts the stack twice from scratch, alternating: Triton (``LocalTriton``), a redis-server, `aic api`
and one `aic dispatcher` as processes, as bench/run.py's (b) does. "off": no ``OTEL_*`` variable in any of their
environments (nothing is exported; the service's claim is that the overhead is negligible). "on":
``OTEL_EXPORTER_OTLP_ENDPOINT`` names a local collector (bench/otlp_sink.py, started once for the whole run), so
the API and the dispatcher export over OTLP/HTTP (protobuf) and Triton starts with ``--trace-config
mode=opentelemetry`` (OTLP/HTTP JSON); ``OTEL_BSP_SCHEDULE_DELAY`` is the SDK's default unless
``--bsp-schedule-delay-ms`` says otherwise. bench/loadgen.py then loads the service (a short warm-up, then
``--warmup-s`` + ``--duration-s``) while ``procs.CpuMeter`` reads the CPU of every component from /proc, as
run.py does, divided by the jobs submitted in that time; the collector's own CPU is read apart (a collector runs
elsewhere in production).

The collector's counts (spans per ``service.name``) prove that the "on" figure measured tracing: every run of
"on" must bring spans of aic-api, aic-dispatcher and triton, and every run of "off" none, or the bench fails.
Writes bench/results/tracing-latest.{md,json} and a timestamped copy.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import photos  # noqa: E402
import procs  # noqa: E402
import run  # noqa: E402
from aic.core import settings as aic_settings  # noqa: E402
from aic.local.modelbuild import ensure_default_model  # noqa: E402
from aic.local.ports import free_port  # noqa: E402
from aic.local.triton import LocalTriton, on_free_ports  # noqa: E402

MODES = ("off", "on")
BASELINE_MODE = "before"
"""With ``--baseline REF``: the same stack run from a worktree of REF (the code before tracing), no OTEL_*."""
SERVICES = ("aic-api", "aic-dispatcher", "triton")
"""service.name of the API, the dispatcher and Triton: each must export spans in "on"."""
CLIENTS = "load generator / perf_analyzer"  # procs.CpuMeter's name for the load generator's CPU
COMPONENTS = {"api": "api", "dispatcher": "dispatcher", "redis": "redis", "triton": "triton", CLIENTS: "clients"}
OUTSIDE_TRITON = ("api", "dispatcher", "redis")
# Variables that decide whether and where spans are exported: the bench sets them itself in "on", and no
# OTEL_* variable at all reaches the processes in "off".
DESTINATION = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
)
SDK_SCHEDULE_DELAY_MS = 5000  # OTEL_BSP_SCHEDULE_DELAY's default (the Python SDK's and Triton's)


def arguments() -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--work", type=Path, default=ROOT / ".bench/tracing", help="logs, photos, Redis data")
    cli.add_argument("--out", type=Path, default=BENCH / "results")
    cli.add_argument("--rounds", type=int, default=2, help="alternations of off and on, each on a fresh stack")
    cli.add_argument("--clients", type=int, default=32, help="concurrent clients of the load generator")
    cli.add_argument("--poll-ms", type=int, default=50)
    cli.add_argument("--warmup-s", type=float, default=5.0, help="load generator's warm-up (measured, as in run.py)")
    cli.add_argument("--duration-s", type=float, default=20.0, help="measured seconds per mode and round")
    cli.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the API and dispatcher of this git ref (a worktree under --work), OTEL_* unset: what 'off' "
        "costs against the code before tracing",
    )
    cli.add_argument(
        "--bsp-schedule-delay-ms",
        type=int,
        default=None,
        help="OTEL_BSP_SCHEDULE_DELAY in 'on' (default: unset, the SDK's and Triton's 5000 ms)",
    )
    args = cli.parse_args()
    args.dispatchers = 1  # run.start_service's option: one `aic dispatcher`
    return args


class Sink:
    """bench/otlp_sink.py as a process of its own session (its CPU is read apart, not as one of ours)."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._out = work / "otlp_sink.json"
        with self._out.open("wb") as out, (work / "otlp_sink.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(BENCH / "otlp_sink.py"), f"--port={self.port}"],
                stdout=out,
                stderr=log,
                start_new_session=True,
            )
        procs.wait_http(f"{self.endpoint}/stats", 30, [self.process])

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.endpoint}/stats", timeout=10) as answer:  # noqa: S310 - loopback
            return dict(json.loads(answer.read()))

    def spans(self) -> dict[str, int]:
        return dict(self.stats()["spans_by_service"])

    def cpu_s(self) -> float:
        return procs.sessions_cpu_s({self.process.pid: "sink"})["sink"]

    def settle(self, quiet_s: float, limit_s: float = 60.0) -> dict[str, Any]:
        """The stats once nothing has arrived for ``quiet_s``: every batch the exporters held is in."""
        seen, since = self.stats(), time.monotonic()
        deadline = since + limit_s
        while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.stats()
            if now["spans_by_service"] != seen["spans_by_service"]:
                seen, since = now, time.monotonic()
        return seen

    def stop(self) -> dict[str, Any]:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        lines = self._out.read_text().splitlines()
        return dict(json.loads(lines[-1])) if lines else {}


def set_tracing(mode: str, endpoint: str, user_otel: dict[str, str], delay_ms: int | None) -> dict[str, str]:
    """Put the mode's OTEL_* variables into os.environ (LocalTriton builds its argv from it at start and
    run.start_service copies it for the API and the dispatcher); return them."""
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        del os.environ[name]
    if mode != "on":
        return {}
    chosen = {name: value for name, value in user_otel.items() if name not in DESTINATION}
    chosen["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    if delay_ms is not None:
        chosen["OTEL_BSP_SCHEDULE_DELAY"] = str(delay_ms)
    os.environ.update(chosen)
    return chosen


def worktree(ref: str, path: Path) -> Path:
    """A detached worktree of ``ref``: its ``aic`` is what "before" runs (the same venv, its code first on the path)."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False, capture_output=True
    )
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach", str(path), ref], check=True)
    return path


def set_code(baseline: Path | None, user_pythonpath: str | None) -> None:
    """The API's and the dispatcher's code: the baseline worktree's packages ahead of the installed ones, or this
    checkout's (the editable install)."""
    parts = [str(baseline / "api"), str(baseline / "operator")] if baseline else []
    parts += [user_pythonpath] if user_pythonpath else []
    if parts:
        os.environ["PYTHONPATH"] = os.pathsep.join(parts)
    else:
        os.environ.pop("PYTHONPATH", None)


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: after.get(name, 0) - before.get(name, 0) for name in sorted({*after, *before})}


def one_run(
    args: argparse.Namespace,
    mode: str,
    index: int,
    sink: Sink,
    base_settings: aic_settings.TritonSettings,
    otel_env: dict[str, str],
    photo_dir: Path,
) -> dict[str, Any]:
    """One fresh stack in ``mode``: warm up, let the warm-up's spans drain, measure, let the load's drain."""
    work = args.work / f"{index + 1}-{mode}"
    shutil.rmtree(work, ignore_errors=True)  # a fresh Redis: no AOF of an earlier run to load
    work.mkdir(parents=True)
    run_args = argparse.Namespace(**{**vars(args), "work": work})
    key = secrets.token_urlsafe(24)
    delay_ms = args.bsp_schedule_delay_ms if args.bsp_schedule_delay_ms is not None else SDK_SCHEDULE_DELAY_MS
    quiet_s = delay_ms / 1000 + 1.5  # both modes wait alike (in "off" nothing can arrive)
    triton_settings = on_free_ports(base_settings, triton_timeout_s=180.0)
    with ExitStack() as stack:
        triton = stack.enter_context(LocalTriton(triton_settings, log_path=work / "triton.log"))
        url, sessions = run.start_service(stack, run_args, triton, key)
        run.load(run_args, url, key, photo_dir, 3.0)  # imports, connections, the first inferences
        before = sink.settle(quiet_s)
        sink_cpu_before = sink.cpu_s()
        with procs.CpuMeter(sessions) as cpu:
            service = run.load(run_args, url, key, photo_dir, args.duration_s)
        sink_cpu_s = sink.cpu_s() - sink_cpu_before
        after = sink.settle(quiet_s)  # while the services run: nothing depends on their flush at exit
    at_exit = diff(sink.spans(), after["spans_by_service"])
    jobs, counted_by = loadgen.jobs_of(service)
    ours = cpu.as_dict()
    by_component = {COMPONENTS.get(k, k): round(1000 * v / jobs, 2) for k, v in cpu.components.items()}
    spans = diff(after["spans_by_service"], before["spans_by_service"])
    names = {
        name: diff(after["spans_by_name"][name], before["spans_by_name"].get(name, {}))
        for name in after["spans_by_name"]
    }
    result = {
        "round": index + 1,
        "mode": mode,
        "otel_env": otel_env,
        "triton_log": str(work / "triton.log"),
        "load": service,
        "cpu": ours,
        "jobs": jobs,
        "jobs_counted_by": counted_by,
        "cpu_ms_per_job": round(1000 * float(ours["ours_cpu_s"]) / jobs, 2),
        "cpu_ms_per_job_by_component": by_component,
        "cpu_ms_per_job_outside_triton": round(sum(by_component.get(k, 0.0) for k in OUTSIDE_TRITON), 2),
        "sink_cpu_ms_per_job": round(1000 * sink_cpu_s / jobs, 2),
        "spans": spans,
        "spans_per_job": {name: round(count / jobs, 2) for name, count in spans.items()},
        "spans_per_job_by_name": {
            name: {span: round(count / jobs, 2) for span, count in by_name.items() if count}
            for name, by_name in names.items()
        },
        "spans_after_stop": at_exit,
        "sizing": run.sizing(by_component),
    }
    check(result)
    return result


class TracingCheckError(RuntimeError):
    """The spans that arrived do not match the mode: the "on" figure would not measure tracing."""


def check(r: dict[str, Any]) -> None:
    load = r["load"]
    if load["completed"] == 0:
        raise TracingCheckError(f"round {r['round']} {r['mode']}: no job finished: {load}")
    if r["mode"] == "on":
        missing = [name for name in SERVICES if r["spans"].get(name, 0) <= 0]
        if missing:
            raise TracingCheckError(
                f"round {r['round']} on: no spans from {', '.join(missing)} reached the collector "
                f"(arrived: {r['spans']}; Triton's log: {r['triton_log']})"
            )
    elif sum(r["spans"].values()) or sum(r["spans_after_stop"].values()):
        raise TracingCheckError(
            f"round {r['round']} {r['mode']}: spans arrived with no OTEL_* variable set: {r['spans']} "
            f"(at exit: {r['spans_after_stop']})"
        )


def mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 2)


def modes_of(runs: list[dict[str, Any]]) -> list[str]:
    return [mode for mode in (BASELINE_MODE, *MODES) if any(r["mode"] == mode for r in runs)]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_mode: dict[str, Any] = {}
    for mode in modes_of(runs):
        mine = [r for r in runs if r["mode"] == mode]
        components = list(mine[0]["cpu_ms_per_job_by_component"])
        services = sorted({name for r in mine for name in r["spans_per_job"]})
        by_mode[mode] = {
            "runs": len(mine),
            "jobs_per_s": mean([r["load"]["jobs_per_s"] for r in mine]),
            "p50_ms": mean([r["load"]["latency_ms"]["p50"] for r in mine]),
            "cpu_ms_per_job": mean([r["cpu_ms_per_job"] for r in mine]),
            "cpu_ms_per_job_by_component": {
                c: mean([r["cpu_ms_per_job_by_component"].get(c, 0.0) for r in mine]) for c in components
            },
            "cpu_ms_per_job_outside_triton": mean([r["cpu_ms_per_job_outside_triton"] for r in mine]),
            "sink_cpu_ms_per_job": mean([r["sink_cpu_ms_per_job"] for r in mine]),
            "spans_per_job": {s: mean([r["spans_per_job"].get(s, 0) for r in mine]) for s in services},
            "other_processes_pct": mean([r["cpu"]["other_processes_pct"] for r in mine]),
        }
    off, on = by_mode["off"], by_mode["on"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if b else None

    per_round = [
        {
            "round": r_on["round"],
            "cpu_ms_per_job": ratio(r_on["cpu_ms_per_job"], r_off["cpu_ms_per_job"]),
            "cpu_ms_per_job_outside_triton": ratio(
                r_on["cpu_ms_per_job_outside_triton"], r_off["cpu_ms_per_job_outside_triton"]
            ),
        }
        for r_off, r_on in zip(
            [r for r in runs if r["mode"] == "off"], [r for r in runs if r["mode"] == "on"], strict=True
        )
    ]
    before = by_mode.get(BASELINE_MODE)
    return {
        "by_mode": by_mode,
        "ratio_off_over_before": {
            "cpu_ms_per_job": ratio(off["cpu_ms_per_job"], before["cpu_ms_per_job"]),
            "cpu_ms_per_job_outside_triton": ratio(
                off["cpu_ms_per_job_outside_triton"], before["cpu_ms_per_job_outside_triton"]
            ),
            "jobs_per_s": ratio(off["jobs_per_s"], before["jobs_per_s"]),
        }
        if before
        else None,
        "ratio_on_over_off": {
            "cpu_ms_per_job": ratio(on["cpu_ms_per_job"], off["cpu_ms_per_job"]),
            "cpu_ms_per_job_outside_triton": ratio(
                on["cpu_ms_per_job_outside_triton"], off["cpu_ms_per_job_outside_triton"]
            ),
            "jobs_per_s": ratio(on["jobs_per_s"], off["jobs_per_s"]),
            "per_round": per_round,
        },
    }


def markdown(r: dict[str, Any]) -> str:
    runs, s = r["runs"], r["summary"]
    components = list(runs[0]["cpu_ms_per_job_by_component"])
    ratio = s["ratio_on_over_off"]
    head = ["round", "mode", "jobs/s", "p50 ms", "**CPU ms/job**", *components, "outside Triton", "sink"]
    head += [f"spans/job {name}" for name in SERVICES] + ["others' CPU"]
    lines = [
        f"# Tracing overhead {r['started_at']}",
        "",
        f"`{r['command']}` on {r['machine']['cpus']} CPU cores; {len(runs)} runs ({r['rounds']} rounds alternating "
        f"off and on, each on a fresh Triton + redis + `aic api` + one `aic dispatcher`), {r['clients']} clients, "
        f"{r['warmup_s']:g} + {r['duration_s']:g} s measured per run, {r['elapsed_s']:.0f} s in all.",
        "",
        f"- **CPU per job, on / off: {ratio['cpu_ms_per_job']}** (all our processes: "
        f"{s['by_mode']['on']['cpu_ms_per_job']} against {s['by_mode']['off']['cpu_ms_per_job']} ms)",
        f"- **the service outside Triton (API + dispatcher + redis), on / off: "
        f"{ratio['cpu_ms_per_job_outside_triton']}** ({s['by_mode']['on']['cpu_ms_per_job_outside_triton']} against "
        f"{s['by_mode']['off']['cpu_ms_per_job_outside_triton']} ms)",
        "- per round (CPU per job; outside Triton): "
        + ", ".join(
            f"{x['round']}: {x['cpu_ms_per_job']}; {x['cpu_ms_per_job_outside_triton']}" for x in ratio["per_round"]
        ),
        f"- throughput on / off: {ratio['jobs_per_s']}",
        *(
            [
                f"- **off against the code before tracing ({r.get('baseline')}), CPU per job: "
                f"{s['ratio_off_over_before']['cpu_ms_per_job']}**, outside Triton "
                f"{s['ratio_off_over_before']['cpu_ms_per_job_outside_triton']}, throughput "
                f"{s['ratio_off_over_before']['jobs_per_s']}"
            ]
            if s.get("ratio_off_over_before")
            else []
        ),
        "",
        "## Runs",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for x in runs:
        per = x["cpu_ms_per_job_by_component"]
        cells = [
            str(x["round"]),
            x["mode"],
            f"{x['load']['jobs_per_s']:.1f}",
            f"{x['load']['latency_ms']['p50']:.0f}",
            f"**{x['cpu_ms_per_job']:.2f}**",
            *(f"{per.get(c, 0.0):.2f}" for c in components),
            f"{x['cpu_ms_per_job_outside_triton']:.2f}",
            f"{x['sink_cpu_ms_per_job']:.2f}",
            *(f"{x['spans_per_job'].get(name, 0):.2f}" for name in SERVICES),
            f"{x['cpu']['other_processes_pct']:.0f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Means per mode", "", "| " + " | ".join(head[1:-1]) + " |", "|" + "---|" * (len(head) - 2)]
    for mode in modes_of(runs):
        m = s["by_mode"][mode]
        cells = [
            mode,
            f"{m['jobs_per_s']:.1f}",
            f"{m['p50_ms']:.0f}",
            f"**{m['cpu_ms_per_job']:.2f}**",
            *(f"{m['cpu_ms_per_job_by_component'].get(c, 0.0):.2f}" for c in components),
            f"{m['cpu_ms_per_job_outside_triton']:.2f}",
            f"{m['sink_cpu_ms_per_job']:.2f}",
            *(f"{m['spans_per_job'].get(name, 0):.2f}" for name in SERVICES),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    last_on = [x for x in runs if x["mode"] == "on"][-1]
    lines += ["", f"## Spans per job by name (round {last_on['round']}, on)", "", "| service | span | per job |"]
    lines.append("|---|---|---|")
    for service, by_name in sorted(last_on["spans_per_job_by_name"].items()):
        lines += [f"| {service} | `{name}` | {count:.2f} |" for name, count in sorted(by_name.items())]
    lines += [
        "",
        "## How to read this",
        "",
        "- CPU ms per job: user + system time from /proc of each component's session (`procs.CpuMeter`, as",
        "  bench/run.py reads it) over the load generator's warm-up and measured window, divided by the jobs",
        "  submitted in both (its request count: one request per job while `Prefer: wait` answers with the",
        "  result, `loadgen.jobs_of`, as bench/run.py counts them). Components are read",
        "  to 0.1 CPU s, so short runs give coarse per-job figures.",
        "  `clients` is the load generator; `sink` is the local collector (bench/otlp_sink.py), not counted in the",
        '  total: a real collector runs elsewhere. It is part of "others\' CPU", the share of the machine that',
        "  processes outside the measured components used.",
        '- "on": `OTEL_EXPORTER_OTLP_ENDPOINT` names the collector for the API, the dispatcher and Triton '
        f'({r["otel_env_on"] or {}}); "off": no `OTEL_*` variable at all.',
        "- spans/job: spans per `service.name` that reached the collector between the end of the warm-up and the",
        "  end of the measured load (each read once nothing had arrived for the batch delay + 1.5 s), over the",
        '  same jobs. The bench fails if any of aic-api, aic-dispatcher and triton sent none in "on", or anything',
        '  arrived in "off".',
        "- Every run starts its own stack, so off and on meet the same start-up state; on a shared machine compare",
        '  only runs of the same invocation, and mind "others\' CPU".',
        "",
    ]
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path) -> list[Path]:
    """tracing-latest.{json,md} and a timestamped copy, as report.write names run.py's results."""
    out.mkdir(parents=True, exist_ok=True)
    text, page = json.dumps(result, indent=2) + "\n", markdown(result)
    written = []
    for name in ("tracing-latest", f"tracing-{time.strftime('%Y%m%d-%H%M%S')}"):
        for suffix, content in ((".json", text), (".md", page)):
            (out / f"{name}{suffix}").write_text(content)
            written.append(out / f"{name}{suffix}")
    return written


def main() -> int:
    args = arguments()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    user_otel = {name: value for name, value in os.environ.items() if name.startswith("OTEL_")}
    base_settings = aic_settings.load(aic_settings.TritonSettings)
    ensure_default_model(base_settings.model_repository, ("python",))
    photo_dir = args.work / "photos"
    photo_set = photos.write(photo_dir)
    sink = Sink(args.work)
    runs: list[dict[str, Any]] = []
    otel_env_on: dict[str, str] = {}
    user_pythonpath = os.environ.get("PYTHONPATH")
    baseline = worktree(args.baseline, args.work / "baseline") if args.baseline else None
    modes = (BASELINE_MODE, *MODES) if baseline else MODES
    try:
        for index in range(args.rounds):
            for mode in modes:
                otel_env = set_tracing(mode, sink.endpoint, user_otel, args.bsp_schedule_delay_ms)
                set_code(baseline if mode == BASELINE_MODE else None, user_pythonpath)
                otel_env_on = otel_env or otel_env_on
                print(f"tracing: round {index + 1} {mode}: starting Triton, redis, API, dispatcher", flush=True)
                runs.append(one_run(args, mode, index, sink, base_settings, otel_env, photo_dir))
                x = runs[-1]
                print(
                    f"tracing: round {index + 1} {mode}: {x['load']['jobs_per_s']} jobs/s, {x['cpu_ms_per_job']} CPU "
                    f"ms per job ({x['cpu_ms_per_job_outside_triton']} outside Triton), spans per job "
                    f"{x['spans_per_job'] or '-'}; others used {x['cpu']['other_processes_pct']}% of the CPU",
                    flush=True,
                )
    except TracingCheckError as exc:
        raise SystemExit(f"tracing: FAILED: {exc}") from exc
    finally:
        set_tracing("off", sink.endpoint, user_otel, None)
        os.environ.update(user_otel)
        set_code(None, user_pythonpath)
        if baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False)
        sink_totals = sink.stop()
    result = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "command": " ".join([".venv/bin/python bench/tracing.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg())},
        "rounds": args.rounds,
        "clients": args.clients,
        "warmup_s": args.warmup_s,
        "duration_s": args.duration_s,
        "otel_env_on": otel_env_on,
        "baseline": args.baseline,
        "photos": photos.describe(photo_set),
        "runs": runs,
        "summary": summary(runs),
        "sink_totals": sink_totals,
    }
    for path in write(result, args.out):
        print(f"tracing: wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    print(markdown(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
