"""``aic``: the one command in front of every process of the product, and the composition root that wires
each process from the packages below it (the only module of ``aic`` that imports ``aic_operator``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from aic.core import malloc
from aic.core import settings as settings_mod
from aic.core.enums import JobStatus, Priority
from aic.core.settings import (
    ApiSettings,
    DispatcherSettings,
    MetricsSettings,
    ObjectStoreSettings,
    RedisSettings,
    TritonSettings,
    WebhookSettings,
)


def _logging() -> None:
    from aic.core import logs

    try:
        api = settings_mod.load(ApiSettings)
        secrets = logs.settings_secrets(api, settings_mod.load(RedisSettings), settings_mod.load(WebhookSettings))
        logs.configure(api.log_level, api.log_format, stream=sys.stderr, secrets=secrets)
        logging.captureWarnings(True)  # warnings too become lines of the chosen format, redacted
    except settings_mod.SettingsError as exc:  # main() catches these only around the command itself
        print(f"aic: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_api(_: argparse.Namespace) -> int:
    from aic.core import telemetry
    from aic.http.app import create_app
    from aic.http.server import serve

    malloc.tune()  # uploads of a few hundred KB: reused from the heap, not mapped and faulted in each time
    telemetry.setup("aic-api")  # before the app: its tracing plugin is added only while spans are exported
    from aic.store import layout

    api = settings_mod.load(ApiSettings)
    redis_settings = settings_mod.load(RedisSettings)
    asyncio.run(layout.check_settings(redis_settings))  # a layout mismatch: one line and exit 2, not a traceback
    serve(create_app(api, redis_settings), api)
    return 0


async def _dispatch() -> None:
    """One dispatcher process: the dispatcher and, beside it on the same loop, the webhook delivery worker."""
    from aic.core import metrics, telemetry
    from aic.core.errors import StoreUnavailable
    from aic.dispatch.dispatcher import Dispatcher, new_worker_id
    from aic.dispatch.health import Health
    from aic.dispatch.sweep import sweep_uploads
    from aic.store import layout
    from aic.store.connection import connect
    from aic.store.objects import connect_uploads
    from aic.store.queue import QueueConsumer, QueueStats
    from aic.store.routes import RouteStore
    from aic.store.sealing import Sealer
    from aic.store.transitions import JobTransitions
    from aic.store.webhooks import WebhookStore
    from aic.store.workers import Heartbeats
    from aic.triton.client import TritonRunner
    from aic.webhooks.worker import WebhookWorker

    telemetry.setup("aic-dispatcher")  # before connecting: redis-py is instrumented while spans are exported
    dispatch_settings = settings_mod.load(DispatcherSettings)
    health = Health(dispatch_settings.loop_stall_s)  # /livez and /readyz, answered from the metrics thread
    metrics.serve(settings_mod.load(MetricsSettings), "dispatcher", {"/livez": health.live, "/readyz": health.ready})
    triton = settings_mod.load(TritonSettings)
    redis = connect(settings_mod.load(RedisSettings), blocking_reads=True)
    # another key layout than the data's: refused (LayoutMismatch, exit 2), here or, while Redis is away, when the
    # dispatcher's start waits for it (``QueueConsumer.ensure_groups``): its probes answer meanwhile
    with contextlib.suppress(StoreUnavailable):
        await layout.check_once(redis)
    runner = TritonRunner(triton.triton_url, triton.triton_timeout_s)
    worker_id = new_worker_id()
    object_store = settings_mod.load(ObjectStoreSettings)
    uploads = connect_uploads(object_store)
    dispatcher = Dispatcher(
        queue=QueueConsumer(redis, worker_id),
        stats=QueueStats(redis),
        jobs=JobTransitions(redis, uploads),
        routes=RouteStore(redis),
        heartbeats=Heartbeats(redis),
        runner=runner,
        settings=dispatch_settings,
        worker_id=worker_id,
        health=health,
    )
    webhook_settings = settings_mod.load(WebhookSettings)
    webhooks = WebhookWorker(
        WebhookStore(redis, Sealer.for_webhooks(webhook_settings)), webhook_settings, consumer=worker_id
    )
    webhook_task = asyncio.create_task(webhooks.run())  # beside inference on the same loop, only awaiting I/O
    sweep_task = asyncio.create_task(sweep_uploads(dispatcher.jobs, object_store)) if uploads else None
    loop = asyncio.get_running_loop()

    def stop() -> None:
        # both at once: their idle reads time out in parallel, so a stop takes one read's wait, not two; what the
        # dispatcher finishes during its grace is delivered from the outbox by any worker, this one or another
        dispatcher.stop()
        webhooks.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await dispatcher.run()
    finally:
        webhooks.stop()
        if sweep_task is not None:
            sweep_task.cancel()
        await asyncio.gather(webhook_task, *([sweep_task] if sweep_task else []), return_exceptions=True)
        await runner.close()
        await redis.aclose()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a dependency on Linux): asyncio's API at less CPU per event (bench/)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def cmd_dispatcher(_: argparse.Namespace) -> int:
    malloc.tune()  # uploads and batch tensors: reused from the heap, not mapped and faulted in each time
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_dispatch())
    return 0


def cmd_triton(_: argparse.Namespace) -> int:
    from aic.local.triton import LocalTriton

    return LocalTriton(settings_mod.load(TritonSettings)).run_forever()


def cmd_model_build(args: argparse.Namespace) -> int:
    from aic.local.modelbuild import build_default_model

    triton = settings_mod.load(TritonSettings)
    repository = Path(args.repository) if args.repository else triton.model_repository
    model_dir = build_default_model(repository, triton.triton_backends, force=args.force)
    print(f"model ready: {model_dir}")
    return 0


def cmd_up(_: argparse.Namespace) -> int:
    from aic.local.up import run_up

    return run_up()


def cmd_operator(_: argparse.Namespace) -> int:
    from aic_operator.main import run

    return run()


def cmd_models_apply(args: argparse.Namespace) -> int:
    from aic_operator.local import apply_file

    return apply_file(Path(args.filename), args.wait)


def cmd_models_delete(args: argparse.Namespace) -> int:
    from aic_operator.local import delete

    return delete(args.names)


def cmd_models_status(args: argparse.Namespace) -> int:
    from aic_operator.local import status

    return status(args.json)


def cmd_models_register(args: argparse.Namespace) -> int:
    from aic_operator.register import register

    names = register(Path(args.repository), args.source_root, args.namespace)
    for name in names:
        print(f"modelversion/{name} registered")
    if not names:
        print(f"aic: no model (model.json) in {args.repository}", file=sys.stderr)
        return 2
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from aic.local.selftest import main as selftest

    key = os.environ.get("AIC_API_KEY", "")
    if not key:
        print("aic: selftest needs AIC_API_KEY", file=sys.stderr)
        return 2
    from aic.console.config import api_url

    return selftest(api_url(args.url), key, args.expect)


def cmd_classify(args: argparse.Namespace) -> int:
    from aic.console.commands import ClassifyOptions, classify_command

    options = ClassifyOptions(wait=args.wait, priority=args.priority, model=args.model, top_k=args.top)
    return classify_command(args.photos, options, url=args.url, key=args.key, as_json=args.json)


def cmd_jobs(args: argparse.Namespace) -> int:
    from aic.console.commands import JobsOptions, jobs_command

    options = JobsOptions(args.action, args.job_id, status=args.status, limit=args.limit, purge=args.purge)
    return jobs_command(options, url=args.url, key=args.key, as_json=args.json, top_k=args.top)


def cmd_usage(args: argparse.Namespace) -> int:
    from aic.console.commands import usage_command

    return usage_command(args.start, args.end, url=args.url, key=args.key, as_json=args.json)


def _limit(raw: str) -> int:
    value = int(raw) if raw.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number of jobs, at least 1")
    return value


def _day(raw: str) -> str:
    try:
        return datetime.date.fromisoformat(raw).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError("must be a day, YYYY-MM-DD") from None


def _top_k(raw: str) -> int:
    value = int(raw) if raw.isdigit() else 0
    if not 1 <= value <= 5:
        raise argparse.ArgumentTypeError("must be 1 to 5 (the service returns the top 5)")
    return value


def _client_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help="the API prefix, http://HOST:8000/api/v1 (a server root gets /api/v1 appended; else AIC_URL, else the "
        "config file, else the local one)",
    )
    common.add_argument("--key", help="the API key (else AIC_API_KEY, else api_key in ~/.config/aic/config.toml)")
    common.add_argument("--json", action="store_true", help="JSON lines (the default when stdout is not a terminal)")
    common.add_argument("--top", type=_top_k, default=5, metavar="K", help="predictions shown per job (1-5)")
    classify = sub.add_parser(
        "classify", parents=[common], help="classify photos: live progress, then the top-k of each"
    )
    classify.add_argument(
        "photos", nargs="+", metavar="PHOTO", help="JPEG, PNG or WebP files (several: a batch), or https:// URLs"
    )
    classify.add_argument(
        "--wait", action=argparse.BooleanOptionalAction, default=True, help="follow the jobs to the end (default)"
    )
    classify.add_argument("--priority", choices=[p.value for p in Priority], help="queue priority (normal)")
    classify.add_argument("--model", help="a model_version alias listed by GET /models (latest)")
    classify.set_defaults(func=cmd_classify, client_command=True)
    jobs = sub.add_parser(
        "jobs", help="your jobs: list them; one job's status, result, cancel or delete"
    ).add_subparsers(dest="action", required=True)
    listing = jobs.add_parser("list", parents=[common], help="your jobs, newest first")
    listing.add_argument("--status", choices=[s.value for s in JobStatus], help="only jobs in this status")
    listing.add_argument("--limit", type=_limit, default=20, metavar="N", help="at most N jobs (20)")
    listing.set_defaults(func=cmd_jobs, client_command=True, job_id=None, purge=False)
    for action, summary in (("status", "its status"), ("result", "its predictions"), ("cancel", "cancel it")):
        one = jobs.add_parser(action, parents=[common], help=f"one job: {summary}")
        one.add_argument("job_id", metavar="ID")
        one.set_defaults(func=cmd_jobs, client_command=True, status=None, limit=20, purge=False)
    remove = jobs.add_parser("delete", parents=[common], help="one job: cancel it, or with --purge erase it")
    remove.add_argument("job_id", metavar="ID")
    remove.add_argument("--purge", action="store_true", help="erase the job and its data (else: cancel it)")
    remove.set_defaults(func=cmd_jobs, client_command=True, status=None, limit=20)
    usage = sub.add_parser("usage", parents=[common], help="your usage per day: jobs, image bytes, inference time")
    usage.add_argument("--from", dest="start", type=_day, metavar="D", help="first UTC day (30 days ago)")
    usage.add_argument("--to", dest="end", type=_day, metavar="D", help="last UTC day (today)")
    usage.set_defaults(func=cmd_usage, client_command=True)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="aic", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the whole product on this machine").set_defaults(func=cmd_up)
    sub.add_parser("api", help="run the HTTP API").set_defaults(func=cmd_api)
    sub.add_parser("dispatcher", help="run one dispatcher").set_defaults(func=cmd_dispatcher)
    sub.add_parser("triton", help="run the local Triton server (python backend)").set_defaults(func=cmd_triton)
    model = sub.add_parser("model", help="the default model").add_subparsers(dest="action", required=True)
    build = model.add_parser("build", help="build the default model into MODEL_REPOSITORY")
    build.add_argument("--force", action="store_true", help="rebuild even when the cached build is current")
    build.add_argument("--repository", help="target repository (default: MODEL_REPOSITORY)")
    build.set_defaults(func=cmd_model_build)
    sub.add_parser("operator", help="run the ModelVersion operator (kopf)").set_defaults(func=cmd_operator)
    models = sub.add_parser("models", help="local ModelVersions").add_subparsers(dest="verb", required=True)
    apply = models.add_parser("apply", help="reconcile the ModelVersions of a YAML file (as kubectl apply would)")
    apply.add_argument("-f", "--filename", required=True, help="YAML file with ModelVersion documents ('-': stdin)")
    apply.add_argument(
        "--wait", type=float, default=60.0, metavar="SECONDS", help="wait this long for a Triton still starting"
    )
    apply.set_defaults(func=cmd_models_apply)
    remove = models.add_parser("delete", help="unload ModelVersions and remove their files and routes")
    remove.add_argument("names", nargs="+", help="ModelVersion names")
    remove.set_defaults(func=cmd_models_delete)
    show = models.add_parser("status", help="weights, shadows' agreement and rollouts, from Redis (last 15 min)")
    show.add_argument("--json", action="store_true", help="the same as GET /models shows an admin")
    show.set_defaults(func=cmd_models_status)
    register = models.add_parser("register", help="make the models of a built repository ModelVersions of a cluster")
    register.add_argument("repository", help="a model repository (what `aic model build --repository` wrote)")
    register.add_argument(
        "--source-root", required=True, help="the repository as the operator reads it: pvc://CLAIM/PATH"
    )
    register.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "default"), help="(POD_NAMESPACE)")
    register.set_defaults(func=cmd_models_register)
    test = sub.add_parser("selftest", help="classify the bundled photo through a running API (AIC_API_KEY)")
    test.add_argument("--url", default="http://127.0.0.1:8000/api/v1", help="the API prefix (or the server root)")
    test.add_argument("--expect", default="Egyptian cat", help="the top-1 class name that passes")
    test.set_defaults(func=cmd_selftest)
    _client_parsers(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not getattr(args, "client_command", False):
        _logging()  # the client commands speak for themselves; httpx's request log would only clutter them
    try:
        return int(args.func(args))
    except settings_mod.SettingsError as exc:
        print(f"aic: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
