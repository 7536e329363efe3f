"""Timing helpers shared by the scale benchmarks.

Each figure is the best of several rounds, in wall-clock seconds and in CPU
seconds of this process and its children. On a shared machine the CPU time
varies less than the wall time, so both are printed.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))


@dataclass(frozen=True)
class Timing:
    """The best wall-clock and CPU seconds over the rounds of one measured call."""

    wall: float
    cpu: float


def cpu_seconds() -> float:
    """Return the user and system CPU seconds of this process and its waited-for children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def measure(function: Callable[[], object], rounds: int) -> Timing:
    """Call `function` `rounds` times and return the best wall and CPU seconds."""
    walls = []
    cpus = []
    for _ in range(rounds):
        cpu_start = cpu_seconds()
        wall_start = time.perf_counter()
        function()
        walls.append(time.perf_counter() - wall_start)
        cpus.append(cpu_seconds() - cpu_start)
    return Timing(min(walls), min(cpus))


def run_tool(*command: str, cwd: Path | None = None) -> None:
    """Run an external tool, raising CalledProcessError when it fails."""
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)


def print_comparison(name: str, ours: Timing, reference_name: str, reference: Timing) -> None:
    """Print both timings and the ratios ours / reference."""
    print(f"{name:<40} wall {ours.wall:8.3f} s   cpu {ours.cpu:8.3f} s")
    print(f"{reference_name:<40} wall {reference.wall:8.3f} s   cpu {reference.cpu:8.3f} s")
    print(
        f"ratio {name} / {reference_name}:"
        f" wall {_ratio(ours.wall, reference.wall)}, cpu {_ratio(ours.cpu, reference.cpu)}"
    )


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference > 0 else "n/a (reference took no time)"


def print_machine() -> None:
    """Print the machine and versions that the figures were measured with."""
    git_version = subprocess.run(
        ["git", "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
        f" {platform.release()}; Python {platform.python_version()}; {git_version}"
    )
