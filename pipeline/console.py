"""Console output of the tasks: progress lines on a terminal, silence in CI.

This is separate from logging: logging records what the pipeline decided,
the console shows a person where a long run is.
"""

from __future__ import annotations

import os
import sys
import time


def progress_enabled() -> bool:
    """Show progress only on an interactive terminal and never under CI=true."""
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() != "true"


class StepPrinter:
    """Print numbered step lines with the time since the run started."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.count = 0
        self.enabled = progress_enabled() if enabled is None else enabled
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        self.count += 1
        if self.enabled:
            elapsed = time.monotonic() - self.started
            print(f"[{self.count}/{self.total} {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)
