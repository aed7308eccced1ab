"""``aic.client``'s job list, erasure and usage, and ``aic jobs list|delete`` / ``aic usage``, against the real
stack."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aic.client import AsyncClient, Client, NotFound
from conftest import API_KEY, Stack
from helpers import jpeg
from test_client_cli import aic, cli_env, json_lines

pytestmark = pytest.mark.integration


def test_list_jobs_follows_cursors_past_one_page_and_stops_at_the_limit(quiet_stack: Stack) -> None:
    since = datetime.now(UTC)
    with Client(quiet_stack.base_url, API_KEY) as client:
        ids = [client.submit(jpeg(), deadline_s=3600, retention_s=600).job_id for _ in range(5)]
        client.cancel(ids[1])
        every = [s.job_id for s in client.list_jobs(created_after=since)]
        first_two = [s.job_id for s in client.list_jobs(created_after=since, limit=2)]
        cancelled = [s.job_id for s in client.list_jobs(created_after=since, status="cancelled")]
        status = client.status(ids[0])
    assert every == ids[::-1]
    assert first_two == ids[:2:-1][:2] == [ids[4], ids[3]]
    assert cancelled == [ids[1]]
    assert status.deadline_at is not None and status.created_at is not None


def test_list_jobs_pages_with_the_wire_cursor(quiet_stack: Stack) -> None:
    since = datetime.now(UTC)
    with Client(quiet_stack.base_url, API_KEY) as client:
        ids = [client.submit(jpeg()).job_id for _ in range(3)]
        with Client(quiet_stack.base_url, API_KEY) as paging:
            paging_params = {"created_after": since.isoformat(), "limit": "2"}
            first = paging._send("GET", "/jobs", params=paging_params).json()
        assert first["next_cursor"] is not None and len(first["jobs"]) == 2
        assert [s.job_id for s in client.list_jobs(created_after=since)] == ids[::-1]


def test_the_async_client_lists_purges_and_reads_usage(quiet_stack: Stack) -> None:
    async def scenario() -> tuple[list[str], str, int, int]:
        since = datetime.now(UTC)
        async with AsyncClient(quiet_stack.base_url, API_KEY) as client:
            before = (await client.usage()).tenants[0].totals.cancelled
            job = await client.submit(jpeg())
            listed = [s.job_id async for s in client.list_jobs(created_after=since)]
            await client.purge(job.job_id)
            try:
                await client.status(job.job_id)
                gone = "still there"
            except NotFound as exc:
                gone = exc.error.error
            after = (await client.usage()).tenants[0].totals.cancelled
            return [*listed, job.job_id], gone, before, after

    listed, gone, before, after = asyncio.run(scenario())
    assert listed[0] == listed[-1]
    assert gone == "JOB_NOT_FOUND"
    assert after == before + 1  # purging a queued job cancels it first


def test_aic_jobs_list_delete_purge_and_usage(quiet_stack: Stack, tmp_path: Path) -> None:
    env = cli_env(tmp_path, AIC_URL=quiet_stack.base_url, AIC_API_KEY=API_KEY)
    with Client(quiet_stack.base_url, API_KEY) as client:
        ids = [client.submit(jpeg()).job_id for _ in range(3)]
    listed = aic("jobs", "list", "--limit", "2", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [line["job_id"] for line in json_lines(listed.stdout)] == [ids[2], ids[1]]
    pending = aic("jobs", "list", "--status", "pending", "--limit", "100", "--json", env=env)
    assert {line["status"] for line in json_lines(pending.stdout)} == {"pending"}
    erased = aic("jobs", "delete", "--purge", ids[2], "--json", env=env)
    assert erased.returncode == 0, erased.stderr
    assert json_lines(erased.stdout) == [{"job_id": ids[2], "erased": True}]
    again = aic("jobs", "status", ids[2], "--json", env=env)
    assert again.returncode == 2 and "JOB_NOT_FOUND" in again.stderr
    cancelled = aic("jobs", "delete", ids[1], "--json", env=env)  # without --purge: a cancel
    assert json_lines(cancelled.stdout)[0]["status"] == "cancelled"
    today = datetime.now(UTC).date().isoformat()
    usage = aic("usage", "--from", today, "--to", today, "--json", env=env)
    assert usage.returncode == 0, usage.stderr
    [report] = json_lines(usage.stdout)
    assert report["from"] == report["to"] == today and report["tenants"][0]["totals"]["submitted"] >= 3
    table = aic("usage", env=env)  # not a terminal: JSON lines too
    assert table.returncode == 0 and json_lines(table.stdout)[0]["group_by"] == "day"


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "list", "some-id"),
        ("jobs", "delete"),
        ("usage", "--from", "yesterday"),
        ("jobs", "list", "--limit", "0"),
    ],
)
def test_aic_refuses_bad_jobs_and_usage_arguments_with_exit_2(args: tuple[str, ...], tmp_path: Path) -> None:
    done = aic(*args, env=cli_env(tmp_path, AIC_URL="http://127.0.0.1:9/api/v1", AIC_API_KEY=API_KEY))
    assert done.returncode == 2, (done.stdout, done.stderr)
