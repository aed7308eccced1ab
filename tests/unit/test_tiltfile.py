"""The Tiltfile, evaluated by a real Starlark interpreter against stub builtins that record every call (no tilt
binary exists for this machine): what it builds, syncs, deploys and forwards must exist and match the chart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlark_go import Starlark

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "async-image-classifier"
Call = tuple[str, tuple[Any, ...], dict[str, Any]]


def evaluate() -> list[Call]:
    calls: list[Call] = []

    def builtin(name: str, returns: Callable[..., Any] | None = None) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, args, kwargs))
            return returns(*args, **kwargs) if returns else {"builtin": name, "args": list(args)}

        return record

    names = ["allow_k8s_contexts", "docker_build", "k8s_yaml", "k8s_resource", "local_resource", "sync", "run"]
    stubs: dict[str, Any] = {name: builtin(name) for name in names}
    stubs["helm"] = builtin("helm", lambda *a, **k: "<rendered chart>")
    stubs["port_forward"] = builtin("port_forward", lambda local, remote=None, name="": [local, remote or local, name])
    stubs["TRIGGER_MODE_MANUAL"] = "manual"
    Starlark(globals=stubs).exec((ROOT / "Tiltfile").read_text(), filename="Tiltfile")
    return calls


@pytest.fixture(scope="module")
def calls() -> list[Call]:
    return evaluate()


def named(calls: list[Call], name: str) -> list[Call]:
    return [c for c in calls if c[0] == name]


def test_the_images_are_the_charts_and_built_from_dockerfile_stages(calls: list[Call]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    builds = {args[0]: kwargs for _, args, kwargs in named(calls, "docker_build")}
    assert set(builds) == {values["image"]["repository"], values["defaultModel"]["image"]["repository"]}
    dockerfile = (ROOT / "Dockerfile").read_text()
    for kwargs in builds.values():
        assert f" AS {kwargs['target']}\n" in dockerfile
        assert all((ROOT / path).exists() for path in kwargs["only"])


def test_live_update_syncs_sources_that_exist_and_reinstalls_on_pyproject_change(calls: list[Call]) -> None:
    service = next(kwargs for _, args, kwargs in named(calls, "docker_build") if kwargs["target"] == "dev")
    steps = service["live_update"]
    syncs = [step["args"] for step in steps if step["builtin"] == "sync"]
    assert syncs and all((ROOT / local).exists() and remote.startswith("/src/") for local, remote in syncs)
    assert {"api", "operator"} <= {local for local, _ in syncs}
    [(_, args, kwargs)] = named(calls, "run")
    assert "pip install" in args[0] and kwargs["trigger"] == ["pyproject.toml"]


def test_the_chart_is_deployed_with_dev_values_that_exist_and_render(calls: list[Call]) -> None:
    [(_, args, kwargs)] = named(calls, "helm")
    assert (ROOT / args[0]) == CHART
    assert all((ROOT / v).is_file() for v in kwargs["values"])
    dev = yaml.safe_load((ROOT / kwargs["values"][0]).read_text())
    assert dev["devReload"] is True and dev["containerSecurityContext"]["readOnlyRootFilesystem"] is False
    assert named(calls, "k8s_yaml")


def test_resources_are_the_charts_workloads_with_port_forwards_and_dependencies(calls: list[Call]) -> None:
    release = next(kwargs["name"] for _, _, kwargs in named(calls, "helm"))
    prefix = f"{release}-async-image-classifier-"
    resources = {args[0]: kwargs for _, args, kwargs in named(calls, "k8s_resource")}
    templates = {p.name.split("-")[0] for p in (CHART / "templates").glob("*-deployment.yaml")}
    assert {name.removeprefix(prefix) for name in resources} >= templates | {"redis", "default-model"}
    forwards = {f[0] for kwargs in resources.values() for f in kwargs.get("port_forwards", [])}
    assert forwards == {8000, 8002}  # the API and Triton's metrics
    for kwargs in resources.values():
        assert all(dep in resources for dep in kwargs.get("resource_deps", []))
    [(_, args, kwargs)] = named(calls, "local_resource")
    assert args[0] == "default-model" and kwargs["trigger_mode"] == "manual"


def context_paths(stage_names: set[str]) -> set[str]:
    """What the named Dockerfile stages take from the build context: COPY sources and bind mounts without `from=`."""
    paths: set[str] = set()
    stage = ""
    for line in (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            stage = words[-1]
        if stage not in stage_names:
            continue
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            paths.update(w.rstrip("/") for w in words[1:-1] if not w.startswith("--"))
        for word in words:
            if word.startswith("--mount=type=bind,") and ",from=" not in word:
                paths.add(dict(kv.split("=", 1) for kv in word[len("--mount=") :].split(","))["source"])
    return paths


@pytest.mark.parametrize("target", ["dev", "model-builder"])
def test_tilts_build_context_holds_every_file_the_targets_stages_read(calls: list[Call], target: str) -> None:
    build = next(kwargs for _, _, kwargs in named(calls, "docker_build") if kwargs["target"] == target)
    needed = context_paths({"build", "runtime", target})
    assert "requirements-runtime.lock" in needed
    assert needed <= set(build["only"]), needed - set(build["only"])
