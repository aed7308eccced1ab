"""The images, without a container engine: the Dockerfile parsed (stages, pinned base, non-root user, labels, what
it copies), then its install recipe run for real, wheels into a fresh venv, and `aic api` served from it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import venv
from pathlib import Path

import httpx
import pytest
import yaml
from aic.local.ports import free_port
from dockerfile_parse import DockerfileParser

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "async-image-classifier"


def stages() -> dict[str, list[dict[str, str]]]:
    """Instructions of each stage of the Dockerfile, by stage name."""
    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    found: dict[str, list[dict[str, str]]] = {}
    current = ""
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            current = instruction["value"].split(" AS ")[-1].strip()
            found[current] = []
        if current:
            found[current].append(instruction)
    return found


def values(stage: list[dict[str, str]], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def test_the_dockerfile_has_a_runtime_a_model_builder_a_dev_and_a_triton_cpu_stage() -> None:
    assert list(stages()) == ["build", "runtime", "model-builder", "dev", "triton-cpu"]
    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    global_args = dict(
        i["value"].split("=", 1) for i in parser.structure if i["instruction"] == "ARG" and "=" in i["value"]
    )
    base = global_args["PYTHON_IMAGE"]
    assert all(i["value"].startswith("${PYTHON_IMAGE}") or i["value"].startswith("runtime ")
               for i in parser.structure if i["instruction"] == "FROM")  # fmt: skip
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base), base


@pytest.mark.parametrize("stage", ["runtime", "model-builder", "dev", "triton-cpu"])
def test_final_stages_run_as_a_numeric_non_root_user_with_aic_as_entry_point(stage: str) -> None:
    found = stages()
    users = values(found[stage], "USER")
    assert users and re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", users[-1]), users
    entry = values(found["runtime"], "ENTRYPOINT")
    assert entry == ['["aic"]']


def test_the_runtime_carries_oci_labels_and_no_compiler() -> None:
    runtime = stages()["runtime"]
    labels = " ".join(values(runtime, "LABEL"))
    for label in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{label}=" in labels
    recipe = " ".join(values(runtime, "RUN"))
    assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get)\b", recipe)
    assert "pip install --require-hashes -r /opt/aic/requirements-runtime.lock" in recipe
    assert "pip install --no-index --no-deps /opt/aic/wheels/async_image_classifier-*.whl" in recipe
    # copied, not bind-mounted: buildah keeps a bind mount's content out of a step's cache key
    assert "requirements-runtime.lock /opt/aic/requirements-runtime.lock" in values(runtime, "COPY")
    assert "--from=build /wheels /opt/aic/wheels" in values(runtime, "COPY")


def test_every_copied_source_exists_and_the_context_is_limited() -> None:
    for stage in stages().values():
        for value in values(stage, "COPY"):
            tokens = shlex.split(value)
            if any(t.startswith("--from") for t in tokens):
                continue  # from another stage, not the context
            for source in [t for t in tokens if not t.startswith("--")][:-1]:
                assert (ROOT / source).exists(), source
    ignore = [line for line in (ROOT / ".dockerignore").read_text().split("\n") if line and not line.startswith("#")]
    assert ignore[0] == "*" and {"!api/", "!operator/", "!pyproject.toml"} <= set(ignore)


def test_the_chart_and_the_tiltfile_name_the_images_the_dockerfile_builds() -> None:
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    header = (ROOT / "Dockerfile").read_text()
    for repository in (chart["image"]["repository"], chart["defaultModel"]["image"]["repository"]):
        assert f"-t {repository}:" in header
        assert f"'{repository}'" in (ROOT / "Tiltfile").read_text()


def test_the_install_recipe_gives_a_venv_whose_aic_serves_the_api(tmp_path: Path) -> None:
    """The build stage's `pip wheel --no-deps --wheel-dir /wheels .`, then the runtime stage's hashed install of
    requirements-runtime.lock and the project's wheel with --no-deps into a fresh venv: nothing from this checkout but
    the wheel and the lock."""
    found = stages()
    assert " python -m pip wheel --no-deps --wheel-dir /wheels ." in " ".join(values(found["build"], "RUN"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
        timeout=900,
    )
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q"]
    lock = ROOT / "requirements-runtime.lock"
    subprocess.run([*pip, "--require-hashes", "-r", str(lock)], check=True, timeout=600)
    [wheel] = wheels.glob("async_image_classifier-*.whl")
    subprocess.run([*pip, "--no-index", "--no-deps", str(wheel)], check=True, timeout=600)
    check = "from importlib import resources; assert resources.files('aic.local').joinpath('selftest.jpg').is_file()"
    subprocess.run([str(python), "-c", check], check=True, cwd=tmp_path)
    port = free_port()
    env = {
        "PATH": f"{target / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "API_PORT": str(port),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}",  # not needed for /livez: the API starts without Redis
    }
    api = subprocess.Popen([str(target / "bin" / "aic"), "api"], env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert api.poll() is None, (api.stderr.read() if api.stderr else b"").decode()
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert response.json() == {"status": "ok"}
        # the web page's files are package data: the installed package serves them
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        script = httpx.get(f"http://127.0.0.1:{port}/static/app.js", timeout=5)
        assert page.status_code == 200 and 'src="/static/app.js"' in page.text
        assert script.status_code == 200 and "WebSocket" in script.text
        assert not str(next(iter(target.glob("lib/python*/site-packages/aic")))).startswith(str(ROOT))
    finally:
        api.terminate()
        api.wait(15)
