"""Raw Triton throughput with NVIDIA's perf_analyzer (from the tritonclient 2.41 wheel, see install_perf_analyzer.sh).

Each measurement is a fixed number of fixed-length time windows: on a shared 2-core machine perf_analyzer's own
stability rule rarely holds, and an unstable run would report nothing. The figure kept is the mean of the windows.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PASS = re.compile(r"Pass \[\d+\] throughput: ([0-9.]+) infer/sec\. Avg latency: ([0-9]+) usec")


@dataclass(frozen=True)
class Measurement:
    batch: int
    concurrency: int
    windows_per_s: tuple[float, ...]
    latency_ms: float

    @property
    def inferences_per_s(self) -> float:
        return float(np.mean(self.windows_per_s)) if self.windows_per_s else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "batch": self.batch,
            "concurrency": self.concurrency,
            "inferences_per_s": round(self.inferences_per_s, 2),
            "windows_inferences_per_s": [round(w, 2) for w in self.windows_per_s],
            "batch_latency_ms": round(self.latency_ms, 1),
        }


@dataclass(frozen=True)
class PerfAnalyzer:
    binary: Path
    grpc_url: str
    model: str
    input_dir: Path
    window_ms: int = 3000
    windows: int = 3

    def command(self, batch: int, concurrency: int) -> list[str]:
        return [
            str(self.binary),
            *("-m", self.model, "-i", "grpc", "-u", self.grpc_url, "-b", str(batch)),
            f"--concurrency-range={concurrency}",
            "--measurement-mode=time_windows",
            f"--measurement-interval={self.window_ms}",
            f"--max-trials={self.windows}",
            "--stability-percentage=999",  # accept the windows as they come; the mean is reported
            f"--input-data={self.input_dir}",
            "-v",
        ]

    def measure(self, batch: int, concurrency: int) -> Measurement:
        env = {**os.environ, "LD_LIBRARY_PATH": str(self.binary.parent.parent / "lib")}
        done = subprocess.run(
            self.command(batch, concurrency), env=env, capture_output=True, text=True, timeout=300, check=False
        )
        passes = [(float(t), int(lat)) for t, lat in _PASS.findall(done.stdout)]
        if not passes:
            raise RuntimeError(f"perf_analyzer measured nothing (exit {done.returncode}):\n{done.stdout}{done.stderr}")
        return Measurement(
            batch, concurrency, tuple(t for t, _ in passes), float(np.mean([lat for _, lat in passes])) / 1000
        )
