"""containers/pip_mounts.py: the host pip configuration `make images` mounts into the builds."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pip_mounts", ROOT / "containers" / "pip_mounts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pip_mounts = load()


def test_the_environment_wins_over_files_and_unknown_options_are_left_out() -> None:
    listing = "global.cert='/a.crt'\n:env:.cert='/b.crt'\nglobal.user-agent='x'\nsite.find-links='/w'\n"
    assert pip_mounts.parse(listing) == {"cert": "/b.crt", "find-links": "/w"}


def test_local_files_are_mounted_missing_ones_dropped_and_remote_urls_kept(tmp_path: Path) -> None:
    cert = tmp_path / "ca.crt"
    cert.write_text("x")
    (tmp_path / "pypi" / "simple").mkdir(parents=True)
    options = {
        "cert": str(cert),
        "find-links": f"{tmp_path / 'absent'} https://example.org/wheels",
        "extra-index-url": f"file://{tmp_path / 'pypi' / 'simple'}",
        "default-timeout": "60",
    }
    kept, volumes = pip_mounts.mounts(options)
    assert kept == {
        "cert": str(cert),
        "find-links": "https://example.org/wheels",
        "extra-index-url": f"file://{tmp_path / 'pypi' / 'simple'}",
        "default-timeout": "60",
    }
    # a file:// index links to the wheels beside it: its parent folder is mounted
    assert volumes == [cert, tmp_path / "pypi"]


def test_the_torch_folder_is_the_find_links_folder_that_holds_the_pinned_wheel(tmp_path: Path) -> None:
    empty, wheels = tmp_path / "empty", tmp_path / "wheels"
    empty.mkdir()
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    assert pip_mounts.torch_folder({"find-links": f"{empty} {wheels}"}) == wheels
    assert pip_mounts.torch_folder({"find-links": str(empty)}) is None
