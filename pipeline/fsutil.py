"""Write files and folders whole or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
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


@contextlib.contextmanager
def atomic_folder(path: Path, mode: int = 0o755) -> Iterator[Path]:
    """Yield an empty folder beside `path`; swap it in for `path` when the block succeeds.

    The old folder is removed after the swap. When the block raises, the new
    folder is removed and `path` keeps its old content. The swap is two
    renames, so another process may find `path` missing for a moment between them.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield staging
        os.chmod(staging, mode)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not path.exists():
        os.replace(staging, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, old / path.name)
    try:
        os.replace(staging, path)
    except BaseException:
        os.replace(old / path.name, path)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
