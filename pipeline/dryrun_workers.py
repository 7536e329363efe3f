"""Worker processes of a parallel dry-run: start, progress, stop and lost workers.

`run_in_processes` runs one function per item in a `ProcessPoolExecutor`:

- Steps that a worker reports (`StepLine.status`) travel through a pipe to
  the parent, whose thread draws them on its progress line.
- On Ctrl+C or SIGTERM in the parent, every worker is stopped. SIGKILL stops
  it at once; the caller then removes what the workers left (their copies
  live in a folder the parent owns). SIGTERM lets a worker drop its copy
  first, and a second Ctrl+C while the parent waits for that turns it into SIGKILL.
- A worker that was stopped runs none of the items already queued for it.
- A worker whose parent is gone stops itself with the same signal, so none is left behind.
- When a worker dies (the out-of-memory killer, say), each item that had
  not finished runs again alone in a new worker, and gets a `WorkerLost` in
  place of its result only when that worker dies too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from pipeline.console import Progress, StepLine, configure_logging

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# A step line longer than this is cut, so that each message is one write of
# at most PIPE_BUF bytes (4096 on Linux), which POSIX keeps whole among several writers.
_STEP_CHARS = 500
# How often a worker checks that its parent still runs, in seconds.
_PARENT_CHECK_SECONDS = 1.0


class WorkerLost(Exception):
    """The worker process running an item ended before the item finished."""


class Terminated(KeyboardInterrupt):
    """A signal such as SIGTERM that `terminate_as_interrupt` turned into an interrupt."""

    def __init__(self, number: int) -> None:
        super().__init__(f"signal {number}")
        self.number = number


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Raise `Terminated`, a KeyboardInterrupt, on SIGTERM in the block, so `finally` cleans up.

    A block that ends normally after a SIGTERM raises it then: the handler
    may have raised inside a finalizer, where Python drops the exception.
    Signal handlers can be set only in the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    received: list[int] = []

    def interrupt(number: int, frame: FrameType | None) -> None:
        received.append(number)
        raise Terminated(number)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
    if received:
        raise Terminated(received[0])


class _StepPipe:
    """The progress line of a worker process: it sends each step to the parent."""

    def __init__(self, writer: Connection) -> None:
        self.writer = writer

    def status(self, detail: str) -> None:
        with contextlib.suppress(OSError):
            self.writer.send(detail[:_STEP_CHARS])


# The state of this worker process, set by `_start_worker`.
_steps: _StepPipe | None = None
_stopped = False


def _start_worker(writer: Connection | None, parent: int, stop_signal: int) -> None:
    """Set up a worker process: steps go to `writer`, and only `parent` stops it.

    Ctrl+C reaches every process of the terminal's group. A worker ignores it,
    because the parent then stops the workers itself. SIGTERM ends an idle
    worker at once, and a busy one inside `terminate_as_interrupt` cleans up
    first. Once `parent` has ended, the worker sends itself `stop_signal`.
    """
    global _steps
    _steps = None if writer is None else _StepPipe(writer)
    if not logging.getLogger().handlers:
        # A forkserver's worker starts without the parent's logging set-up.
        configure_logging()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_stop_without_parent, args=(parent, stop_signal), daemon=True).start()


def _parent_ended(parent: int) -> bool:
    """Tell whether the process `parent` has ended, also when it was not reaped yet."""
    if os.getppid() == parent:
        return False
    # A forkserver's worker is a child of the forkserver, not of `parent`.
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        # Another user's process has that id now.
        return True
    try:
        fields = Path(f"/proc/{parent}/stat").read_text("utf-8").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[:1] == ["Z"]


def _stop_without_parent(parent: int, stop_signal: int) -> None:
    """Stop this worker once `parent` has ended: no more items, and `stop_signal` every second.

    SIGKILL ends the worker at once. With SIGTERM, the first signal interrupts
    a running item, which then cleans up. A later one ends the worker while it
    waits for an item that will never come.
    """
    global _stopped
    while not _parent_ended(parent):
        time.sleep(_PARENT_CHECK_SECONDS)
    _stopped = True
    logger.warning("dry-run worker %s: the parent process %s ended", os.getpid(), parent)
    while True:
        os.kill(os.getpid(), stop_signal)
        time.sleep(_PARENT_CHECK_SECONDS)


def _call(function: Callable[[Item, StepLine | None], Result], item: Item) -> Result:
    """Run `function` on `item` in a worker; a stopped worker runs nothing more."""
    global _stopped
    if _stopped:
        raise KeyboardInterrupt("the worker was stopped")
    try:
        return function(item, _steps)
    except KeyboardInterrupt:
        _stopped = True
        raise


def _draw_steps(reader: Connection, progress: Progress, done: threading.Event) -> None:
    """Draw the steps that the workers send until `done` is set and none is waiting."""
    while True:
        try:
            waiting = reader.poll(0.05)
            if waiting:
                progress.status(str(reader.recv()))
        except (EOFError, OSError):
            return
        if not waiting and done.is_set():
            return


def _signal_workers(pool: ProcessPoolExecutor, number: int) -> None:
    """Send signal `number` to every live worker process of `pool`.

    ProcessPoolExecutor has no public way to reach its processes, so this
    reads its `_processes` mapping.
    """
    processes = dict(getattr(pool, "_processes", None) or {})
    for process in processes.values():
        if process.is_alive():
            logger.info(
                "stopping dry-run worker process %s (%s)",
                process.pid,
                signal.Signals(number).name,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, number)


def _count(progress: Progress, detail: Callable[[Any], str], future: Future[Any]) -> None:
    """Count a finished item on the progress line, named when it has a result."""
    failed = future.cancelled() or future.exception() is not None
    progress.advance(detail="" if failed else detail(future.result()))


def run_in_processes(
    function: Callable[[Item, StepLine | None], Result],
    items: Sequence[Item],
    workers: int,
    context: Any,
    *,
    progress: Progress | None = None,
    detail: Callable[[Result], str] = str,
    stop_signal: int = signal.SIGTERM,
) -> list[Result | WorkerLost]:
    """Return `function(item, steps)` of each item, run in `workers` processes of `context`.

    `function` must be picklable (a module-level function, or a partial of
    one). `steps` draws on `progress`. `detail` names a finished result on
    the progress line. `stop_signal` is what a Ctrl+C or SIGTERM in this
    process sends to the workers (see the module docstring).

    When a worker dies, the pool stops the others, so every item that had not
    finished runs again alone in a new worker. An item whose worker dies then
    too gets a `WorkerLost`.
    """
    outcomes = _run_pool(function, items, workers, context, progress, detail, stop_signal)
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, WorkerLost):
            logger.warning(
                "running item %d of %d again in a worker of its own", index + 1, len(items)
            )
            (outcomes[index],) = _run_pool(
                function, [items[index]], 1, context, None, detail, stop_signal
            )
    return outcomes


def _run_pool(
    function: Callable[[Item, StepLine | None], Result],
    items: Sequence[Item],
    workers: int,
    context: Any,
    progress: Progress | None,
    detail: Callable[[Result], str],
    stop_signal: int,
) -> list[Result | WorkerLost]:
    """Run `items` in one pool of `workers` processes; see `run_in_processes`."""
    reader = writer = None
    if progress is not None:
        reader, writer = context.Pipe(duplex=False)
    pool = ProcessPoolExecutor(
        workers, context, initializer=_start_worker, initargs=(writer, os.getpid(), stop_signal)
    )
    done = threading.Event()
    drawer = None
    try:
        with terminate_as_interrupt():
            futures: list[Future[Result]] = [pool.submit(_call, function, item) for item in items]
            if reader is not None and progress is not None:
                # Started after the first submit, which forks the workers of a fork context.
                drawer = threading.Thread(
                    target=_draw_steps, args=(reader, progress, done), daemon=True
                )
                drawer.start()
            if progress is not None:
                for future in futures:
                    future.add_done_callback(functools.partial(_count, progress, detail))
            outcomes: list[Result | WorkerLost] = []
            broken = False
            for future in futures:
                try:
                    outcomes.append(future.result())
                except BrokenProcessPool as exc:
                    if not broken:
                        logger.error("a dry-run worker process ended unexpectedly: %s", exc)
                        # The pool stops the other workers too, but with SIGTERM, for which a
                        # busy SQLite worker would first finish its statement.
                        _signal_workers(pool, stop_signal)
                        broken = True
                    outcomes.append(WorkerLost(_LOST))
            return outcomes
    except BaseException:
        _signal_workers(pool, stop_signal)
        raise
    finally:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:
            _signal_workers(pool, signal.SIGKILL)
            pool.shutdown(wait=False)
            raise
        finally:
            done.set()
            if drawer is not None:
                drawer.join()
            for end in (reader, writer):
                if end is not None:
                    end.close()


_LOST = (
    "the worker process of this sample ended before the sample finished, also when the"
    " sample ran again alone (killed, or out of memory); run the dry-run again, with fewer"
    " --jobs if memory is short"
)
