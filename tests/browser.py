"""Headless Chromium for tests that check what an HTML page shows a person.

Chromium runs with a fresh profile, no sandbox (the tests may run as root)
and no background networking, so it contacts nothing but the page it is given.
"""

from __future__ import annotations

import subprocess
import tempfile
import zlib
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


def png_colours(path: Path, limit: int = 16) -> set[bytes]:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG and return up to `limit` distinct pixels.

    Enough of the PNG format (RFC 2083) to tell a rendered page from a blank one.
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    offset, compressed = 8, b""
    width = height = channels = 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            depth, colour_type, interlace = body[8], body[9], body[12]
            assert depth == 8, f"{path}: bit depth {depth}"
            assert colour_type in (2, 6), f"{path}: colour type {colour_type}"
            assert interlace == 0, f"{path}: interlaced"
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            compressed += body
    raw = zlib.decompress(compressed)
    stride = width * channels
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for row in range(height):
        start = row * (stride + 1)
        filter_type = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            up_left = previous[i - channels] if i >= channels else 0
            if filter_type == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filter_type == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filter_type == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif filter_type == 4:
                estimate = left + up - up_left
                distances = (abs(estimate - left), abs(estimate - up), abs(estimate - up_left))
                predictor = (left, up, up_left)[distances.index(min(distances))]
                line[i] = (line[i] + predictor) & 0xFF
        for i in range(0, stride, channels):
            colours.add(bytes(line[i : i + channels]))
            if len(colours) >= limit:
                return colours
        previous = line
    return colours
