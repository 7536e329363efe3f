"""The console command `parus-release`: the tasks of tasks.py without a tasks file nearby."""

from __future__ import annotations

import os
import sys

from pipeline import __version__


def main() -> None:
    """Run the pipeline's invoke tasks as a console command."""
    try:
        # Ctrl+C while invoke and the pipeline's modules load stops as quietly as during a task.
        from invoke.program import Program

        import tasks

        program = Program(
            namespace=tasks.ns, name="parus-release", binary="parus-release", version=__version__
        )
        program.run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader of standard output went away (`parus-release --list | head`):
        # stop quietly, as command-line tools do, and keep Python from reporting it again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
