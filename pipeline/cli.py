"""The console command `parus-release`: the tasks of tasks.py without a tasks file nearby."""

from __future__ import annotations

from invoke.program import Program

from pipeline import __version__


def main() -> None:
    """Run the pipeline's invoke tasks as a console command."""
    import tasks

    Program(namespace=tasks.ns, name="parus-release", binary="parus-release", version=__version__).run()
