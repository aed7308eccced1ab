"""A client generated from our OpenAPI document by openapi-python-client, used as a new user would: submit (a form
and a raw body) with its defaults, poll, list and read a result, against the real stack.

The generator runs from a virtualenv of its own (``GENERATOR``, pinned): it pins httpx and typer below the versions
the project uses, so installing it beside them would downgrade both. The generated code runs in the test's own
interpreter (it needs only httpx and attrs).
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from conftest import API_KEY, Stack
from helpers import jpeg

pytestmark = pytest.mark.integration

GENERATOR = "openapi-python-client==0.29.1"
PACKAGE = "aic_generated_client"


def generator() -> Path:
    """The generator's executable, installed once per version into a cache folder."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aic-tests"
    home = cache / GENERATOR.replace("==", "-")
    executable = home / "bin" / "openapi-python-client"
    if not executable.exists():
        venv.create(home, with_pip=True, clear=True)
        subprocess.run([str(home / "bin" / "pip"), "install", "-q", GENERATOR], check=True, timeout=600)
    return executable


@pytest.fixture(scope="module")
def generated(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    root = stack.base_url.removesuffix("/api/v1")
    work = tmp_path_factory.mktemp("generated")
    document = work / "openapi.json"
    document.write_bytes(httpx.get(f"{root}/schema/openapi.json").raise_for_status().content)
    run = subprocess.run(
        [str(generator()), "generate", "--path", str(document), "--output-path", str(work / PACKAGE), "--meta", "none"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},  # its ruff pass
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    # what it leaves out: only the image/* raw bodies (it has one binary body type: application/octet-stream)
    warnings = run.stdout + run.stderr
    skipped = {line for line in warnings.splitlines() if line.startswith("Unsupported content type")}
    assert skipped <= {f"Unsupported content type image/{kind}" for kind in ("jpeg", "png", "webp")}, skipped
    assert "application/octet-stream" not in skipped and "multipart" not in " ".join(skipped)
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def api(generated: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{generated.__name__}.{name}")


def finished(generated: ModuleType, client: Any, job_id: str) -> Any:
    get_status = api(generated, "api.jobs.get_status")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = get_status.sync(job_id, client=client)
        if status.status.value in ("completed", "failed", "cancelled"):
            return status
        time.sleep(0.1)
    raise TimeoutError(job_id)


def test_a_generated_client_submits_polls_lists_and_reads_results_with_its_defaults(
    stack: Stack, generated: ModuleType
) -> None:
    since = datetime.now(UTC).isoformat()
    types = api(generated, "types")
    classify = api(generated, "api.jobs.classify")
    body_type = api(generated, "models.classify_files_body").ClassifyFilesBody
    photo = jpeg()
    client = generated.AuthenticatedClient(base_url=stack.base_url.removesuffix("/api/v1"), token=API_KEY)
    with client:
        form = classify.sync_detailed(
            client=client, body=body_type(file=types.File(payload=io.BytesIO(photo), file_name="cat.jpg"))
        )
        assert form.status_code == 200, form.content
        raw = classify.sync_detailed(client=client, body=types.File(payload=io.BytesIO(photo)), deadline_s=600)
        assert raw.status_code == 200, raw.content
        job_ids = [form.parsed.job_id, raw.parsed.job_id]
        for job_id in job_ids:
            assert finished(generated, client, job_id).status.value == "completed"
        listed = api(generated, "api.jobs.list_jobs").sync(client=client, created_after=since)
        assert [job.job_id for job in listed.jobs] == job_ids[::-1]
        assert listed.jobs[1].priority == "normal" and listed.jobs[1].model_version == "latest"  # the form's defaults
        result = api(generated, "api.jobs.get_result").sync(job_ids[0], client=client)
        assert result.predictions[0].class_id in range(281, 286)  # the cat
        usage = api(generated, "api.usage.get_usage").sync(client=client)
        assert usage.tenants[0].totals.completed >= 2
