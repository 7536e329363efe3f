"""Write files whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` through a temporary file beside it and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, mode) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write UTF-8 `text` with LF line endings atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place when the block succeeds.

    The temporary file is removed when the block raises, so `path` is either
    the old file, or the complete new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
