"""Where the time goes: py-spy samples of the API, a dispatcher and Triton's python stub under load.

Saves py-spy's collapsed stacks (``*.folded``: flamegraph.pl or speedscope.app draw them) and a text summary
(``*.txt``: the functions with the most samples, inclusive and self). Idle threads are not sampled, so the
shares are of the time each process was busy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

RATE_HZ = 97


def stub_pid(triton_session: int) -> int | None:
    """The python-backend stub (it runs model.py) among the Triton server's processes."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[3]) == triton_session and b"python_backend_stub" in cmdline:
            return int(entry.name)
    return None


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy is missing: pip install -e '.[bench]'")
    return found


def record(sessions: dict[int, str], seconds: float, out: Path, under_load: Callable[[], Any]) -> dict[str, str]:
    """Profile each target for ``seconds`` while ``under_load()`` runs; returns name -> summary file."""
    out.mkdir(parents=True, exist_ok=True)
    targets = {
        "api": next(p for p, n in sessions.items() if n == "api"),
        "dispatcher": next(p for p, n in sessions.items() if n == "dispatcher"),
    }
    triton = next(p for p, n in sessions.items() if n == "triton")
    stub = stub_pid(triton)
    if stub is not None:
        targets["triton-python-stub"] = stub
    recorders = {
        name: subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                str(RATE_HZ),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out / f"{name}.folded"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for name, pid in targets.items()
    }
    under_load()
    written: dict[str, str] = {}
    for name, recorder in recorders.items():
        _, err = recorder.communicate(timeout=seconds + 60)
        folded = out / f"{name}.folded"
        if recorder.returncode != 0 or not folded.exists():
            print(f"bench: py-spy on {name} failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
            continue
        summary = out / f"{name}.txt"
        summary.write_text(summarise(folded.read_text(), name))
        written[name] = str(summary.relative_to(out.parent.parent.parent))
    return written


def summarise(folded: str, title: str, top: int = 30) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [
        f"# {title}: {total} busy samples at {RATE_HZ} Hz (py-spy, idle threads excluded)",
        "",
        "## inclusive (the function or what it called)",
    ]
    lines += [f"{100 * c / max(total, 1):5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    lines += ["", "## self (in the function itself)"]
    lines += [f"{100 * c / max(total, 1):5.1f}%  {f}" for f, c in own.most_common(top)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    """'func (/long/path/site-packages/pkg/mod.py:12)' -> 'func (pkg/mod.py)'; thread frames stay as they are."""
    name, _, where = frame.partition(" (")
    if not where:
        return frame
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    return f"{name} ({'/'.join(parts[-2:])})"
