"""The kernel side: compile fill_limit.c with gcc and run it against the live kernel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from scenario import Phase, SideResult

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "fill_limit.c"
BUILD = HERE / "build"
BINARY = BUILD / "fill_limit"


class KernelUnavailable(Exception):
    """The kernel side cannot run here (not Linux, no gcc, compile failed); says why."""


def build() -> Path:
    """Compile fill_limit.c into benchmarks/build/ unless an up-to-date binary is there."""
    if not sys.platform.startswith("linux"):
        raise KernelUnavailable(f"not Linux (sys.platform={sys.platform!r})")
    gcc = shutil.which("gcc")
    if gcc is None:
        raise KernelUnavailable("gcc not found on PATH")
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    BUILD.mkdir(exist_ok=True)
    cmd = [gcc, "-O2", "-Wall", "-Wextra", "-o", str(BINARY), str(SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KernelUnavailable(f"gcc failed: {proc.stderr.strip()[:500]}")
    return BINARY


def run(binary: Path, npages: int) -> SideResult:
    """Run the scenario once in a fresh process and parse its JSON."""
    proc = subprocess.run(
        [str(binary), str(npages)], capture_output=True, text=True, check=False, timeout=600
    )
    if proc.returncode != 0:
        raise KernelUnavailable(
            f"fill_limit exited {proc.returncode}: {proc.stderr.strip()[:500]}"
            f" {proc.stdout.strip()[:200]}"
        )
    data = json.loads(proc.stdout)
    phases = {
        name: Phase(calls=int(p["calls"]), seconds=int(p["ns"]) / 1e9)
        for name, p in data["phases"].items()
    }
    return SideResult(
        side="kernel",
        npages=int(data["npages"]),
        max_map_count=int(data["max_map_count"]),
        map_count={k: int(v) for k, v in data["map_count"].items()},
        fill_errno=str(data["fill_errno"]),
        phases=phases,
        split_ns=[int(x) for x in data["split_ns"]],
        maps_bytes=int(data["phases"]["maps"]["bytes"]),
    )
