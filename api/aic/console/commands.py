"""``aic classify`` and ``aic jobs``: validate the input, call the service through ``aic.client``, show what
happens, and end with an exit code scripts can rely on (``ExitCode``)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from aic.client import (
    ApiError,
    AsyncClient,
    AuthenticationError,
    BadRequest,
    Client,
    ClientError,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    ServiceUnreachable,
    Upload,
)
from aic.console.config import KEY_ENV, ConfigError, Target, config_path, resolve
from aic.console.view import JsonView, Outcome, TerminalView, View
from aic.core import images


class ExitCode(IntEnum):
    OK = 0
    """Every job completed (or, for ``jobs``, the request succeeded)."""
    JOB_FAILED = 1
    """A job failed or was cancelled (or a result was asked of a job that has none)."""
    BAD_INPUT = 2
    """Usage, or input refused: a missing or non-image file, a field the service refused, an unknown job."""
    AUTH = 3
    """No key, or a key (or token) the service refused."""
    UNREACHABLE = 4
    """No answer from the service, or it stayed unavailable (503) or rate limited (429) through the retries."""


BATCH_FILES = 10
"""Files per batch request (the service's default ``BATCH_MAX_FILES``); more are sent in several batches."""


@dataclass(frozen=True)
class ClassifyOptions:
    wait: bool = True
    priority: str | None = None
    model: str | None = None
    top_k: int = 5


class InputError(Exception):
    """A file given on the command line cannot be sent."""


def read_image(path: Path) -> Upload:
    """The file's bytes, if it looks like a JPEG, PNG or WebP (the service checks properly; this catches typos
    and text files before anything is uploaded)."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    if images.sniff(content) is None:
        raise InputError(f"{path}: not a JPEG, PNG or WebP image")
    return Upload(path.name, content)


def exit_code_of(exc: ClientError) -> ExitCode:
    if isinstance(exc, AuthenticationError):
        return ExitCode.AUTH
    if isinstance(exc, ServiceUnreachable | ServiceUnavailable | RateLimited):
        return ExitCode.UNREACHABLE
    if isinstance(exc, BadRequest | NotFound):
        return ExitCode.BAD_INPUT
    return ExitCode.JOB_FAILED


def describe(exc: ClientError) -> str:
    if isinstance(exc, ApiError):
        hint = f" (request {exc.error.request_id})" if exc.error.request_id else ""
        return f"{exc.status_code} {exc.error.error}: {exc.detail}{hint}"
    return str(exc)


def make_view(as_json: bool, top_k: int) -> View:
    return JsonView(top_k) if as_json or not sys.stdout.isatty() else TerminalView(top_k)


def classify_command(
    paths: Sequence[str], options: ClassifyOptions, *, url: str | None, key: str | None, as_json: bool
) -> ExitCode:
    """``aic classify``: the photos classified at the service that ``url``/``key`` (or their fallbacks) name."""
    view = make_view(as_json, options.top_k)
    target = target_or_exit(url, key, view)
    return target if isinstance(target, ExitCode) else classify(paths, options, target, view)


@dataclass(frozen=True)
class JobsOptions:
    """``aic jobs``: the action, its job id (all but ``list``), and the options of ``list`` and ``delete``."""

    action: str
    job_id: str | None = None
    status: str | None = None
    limit: int = 20
    purge: bool = False


def jobs_command(options: JobsOptions, *, url: str | None, key: str | None, as_json: bool, top_k: int) -> ExitCode:
    """``aic jobs status|result|cancel ID``, ``aic jobs list [--status S] [--limit N]``, ``aic jobs delete
    [--purge] ID`` (without ``--purge``: a cancel)."""
    view = make_view(as_json, top_k)
    if (options.action == "list") != (options.job_id is None):
        view.error("aic jobs list takes no ID" if options.job_id else f"aic jobs {options.action} needs a job ID")
        return ExitCode.BAD_INPUT
    target = target_or_exit(url, key, view)
    return target if isinstance(target, ExitCode) else jobs(options, target, view)


def usage_command(start: str | None, end: str | None, *, url: str | None, key: str | None, as_json: bool) -> ExitCode:
    """``aic usage [--from D --to D]``: the tenant's usage per day."""
    view = make_view(as_json, 5)
    target = target_or_exit(url, key, view)
    if isinstance(target, ExitCode):
        return target
    try:
        with Client(target.url, target.api_key) as client:
            view.show_usage(client.usage(start, end))
    except ClientError as exc:
        view.error(describe(exc))
        return exit_code_of(exc)
    return ExitCode.OK


def target_or_exit(url: str | None, key: str | None, view: View) -> Target | ExitCode:
    try:
        target = resolve(url, key)
    except ConfigError as exc:
        view.error(str(exc))
        return ExitCode.BAD_INPUT
    if not target.api_key:
        view.error(f"no API key: pass --key, set {KEY_ENV}, or put api_key in {config_path(os.environ)}")
        return ExitCode.AUTH
    return target


def classify(paths: Sequence[str], options: ClassifyOptions, target: Target, view: View) -> ExitCode:
    try:
        uploads = [p if p.startswith("https://") else read_image(Path(p)) for p in paths]
    except InputError as exc:
        view.error(str(exc))
        return ExitCode.BAD_INPUT
    try:
        outcomes = asyncio.run(_classify(uploads, options, target, view))
    except ClientError as exc:
        view.close()
        view.error(describe(exc))
        return exit_code_of(exc)
    except KeyboardInterrupt:
        view.close()  # the terminal gets its cursor back; the jobs go on at the service
        raise
    view.finished(outcomes, waited=options.wait)
    if not options.wait:
        return ExitCode.OK
    completed = all(o.status is not None and o.status.status == "completed" for o in outcomes)
    return ExitCode.OK if completed else ExitCode.JOB_FAILED


async def _classify(uploads: list[Upload | str], options: ClassifyOptions, target: Target, view: View) -> list[Outcome]:
    """Files in batches of ``BATCH_FILES``; an https URL (the service fetches it) or a lone file on its own."""
    async with AsyncClient(target.url, target.api_key) as client:
        outcomes: list[Outcome] = []
        for start in range(0, len(uploads), BATCH_FILES):
            chunk = uploads[start : start + BATCH_FILES]
            files = [item for item in chunk if isinstance(item, Upload)]
            if len(files) == len(chunk) > 1:
                jobs = await client.submit_batch(files, priority=options.priority, model_version=options.model)
            else:
                jobs = [
                    await client.submit(
                        item if isinstance(item, Upload) else None,
                        image_url=item if isinstance(item, str) else None,
                        priority=options.priority,
                        model_version=options.model,
                    )
                    for item in chunk
                ]
            for item, job in zip(chunk, jobs, strict=True):
                name = item.filename if isinstance(item, Upload) else item
                outcome = Outcome(name, job.job_id, submitted_status=str(job.status))
                outcomes.append(outcome)
                view.submitted(outcome)
        if options.wait:
            await asyncio.gather(*(_track(client, outcome, view) for outcome in outcomes))
        return outcomes


async def _track(client: AsyncClient, outcome: Outcome, view: View) -> None:
    async for status in client.follow(outcome.job_id):
        outcome.status = status
        view.progress(outcome, status)
    if outcome.status is not None and outcome.status.status == "completed":
        outcome.result = await client.result(outcome.job_id)


def jobs(options: JobsOptions, target: Target, view: View) -> ExitCode:
    action, job_id = options.action, options.job_id or ""
    try:
        with Client(target.url, target.api_key) as client:
            if action == "list":
                view.show_jobs(list(client.list_jobs(status=options.status, limit=options.limit)))
            elif action == "result":
                view.show_result(client.result(job_id))
            elif action == "delete" and options.purge:
                client.purge(job_id)
                view.erased(job_id)
            else:
                view.show_status(client.cancel(job_id) if action in ("cancel", "delete") else client.status(job_id))
    except ClientError as exc:
        view.error(describe(exc))
        return exit_code_of(exc)
    return ExitCode.OK
