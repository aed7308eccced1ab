"""``aic``: the one command in front of every process of the product."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from aic import settings as settings_mod
from aic.settings import ApiSettings, DispatcherSettings, RedisSettings, TritonSettings


def _logging() -> None:
    api = settings_mod.load(ApiSettings)
    logging.basicConfig(level=api.log_level.upper(), format=api.log_format, stream=sys.stderr)


def cmd_api(_: argparse.Namespace) -> int:
    import uvicorn

    from aic.app import create_app

    api = settings_mod.load(ApiSettings)
    app = create_app(api, settings_mod.load(RedisSettings))
    uvicorn.run(
        app,
        host=api.api_host,
        port=api.api_port,
        log_level=api.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
        # uvloop and httptools (dependencies): about a third less CPU per request than asyncio's loop and h11
        loop="auto",
        http="auto",
    )
    return 0


async def _dispatch() -> None:
    from aic.dispatcher import Dispatcher
    from aic.inference import TritonRunner
    from aic.redis_conn import connect

    triton = settings_mod.load(TritonSettings)
    redis = connect(settings_mod.load(RedisSettings), blocking_reads=True)
    runner = TritonRunner(triton.triton_url, triton.triton_timeout_s)
    dispatcher = Dispatcher(redis, runner, settings_mod.load(DispatcherSettings))
    from aic.webhook_worker import WebhookWorker

    webhooks = WebhookWorker(redis, settings_mod.load(settings_mod.WebhookSettings))
    webhook_task = asyncio.create_task(webhooks.run())  # beside inference on the same loop, only awaiting I/O
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, dispatcher.stop)
    try:
        await dispatcher.run()
    finally:
        webhooks.stop()
        await asyncio.gather(webhook_task, return_exceptions=True)
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
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_dispatch())
    return 0


def cmd_triton(_: argparse.Namespace) -> int:
    from aic.triton_local import LocalTriton

    return LocalTriton(settings_mod.load(TritonSettings)).run_forever()


def cmd_model_build(args: argparse.Namespace) -> int:
    from aic.modelbuild import build_default_model

    triton = settings_mod.load(TritonSettings)
    repository = Path(args.repository) if args.repository else triton.model_repository
    model_dir = build_default_model(repository, triton.triton_backends, force=args.force)
    print(f"model ready: {model_dir}")
    return 0


def cmd_up(_: argparse.Namespace) -> int:
    from aic.up import run_up

    return run_up()


def cmd_operator(_: argparse.Namespace) -> int:
    from aic_operator.main import run

    return run()


def cmd_models_apply(args: argparse.Namespace) -> int:
    from aic.localmodels import apply_file

    return apply_file(Path(args.filename))


def cmd_models_delete(args: argparse.Namespace) -> int:
    from aic.localmodels import delete

    return delete(args.names)


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
    apply.set_defaults(func=cmd_models_apply)
    remove = models.add_parser("delete", help="unload ModelVersions and remove their files and routes")
    remove.add_argument("names", nargs="+", help="ModelVersion names")
    remove.set_defaults(func=cmd_models_delete)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _logging()
    try:
        return int(args.func(args))
    except settings_mod.SettingsError as exc:
        print(f"aic: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
