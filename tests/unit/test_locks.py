"""The hashed locks agree with pyproject.toml: every requirement (the runtime's and every extra's) is pinned, with
hashes, at a version its range allows, and the runtime lock is the full lock's runtime part, hash for hash. A range
changed in pyproject.toml without `make lock` fails here, not at someone's next fresh install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# the platform the locks are resolved for (the Makefile's `lock`): Debian bookworm's CPython on x86_64 Linux
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})*)", re.MULTILINE)


def pins(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    """{package: (version, hashes)} of a lock file."""
    text = (ROOT / name).read_text()
    found = {
        canonicalize_name(package): (version, frozenset(re.findall(r"sha256:([0-9a-f]{64})", hashes)))
        for package, version, hashes in PIN.findall(text)
    }
    assert len(found) == len(re.findall(r"^[A-Za-z0-9]", text, re.MULTILINE)), f"{name}: a line that is no hashed pin"
    return found


def requirements(*extras: str) -> list[Requirement]:
    lines = list(PROJECT["dependencies"])
    for extra in extras:
        lines += PROJECT["optional-dependencies"][extra]
    wanted = [Requirement(line) for line in lines]
    return [r for r in wanted if r.marker is None or r.marker.evaluate(TARGET)]


def test_every_pin_carries_hashes() -> None:
    for name in ("requirements.lock", "requirements-runtime.lock", "requirements-torch.lock"):
        locked = pins(name)
        assert locked, name
        assert all(hashes for _, hashes in locked.values()), name


@pytest.mark.parametrize(
    ("lock", "extras"),
    [
        ("requirements-runtime.lock", ()),
        ("requirements.lock", tuple(PROJECT["optional-dependencies"])),
    ],
)
def test_each_requirement_of_pyproject_is_pinned_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    locked = pins(lock) | pins("requirements-torch.lock")  # torch: its own lock (see the Makefile)
    for requirement in requirements(*extras):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {lock}: run `make lock`"
        version, _ = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}: {requirement}"
        )


def test_torch_is_only_in_its_own_lock_and_is_the_cpu_build() -> None:
    assert "torch" not in pins("requirements.lock") and "torch" not in pins("requirements-runtime.lock")
    [(version, hashes)] = pins("requirements-torch.lock").values()
    assert version.endswith("+cpu") and len(hashes) == 1


def test_the_runtime_lock_is_the_full_locks_runtime_part() -> None:
    full, runtime = pins("requirements.lock"), pins("requirements-runtime.lock")
    assert {name: full.get(name) for name in runtime} == runtime
