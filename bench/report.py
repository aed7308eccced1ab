"""The benchmark's results as JSON and a markdown page: bench/results/latest.{json,md} plus a timestamped copy."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def write(result: dict[str, Any], out: Path, latest: str = "latest") -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S") + latest.removeprefix("latest")
    text = json.dumps(result, indent=2) + "\n"
    page = markdown(result)
    for name in (latest, stamp):
        (out / f"{name}.json").write_text(text)
        (out / f"{name}.md").write_text(page)


def markdown(r: dict[str, Any]) -> str:
    best = r["best"]
    lat = [x["b"]["latency_ms"] for x in r["rounds"]]
    p = {k: round(sum(x[k] for x in lat) / len(lat), 1) for k in ("p50", "p95", "p99")}
    clients = r["rounds"][0]["b"]["clients"]
    last = r["rounds"][-1]
    lines = [
        f"# Benchmark {r['started_at']}",
        "",
        f"`{r['command']}` on {r['machine']['cpus']} CPU cores; {len(r['rounds'])} rounds alternating (a) and (b), "
        f"{r['elapsed_s']:.0f} s in all.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| (a) raw Triton, perf_analyzer, preprocessed input, batch {best['batch']} x concurrency "
        f"{best['concurrency']} (best of the sweep) | **{r['a_inferences_per_s']:.1f} inferences/s** |",
        f"| (b) whole service end to end, {clients} clients, JPEGs 320-3,000 px, submit → result "
        f"| **{r['b_jobs_per_s']:.1f} jobs/s** |",
        f"| (b) latency p50 / p95 / p99 (mean over rounds) | {p['p50']:.0f} / {p['p95']:.0f} / {p['p99']:.0f} ms |",
        f"| **(b) / (a)** | **{r['ratio_b_over_a']:.2f}** (per round: "
        f"{', '.join(f'{x:.2f}' for x in r['ratio_per_round'])}) |",
        f"| CPU per inference in (a) / CPU per job in (b), all our processes (last round) "
        f"| {last['cpu_ms_per_inference_a']:.0f} / {last['cpu_ms_per_job_b']:.0f} ms |",
        f"| **CPU-normalised (b) / (a)** (about what a machine of our own would show; a lower bound) "
        f"| **{r['cpu_ratio']:.2f}** |",
        f"| (b) with the image itself as the body (`Content-Type: image/jpeg`) | {r['b_raw_jobs_per_s']:.1f} jobs/s, "
        f"{last['raw_body']['cpu_ms_per_job_b']:.0f} ms CPU per job (last round) |",
        f"| **CPU-normalised (b) / (a), raw-body uploads** | **{r['cpu_ratio_raw']:.2f}** |",
        "",
        "## Rounds",
        "",
        "| round | (a) inf/s | (b) jobs/s | ratio | p50 / p95 / p99 ms | failed+errors | others' CPU (a) / (b) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, x in enumerate(r["rounds"], 1):
        b, q = x["b"], x["b"]["latency_ms"]
        lines.append(
            f"| {i} | {x['a']['inferences_per_s']:.1f} | {b['jobs_per_s']:.1f} | "
            f"{b['jobs_per_s'] / x['a']['inferences_per_s']:.2f} | {q['p50']:.0f} / {q['p95']:.0f} / {q['p99']:.0f} | "
            f"{b['failed'] + b['errors']} | {x['cpu_a']['other_processes_pct']:.0f}% / "
            f"{x['cpu_b']['other_processes_pct']:.0f}% |"
        )
    lines += [
        "",
        "## Where the CPU goes in (b), last round",
        "",
        "| component | CPU ms per inference in (a) | CPU ms per job, form uploads | CPU ms per job, raw-body uploads |",
        "|---|---|---|---|",
    ]
    per_job, per_raw = last["cpu_ms_per_job_b_by_component"], last["raw_body"]["cpu_ms_per_job_b_by_component"]
    per_a = last["cpu_ms_per_inference_a_by_component"]
    lines += [f"| {name} | {per_a.get(name, 0)} | {per_job[name]} | {per_raw[name]} |" for name in per_job]
    cores = r["machine"]["cpus"]
    lines += [
        f"| (wall clock of the form run {last['cpu_b']['wall_s']} s: {cores * last['cpu_b']['wall_s']:.0f} CPU s on "
        f"{cores} cores) ||||",
        "",
        "## Sizing the service in front of a GPU Triton (last round)",
        "",
        "Jobs per second one core carries, from the CPU per job above: of dispatcher work (decoding included), and",
        "of all the service's work outside Triton (API + dispatcher + redis). On a GPU node the model's CPU share",
        "vanishes and these decide how many cores keep one GPU fed.",
        "",
        "| uploads | dispatcher: jobs/s per core | API + dispatcher + redis: jobs/s per core |",
        "|---|---|---|",
    ]
    for label, part in (("form", last), ("raw body", last["raw_body"])):
        size = part["sizing"]
        lines.append(f"| {label} | {size['dispatcher_jobs_per_core_s']} | {size['service_jobs_per_core_s']} |")
    lines += ["", "## (a) sweep: perf_analyzer inferences/s", ""]
    batches = sorted({m["batch"] for m in r["sweep"]})
    conc = sorted({m["concurrency"] for m in r["sweep"]})
    lines += ["| batch \\ concurrency | " + " | ".join(str(c) for c in conc) + " |", "|---" * (len(conc) + 1) + "|"]
    cell = {(m["batch"], m["concurrency"]): m["inferences_per_s"] for m in r["sweep"]}
    for b in batches:
        lines.append(f"| {b} | " + " | ".join(f"{cell.get((b, c), 0):.1f}" for c in conc) + " |")
    place = r.get("placement") or {}
    if place and place["triton_cpus"] != place["other_cpus"]:
        where = [
            f"- Triton (onnxruntime) runs alone on CPU {_cpus(place['triton_cpus'])}; redis-server, the API, the",
            f"  dispatcher(s), the load generator and perf_analyzer on CPU {_cpus(place['other_cpus'])}, as separate",
            "  pods would be placed. (a) and (b) give Triton the same cores, so the wall-clock ratio says whether",
            "  the service keeps Triton as busy as perf_analyzer does. The CPU-normalised ratio still counts every",
            "  process, as if all shared the same cores.",
        ]
    else:
        where = [
            "- Everything runs on the same cores: Triton (onnxruntime), redis-server, the API, the dispatcher(s), the",
            "  load generator and perf_analyzer.",
        ]
    lines += [
        "",
        "## How to read this",
        "",
        *where,
        "- (a) and (b) alternate within one run so that both meet the same neighbours; a ratio across runs or",
        "  machines means nothing. \"Others' CPU\" is what processes outside this benchmark used (other people's",
        "  builds and tests), as a share of all cores.",
        "- When others load the machine, the scheduler shares it per thread: the service's many processes take",
        "  more of it than Triton alone does in (a), which flatters the wall-clock ratio. The CPU-normalised ratio",
        "  does not depend on that: (CPU per inference in (a)) / (CPU per job in (b)), all our processes counted",
        "  (perf_analyzer in (a), the load generator in (b)). On a machine of our own, where Triton alone keeps",
        "  every core busy, the wall-clock ratio would be about that, or better where (a) leaves cores idle.",
        f"- Service tuning in force: {r['tuning_env'] or 'defaults'}; dispatchers: {r['dispatchers']}.",
        f"- Photos: {r['photos']['count']} JPEGs, {r['photos']['bytes_mean'] // 1000} KB on average; "
        f"chelsea (Egyptian cat) top-1 right: {r['rounds'][-1]['b']['chelsea_top1_egyptian_cat']} in the last round.",
        "",
    ]
    return "\n".join(lines)


def _cpus(cpus: list[int]) -> str:
    return ", ".join(str(c) for c in cpus)
