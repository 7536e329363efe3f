"""Stop a running SQLite statement when the process gets Ctrl+C or SIGTERM.

Python runs a signal handler only between bytecodes, and SQLite runs a
statement without returning to Python, so an interrupt would wait until a
long statement (an index over a million rows) ends. Inside
`signals_interrupt_statements`, the C part of Python's signal handling writes
the number of each signal that has a Python handler to a pipe
(`signal.set_wakeup_fd`). A thread reading the pipe calls
`sqlite3.Connection.interrupt` on every connection registered with
`interruptible`: the statement fails with "interrupted", and back in Python
the signal's handler raises KeyboardInterrupt (or `Terminated`) as usual.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator

# The signals that stop a run: Ctrl+C and SIGTERM.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})

_lock = threading.Lock()
_connections: set[sqlite3.Connection] = set()


@contextlib.contextmanager
def interruptible(connection: sqlite3.Connection) -> Iterator[None]:
    """Let a stop signal interrupt the statement `connection` runs in the block."""
    with _lock:
        _connections.add(connection)
    try:
        yield
    finally:
        with _lock:
            _connections.discard(connection)


@contextlib.contextmanager
def signals_interrupt_statements() -> Iterator[None]:
    """Interrupt the statements of the `interruptible` connections on SIGINT or SIGTERM.

    Only the main thread can set the wakeup pipe, so elsewhere this does
    nothing. The block must not start worker processes by fork, because
    the watching thread is not copied into them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    previous = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch, args=(reader,), name="sqlite-interrupt", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        # Closing the write end ends the thread's read with end of file.
        os.close(writer)
        watcher.join()
        os.close(reader)


def _watch(reader: int) -> None:
    while numbers := os.read(reader, 64):
        if not STOP_SIGNALS.intersection(numbers):
            continue
        with _lock:
            connections = list(_connections)
        for connection in connections:
            # A connection closed since the list was taken has no statement to stop.
            with contextlib.suppress(sqlite3.ProgrammingError):
                connection.interrupt()
