"""Console output of the tasks: progress lines on a terminal, silence in CI.

This is separate from logging: logging records what the pipeline decided,
the console shows a person where a long run is.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Protocol, TextIO


def configure_logging() -> None:
    """Log to standard error at the level that PIPELINE_LOG names (default WARNING)."""
    level = os.environ.get("PIPELINE_LOG", "WARNING").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


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
            print(
                f"[{self.count}/{self.total} {elapsed:6.1f}s] {message}",
                file=sys.stderr,
                flush=True,
            )


class StepLine(Protocol):
    """A line that names the step a long task has reached, such as `Progress.status`."""

    def status(self, detail: str) -> None: ...


class Progress:
    """A counter line on standard error for a long loop, such as validating many items.

    The line is redrawn in place at most every `interval` seconds and ended
    with a line feed by `close`. Like StepPrinter it is shown only on an
    interactive terminal and never under CI=true, so logs and CI output stay clean.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        enabled: bool | None = None,
        interval: float = 0.1,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = progress_enabled() if enabled is None else enabled
        self.interval = interval
        self.stream = stream
        self._drawn_at: float | None = None
        self._width = 0
        # The samples of a dry-run report their steps from several threads at once.
        self._lock = threading.Lock()

    def start(self, total: int | None) -> None:
        """Reset the counter for a loop over `total` units (None when unknown)."""
        self.total = total
        self.done = 0

    def advance(self, count: int = 1, detail: str = "") -> None:
        """Count `count` more units done; `detail` names the unit being worked on."""
        with self._lock:
            self.done += count
            if not self.enabled:
                return
            now = time.monotonic()
            finished = self.total is not None and self.done >= self.total
            recent = self._drawn_at is not None and now - self._drawn_at < self.interval
            if recent and not finished:
                return
            self._drawn_at = now
            self._draw(detail)

    def status(self, detail: str) -> None:
        """Redraw the line now with `detail`, such as the step a unit has reached.

        Unlike `advance`, the interval does not apply: a step may run for
        minutes, and the line has to name it meanwhile.
        """
        with self._lock:
            if not self.enabled:
                return
            self._drawn_at = time.monotonic()
            self._draw(detail)

    def _draw(self, detail: str) -> None:
        if self.total:
            text = f"{self.label} {self.done}/{self.total} ({100 * self.done // self.total}%)"
        else:
            text = f"{self.label} {self.done}"
        if detail:
            text += f" {detail}"
        # Spaces cover the end of a longer line drawn before.
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        stream = self.stream or sys.stderr
        stream.write(f"\r{text}{padding}")
        stream.flush()

    def close(self) -> None:
        """End the counter line, so later output starts on a line of its own."""
        with self._lock:
            if self.enabled and self._drawn_at is not None:
                stream = self.stream or sys.stderr
                stream.write("\n")
                stream.flush()
            self._drawn_at = None
            self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
