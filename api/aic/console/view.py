"""How jobs look at a terminal: a live rich progress bar per job (stage and percent from the event stream), then
a top-k table; or, when piped or asked with ``--json``, one JSON line per job and nothing else on stdout."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table

from aic.client import Result, Status
from aic.client.models import Usage


@dataclass
class Outcome:
    """One job as the command saw it end (or, with ``--no-wait``, as it was submitted)."""

    file: str
    job_id: str
    status: Status | None = None
    result: Result | None = None
    submitted_status: str = "pending"

    def record(self, top_k: int) -> dict[str, Any]:
        """The job's JSON line."""
        line: dict[str, Any] = {"file": self.file, "job_id": self.job_id}
        if self.status is None:
            line["status"] = self.submitted_status
            return line
        line["status"] = str(self.status.status)
        if self.result is not None:
            line["predictions"] = [msgspec.to_builtins(p) for p in self.result.predictions[:top_k]]
            line["model_version"] = self.result.model_version
        if self.status.error_code or self.status.error_message:
            line["error_code"], line["error_message"] = self.status.error_code, self.status.error_message
        return line


class View(Protocol):
    def submitted(self, outcome: Outcome) -> None: ...
    def progress(self, outcome: Outcome, status: Status) -> None: ...
    def finished(self, outcomes: list[Outcome], *, waited: bool) -> None: ...
    def show_status(self, status: Status) -> None: ...
    def show_result(self, result: Result) -> None: ...
    def show_jobs(self, statuses: list[Status]) -> None: ...
    def show_usage(self, usage: Usage) -> None: ...
    def erased(self, job_id: str) -> None: ...
    def error(self, message: str) -> None: ...
    def close(self) -> None: ...


class JsonView:
    """JSON lines on stdout (one per job), messages for people on stderr."""

    def __init__(self, top_k: int, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.top_k = top_k
        self.out, self.err = out or sys.stdout, err or sys.stderr

    def _line(self, value: Any) -> None:
        self.out.write(json.dumps(value) + "\n")
        self.out.flush()

    def submitted(self, outcome: Outcome) -> None:
        self.err.write(f"aic: {outcome.file}: job {outcome.job_id}\n")
        self.err.flush()

    def progress(self, outcome: Outcome, status: Status) -> None:
        pass  # a pipe gets the end of each job, not its stages

    def finished(self, outcomes: list[Outcome], *, waited: bool) -> None:
        for outcome in outcomes:
            self._line(outcome.record(self.top_k))

    def show_status(self, status: Status) -> None:
        self._line(msgspec.to_builtins(status))

    def show_result(self, result: Result) -> None:
        body = msgspec.to_builtins(result)
        body["predictions"] = body["predictions"][: self.top_k]
        self._line(body)

    def show_jobs(self, statuses: list[Status]) -> None:
        for status in statuses:
            self._line(msgspec.to_builtins(status))

    def show_usage(self, usage: Usage) -> None:
        self._line(msgspec.to_builtins(usage))

    def erased(self, job_id: str) -> None:
        self._line({"job_id": job_id, "erased": True})

    def error(self, message: str) -> None:
        self.err.write(f"aic: {message}\n")
        self.err.flush()

    def close(self) -> None:
        pass


class TerminalView:
    """A progress bar per job while they run, then a table of each job's top-k predictions."""

    def __init__(self, top_k: int, console: Console | None = None) -> None:
        self.top_k = top_k
        self.console = console or Console()
        self.errors = Console(stderr=True)
        self.bars = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[stage]}"),
            console=self.console,
        )
        self.tasks: dict[str, TaskID] = {}

    def submitted(self, outcome: Outcome) -> None:
        if not self.tasks:
            self.bars.start()
        label = f"{escape(outcome.file)} [dim]{outcome.job_id[:8]}[/]"
        self.tasks[outcome.job_id] = self.bars.add_task(label, total=100, stage=outcome.submitted_status)

    def progress(self, outcome: Outcome, status: Status) -> None:
        stage = str(status.status) if status.status.terminal else f"{status.status}: {status.stage or 'queued'}"
        self.bars.update(self.tasks[outcome.job_id], completed=status.progress, stage=stage)

    def finished(self, outcomes: list[Outcome], *, waited: bool) -> None:
        self.bars.stop()
        if not waited:
            for outcome in outcomes:
                self.console.print(
                    f"{escape(outcome.file)}: job [bold]{outcome.job_id}[/] ({outcome.submitted_status})"
                )
            return
        for outcome in outcomes:
            if outcome.result is not None:
                self._table(f"{outcome.file} · {outcome.result.model_version}", outcome.result)
            elif outcome.status is not None:
                reason = escape(outcome.status.error_message or "")
                code = escape(f" [{outcome.status.error_code}]") if outcome.status.error_code else ""
                self.console.print(f"[red]{escape(outcome.file)}: {outcome.status.status}{code}[/] {reason}".rstrip())

    def _table(self, title: str, result: Result) -> None:
        table = Table(title=escape(title), title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("class")
        table.add_column("confidence", justify="right")
        table.add_column("", min_width=10)
        for rank, p in enumerate(result.predictions[: self.top_k], start=1):
            table.add_row(
                str(rank), escape(p.class_name), f"{p.confidence:.1%}", "█" * max(1, round(p.confidence * 20))
            )
        self.console.print(table)

    def show_status(self, status: Status) -> None:
        line = f"{status.job_id}: [bold]{status.status}[/] {status.progress}% ({status.stage or '-'})"
        if status.error_code:
            line += f" [red]{escape(f'{status.error_code}: {status.error_message}')}[/]"
        self.console.print(line)

    def show_result(self, result: Result) -> None:
        self._table(f"{result.job_id} · {result.model_version}", result)

    def show_jobs(self, statuses: list[Status]) -> None:
        table = Table(title=f"{len(statuses)} jobs, newest first", title_justify="left")
        for column in ("job", "status", "priority", "model", "created", "error"):
            table.add_column(column)
        for s in statuses:
            error = escape(f"{s.error_code}: {s.error_message}") if s.error_code else ""
            created = (s.created_at or "")[:19].replace("T", " ")
            table.add_row(s.job_id, str(s.status), s.priority or "", escape(s.model_version or ""), created, error)
        self.console.print(table)

    def show_usage(self, usage: Usage) -> None:
        counters = ("submitted", "completed", "failed", "cancelled", "timed_out", "image_bytes", "inference_ms")
        for tenant in usage.tenants:
            table = Table(title=f"{escape(tenant.tenant)} · {usage.from_date} to {usage.to_date}", title_justify="left")
            table.add_column("day")
            for name in counters:
                table.add_column(name.replace("_", " "), justify="right")
            for day in tenant.days or []:
                table.add_row(day.date, *(_count(getattr(day, name)) for name in counters))
            table.add_row("total", *(_count(getattr(tenant.totals, name)) for name in counters), style="bold")
            self.console.print(table)

    def erased(self, job_id: str) -> None:
        self.console.print(f"{job_id}: erased")

    def error(self, message: str) -> None:
        self.errors.print(f"[red]aic:[/] {escape(message)}", highlight=False)

    def close(self) -> None:
        self.bars.stop()


def _count(value: float) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
