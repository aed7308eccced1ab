"""Before and after one change: CPU per job of every component, the code of a git ref against this checkout.

    .venv/bin/python bench/compare.py --ref HEAD~1 [--rounds 3] [--duration-s 20]
    .venv/bin/python bench/compare.py --before-redis="--save '' --appendonly yes"   # Redis settings, same code

Every round starts the whole stack twice from scratch, alternating "before" and "after", as bench/tracing.py does
(Triton, a redis-server, `aic api`, one `aic dispatcher`, loaded by bench/loadgen.py with multipart uploads;
``procs.CpuMeter`` reads each component's CPU from /proc, ended children included). "before" runs the API and the
dispatcher of ``--ref`` (a worktree, its packages first on ``PYTHONPATH``, this venv) and/or, with
``--before-redis``, a redis-server started with those options instead of ``aic.store.connection.PERSISTENCE``. No
``OTEL_*`` variable reaches any process. The machine's speed drifts between runs (10-30 % within minutes on a shared
one): read the differences between neighbouring runs, and the means over rounds. Writes
bench/results/compare-latest.{md,json} and a timestamped copy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import photos  # noqa: E402
import procs  # noqa: E402
import tracing  # noqa: E402
from aic.core import settings as aic_settings  # noqa: E402
from aic.local.modelbuild import ensure_default_model  # noqa: E402

COMPONENTS = ("triton", "dispatcher", "api", "redis", "clients")


def arguments() -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--ref", default=None, help="the git ref whose API and dispatcher run as 'before'")
    cli.add_argument("--before-redis", default=None, help="'before': redis-server with these options")
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--clients", type=int, default=32)
    cli.add_argument("--poll-ms", type=int, default=50)
    cli.add_argument("--warmup-s", type=float, default=5.0, help="load generator's warm-up (measured)")
    cli.add_argument("--duration-s", type=float, default=20.0)
    cli.add_argument("--work", type=Path, default=BENCH.parent / ".bench" / "compare")
    cli.add_argument("--out", type=Path, default=BENCH / "results")
    args = cli.parse_args()
    if args.ref is None and args.before_redis is None:
        cli.error("say what 'before' is: --ref, --before-redis or both")
    args.bsp_schedule_delay_ms = 0  # tracing.one_run's wait for spans: none can come
    args.dispatchers = 1  # run.start_service's option: one `aic dispatcher`
    return args


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_mode: dict[str, dict[str, float]] = {}
    for mode in ("before", "after"):
        mine = [r for r in runs if r["mode"] == mode]
        by_mode[mode] = {
            "jobs_per_s": tracing.mean([float(r["load"]["jobs_per_s"]) for r in mine]),
            "cpu_ms_per_job": tracing.mean([float(r["cpu_ms_per_job"]) for r in mine]),
            "outside_triton": tracing.mean([float(r["cpu_ms_per_job_outside_triton"]) for r in mine]),
            **{
                c: tracing.mean([float(r["cpu_ms_per_job_by_component"].get(c, 0.0)) for r in mine]) for c in COMPONENTS
            },
        }
    change = {k: round(by_mode["after"][k] - by_mode["before"][k], 2) for k in by_mode["after"]}
    return {"by_mode": by_mode, "after_minus_before": change}


def markdown(result: dict[str, Any]) -> str:
    head = ["round", "code", "jobs/s", "CPU ms/job", *COMPONENTS, "outside Triton", "others' CPU"]
    lines = [
        f"# Before and after ({result['started_at']})",
        "",
        f"`{result['command']}`: before = {result['before']}; after = this checkout. CPU ms per job.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in result["runs"]:
        parts = r["cpu_ms_per_job_by_component"]
        row = [r["round"], r["mode"], r["load"]["jobs_per_s"], r["cpu_ms_per_job"]]
        row += [parts.get(c, 0.0) for c in COMPONENTS]
        row += [r["cpu_ms_per_job_outside_triton"], f"{r['cpu']['other_processes_pct']}%"]
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    for mode, means in result["summary"]["by_mode"].items():
        row = ["mean", mode, means["jobs_per_s"], means["cpu_ms_per_job"], *[means[c] for c in COMPONENTS]]
        lines.append("| " + " | ".join(str(v) for v in [*row, means["outside_triton"], ""]) + " |")
    change = result["summary"]["after_minus_before"]
    row = ["", "after - before", change["jobs_per_s"], change["cpu_ms_per_job"], *[change[c] for c in COMPONENTS]]
    lines.append("| " + " | ".join(str(v) for v in [*row, change["outside_triton"], ""]) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = arguments()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    base_settings = aic_settings.load(aic_settings.TritonSettings)
    ensure_default_model(base_settings.model_repository, ("python",))
    photo_dir = args.work / "photos"
    photos.write(photo_dir)
    otel = {name: value for name, value in os.environ.items() if name.startswith("OTEL_")}
    user_pythonpath = os.environ.get("PYTHONPATH")
    redis_after = list(procs.REDIS_PERSISTENCE)
    redis_before = shlex.split(args.before_redis) if args.before_redis is not None else redis_after
    baseline = tracing.worktree(args.ref, args.work / "baseline") if args.ref is not None else None
    sink = tracing.Sink(args.work)  # one_run's collector: it proves that no span was sent
    runs: list[dict[str, Any]] = []
    try:
        for index in range(args.rounds):
            for mode in ("before", "after"):
                tracing.set_tracing("off", sink.endpoint, otel, None)
                tracing.set_code(baseline if mode == "before" else None, user_pythonpath)
                args.redis_options = redis_before if mode == "before" else redis_after
                runs.append(tracing.one_run(args, mode, index, sink, base_settings, {}, photo_dir))
                r = runs[-1]
                print(
                    f"compare: round {index + 1} {mode}: {r['load']['jobs_per_s']} jobs/s, {r['cpu_ms_per_job']} CPU "
                    f"ms per job {r['cpu_ms_per_job_by_component']}",
                    flush=True,
                )
    finally:
        os.environ.update(otel)
        tracing.set_code(None, user_pythonpath)
        if baseline is not None:
            remove = ["git", "-C", str(BENCH.parent), "worktree", "remove", "--force", str(baseline)]
            subprocess.run(remove, check=False)
        sink.stop()
    code = f"the code of {args.ref}" if args.ref is not None else "this checkout's code"
    before = code + (f", redis-server {args.before_redis}" if args.before_redis is not None else "")
    result = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "command": " ".join([".venv/bin/python bench/compare.py", *map(shlex.quote, sys.argv[1:])]),
        "before": before,
        "runs": runs,
        "summary": summary(runs),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("compare-latest", f"compare-{time.strftime('%Y%m%d-%H%M%S')}"):
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(markdown(result))
    print(markdown(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
