"""Ctrl+C and SIGTERM stop a SQLite statement that runs in the main thread."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from types import FrameType

import pytest

from pipeline.dryrun_workers import Terminated, terminate_as_interrupt
from pipeline.sqlite_interrupt import interruptible, signals_interrupt_statements

# A statement that runs for minutes inside SQLite, where no Python signal handler runs.
ENDLESS_SQL = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10000000000)"
    " SELECT count(*) FROM n"
)


def send_later(number: int, delay: float = 0.5) -> threading.Timer:
    timer = threading.Timer(delay, os.kill, (os.getpid(), number))
    timer.start()
    return timer


def watchers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "sqlite-interrupt"]


def test_sigint_stops_statement() -> None:
    connection = sqlite3.connect(":memory:")
    started = time.monotonic()

    stopped = pytest.raises(KeyboardInterrupt)
    with stopped, signals_interrupt_statements(), interruptible(connection):
        send_later(signal.SIGINT)
        connection.execute(ENDLESS_SQL).fetchall()

    assert time.monotonic() - started < 30
    # The wakeup pipe and the thread reading it are gone, and the connection still works.
    assert signal.set_wakeup_fd(-1) == -1
    assert watchers() == []
    assert connection.execute("SELECT 1").fetchall() == [(1,)]


def test_sigterm_stops_statement() -> None:
    connection = sqlite3.connect(":memory:")

    stopped = pytest.raises(Terminated)
    watched = signals_interrupt_statements()
    with stopped, terminate_as_interrupt(), watched, interruptible(connection):
        send_later(signal.SIGTERM)
        connection.execute(ENDLESS_SQL).fetchall()

    assert watchers() == []


def test_other_signal_leaves_statement_running() -> None:
    connection = sqlite3.connect(":memory:")
    received: list[int] = []

    def note(number: int, frame: FrameType | None) -> None:
        received.append(number)

    previous = signal.signal(signal.SIGUSR1, note)
    try:
        with signals_interrupt_statements(), interruptible(connection):
            send_later(signal.SIGUSR1, 0.1)
            # Counting takes longer than the delay, and must end with its result.
            count = connection.execute(ENDLESS_SQL.replace("10000000000", "3000000")).fetchone()
    finally:
        signal.signal(signal.SIGUSR1, previous)

    assert count == (3000000,)
    assert received == [signal.SIGUSR1]


def test_unregistered_connection_not_interrupted() -> None:
    registered = sqlite3.connect(":memory:")
    other = sqlite3.connect(":memory:", check_same_thread=False)
    outcome: list[object] = []

    def run_other() -> None:
        try:
            outcome.append(other.execute(ENDLESS_SQL.replace("10000000000", "3000000")).fetchone())
        except sqlite3.Error as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run_other)
    stopped = pytest.raises(KeyboardInterrupt)
    with stopped, signals_interrupt_statements(), interruptible(registered):
        worker.start()
        send_later(signal.SIGINT, 0.1)
        registered.execute(ENDLESS_SQL).fetchall()
    worker.join()

    assert outcome == [(3000000,)]


class SlowFinalizer:
    """An object whose finalizer waits, so that a signal's handler runs inside it."""

    def __del__(self) -> None:
        time.sleep(1.0)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_termination_lost_in_finalizer_raised() -> None:
    # Python prints and drops an exception raised in a finalizer, so the
    # Terminated of the signal's handler would be lost there.
    with pytest.raises(Terminated), terminate_as_interrupt():
        send_later(signal.SIGTERM, 0.2)
        finalized = SlowFinalizer()
        del finalized
