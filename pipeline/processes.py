"""Processes of this machine, for finding what an ended run left behind."""

from __future__ import annotations

import os


def process_exists(pid: int) -> bool:
    """Tell whether a process with id `pid` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):
        # No process has an id beyond what the system can hold.
        return False
    except PermissionError:
        # The process exists but belongs to another user.
        return True
    return True
