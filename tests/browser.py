"""Headless Chromium for tests that check what an HTML page shows a person.

Chromium runs with a fresh profile, no sandbox (the tests may run as root)
and no background networking, so it contacts nothing but the page it is given.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from conftest import require_tool

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
)


def _run(arguments: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    chromium = require_tool("chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def page_url(target: str | Path) -> str:
    """Return a URL for a local file path, or `target` itself when it is a URL."""
    if isinstance(target, Path):
        return target.resolve().as_uri()
    return target


def dump_dom(target: str | Path, timeout: float = 60) -> str:
    """Load a page and return its DOM after scripts ran, as HTML text."""
    result = _run(["--virtual-time-budget=3000", "--dump-dom", page_url(target)], timeout)
    if result.returncode != 0:
        raise AssertionError(f"chromium failed on {target}: {result.stderr[-2000:]}")
    return result.stdout


def screenshot(target: str | Path, png: Path, width: int = 1200, height: int = 900) -> Path:
    """Render a page to a PNG file and return its path."""
    result = _run(
        [
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            page_url(target),
        ],
        timeout=60,
    )
    if result.returncode != 0 or not png.exists():
        raise AssertionError(f"chromium made no screenshot of {target}: {result.stderr[-2000:]}")
    return png
