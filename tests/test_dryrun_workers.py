"""Worker processes of a parallel dry-run: results, steps, stops and lost workers."""

from __future__ import annotations

import functools
import io
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from pipeline.console import Progress, StepLine
from pipeline.dryrun_workers import WorkerLost, run_in_processes, terminate_as_interrupt
from pipeline.processes import process_exists

REPO_ROOT = Path(__file__).resolve().parent.parent
FORK = multiprocessing.get_context("fork")
# A statement that runs for minutes inside SQLite, where no Python signal handler runs.
ENDLESS_SQL = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10000000000)"
    " SELECT count(*) FROM n"
)

pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)


def mark(folder: Path, name: str) -> None:
    """Write this process's id to `name` whole, so that no reader finds the file empty."""
    partial = folder / f".{name}.tmp"
    partial.write_text(str(os.getpid()), "utf-8")
    partial.replace(folder / name)


def square(folder: Path, item: int, steps: StepLine | None) -> int:
    if steps is not None:
        steps.status(f"item {item}: squaring")
    mark(folder, f"ran-{item}")
    return item * item


def die_on_two(folder: Path, item: int, steps: StepLine | None) -> int:
    mark(folder, f"ran-{item}")
    if item == 2:
        # The first item is done by then, so its result must survive.
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def die_once_on_two(folder: Path, item: int, steps: StepLine | None) -> int:
    """Die on item 2 the first time only, as a worker that ran out of memory once."""
    mark(folder, f"ran-{item}")
    if item == 2 and not (folder / "died-2").exists():
        mark(folder, "died-2")
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def wait_for_signal(folder: Path, item: int, steps: StepLine | None) -> int:
    """Wait in Python, so SIGTERM interrupts it, and record that the cleanup ran."""
    mark(folder, f"ran-{item}")
    try:
        with terminate_as_interrupt():
            time.sleep(20)
    finally:
        mark(folder, f"cleaned-{item}")
    return item


def run_endless_statement(folder: Path, item: int, steps: StepLine | None) -> int:
    """Run one SQLite statement for minutes, so SIGTERM waits for it to end."""
    mark(folder, f"ran-{item}")
    with terminate_as_interrupt():
        sqlite3.connect(":memory:").execute(ENDLESS_SQL).fetchall()
    mark(folder, f"finished-{item}")
    return item


@pytest.fixture
def interrupts() -> Iterator[list[float]]:
    """Raise KeyboardInterrupt in the test at each of the listed times, in seconds."""
    times: list[float] = []

    def interrupt(number: int, frame: FrameType | None) -> None:
        if times:
            signal.setitimer(signal.ITIMER_REAL, times.pop(0))
        raise KeyboardInterrupt("test interrupt")

    previous = signal.signal(signal.SIGALRM, interrupt)
    yield times
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def start_interrupts(times: list[float], *delays: float) -> None:
    times.extend(delays[1:])
    signal.setitimer(signal.ITIMER_REAL, delays[0])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    # A process that ended but was not reaped yet is not running.
    return not (status.is_file() and "State:\tZ" in status.read_text("utf-8"))


def worker_pids(folder: Path) -> set[int]:
    return {int(path.read_text("utf-8")) for path in folder.glob("ran-*")}


def still_running(pids: set[int]) -> list[int]:
    """Return the processes of `pids` that still run after a signal has had time to land."""
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def test_results_keep_item_order(tmp_path: Path) -> None:
    results = run_in_processes(functools.partial(square, tmp_path), [1, 2, 3, 4, 5], 2, FORK)
    assert results == [1, 4, 9, 16, 25]
    assert os.getpid() not in worker_pids(tmp_path)
    assert len(worker_pids(tmp_path)) <= 2


def test_worker_steps_reach_progress(tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = Progress("work", total=3, enabled=True, stream=stream)

    run_in_processes(
        functools.partial(square, tmp_path),
        [1, 2, 3],
        2,
        FORK,
        progress=progress,
        detail=lambda result: f"result {result}",
    )

    output = stream.getvalue()
    for item in (1, 2, 3):
        assert f"item {item}: squaring" in output
    assert "work 3/3 (100%)" in output


def test_lost_worker_fails_only_its_item(tmp_path: Path) -> None:
    results = run_in_processes(functools.partial(die_on_two, tmp_path), [1, 2, 3, 4], 1, FORK)
    assert results[0] == 1
    assert isinstance(results[1], WorkerLost)
    assert "also when the sample ran again alone" in str(results[1])
    # The items queued behind the lost one run again in workers of their own.
    assert results[2:] == [3, 4]


def test_item_lost_once_passes_when_run_again(tmp_path: Path) -> None:
    results = run_in_processes(functools.partial(die_once_on_two, tmp_path), [1, 2, 3], 2, FORK)
    assert results == [1, 2, 3]
    assert (tmp_path / "died-2").is_file()


def test_interrupt_stops_workers_and_queue(tmp_path: Path, interrupts: list[float]) -> None:
    start_interrupts(interrupts, 1.0)
    with pytest.raises(KeyboardInterrupt):
        run_in_processes(functools.partial(wait_for_signal, tmp_path), [1, 2, 3, 4, 5], 2, FORK)
    started = sorted(path.name for path in tmp_path.glob("ran-*"))
    assert started == ["ran-1", "ran-2"]
    assert sorted(path.name for path in tmp_path.glob("cleaned-*")) == ["cleaned-1", "cleaned-2"]
    assert still_running(worker_pids(tmp_path)) == []


def test_kill_stops_statement_at_once(tmp_path: Path, interrupts: list[float]) -> None:
    start_interrupts(interrupts, 1.0)
    with pytest.raises(KeyboardInterrupt):
        run_in_processes(
            functools.partial(run_endless_statement, tmp_path),
            [1, 2],
            2,
            FORK,
            stop_signal=signal.SIGKILL,
        )
    assert len(list(tmp_path.glob("ran-*"))) == 2
    assert list(tmp_path.glob("finished-*")) == []
    assert still_running(worker_pids(tmp_path)) == []


def test_second_interrupt_kills_workers(tmp_path: Path, interrupts: list[float]) -> None:
    # The first interrupt sends SIGTERM, which waits for the statement to end;
    # the second, while the parent waits, sends SIGKILL.
    start_interrupts(interrupts, 1.0, 1.0)
    with pytest.raises(KeyboardInterrupt):
        run_in_processes(functools.partial(run_endless_statement, tmp_path), [1, 2], 2, FORK)
    assert len(list(tmp_path.glob("ran-*"))) == 2
    assert list(tmp_path.glob("finished-*")) == []
    assert still_running(worker_pids(tmp_path)) == []


ORPHANING_RUN = """
import functools, multiprocessing, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import test_dryrun_workers
from pipeline.dryrun_workers import run_in_processes

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    function = getattr(test_dryrun_workers, sys.argv[4])
    run_in_processes(
        functools.partial(function, folder),
        [1, 2],
        2,
        multiprocessing.get_context(sys.argv[3]),
        stop_signal=getattr(signal, sys.argv[5]),
    )
"""


@pytest.mark.parametrize(
    ("start", "function", "stop", "cleaned"),
    [
        ("fork", "wait_for_signal", "SIGTERM", ["cleaned-1", "cleaned-2"]),
        # SIGKILL ends a worker inside a statement that would run for minutes.
        ("fork", "run_endless_statement", "SIGKILL", []),
        # A forkserver's worker is not a child of the process that it works for.
        ("forkserver", "wait_for_signal", "SIGTERM", ["cleaned-1", "cleaned-2"]),
    ],
)
def test_workers_stop_without_parent(
    tmp_path: Path, start: str, function: str, stop: str, cleaned: list[str]
) -> None:
    folder = tmp_path / "marks"
    folder.mkdir()
    script = tmp_path / "run.py"
    script.write_text(ORPHANING_RUN, "utf-8")
    parent = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(folder),
            str(Path(__file__).parent),
            start,
            function,
            stop,
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(worker_pids(folder)) < 2:
            assert parent.poll() is None, parent.stderr.read() if parent.stderr else ""
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.05)
        parent.kill()
        parent.wait()
        workers = worker_pids(folder)
        # Each worker checks its parent every second, far within the wait.
        running = still_running(workers)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in worker_pids(folder):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert running == []
    assert sorted(path.name for path in folder.glob("cleaned-*")) == cleaned
    assert list(folder.glob("finished-*")) == []


def test_process_id_beyond_system_range_has_ended() -> None:
    assert process_exists(os.getpid())
    assert not process_exists(10**20)
