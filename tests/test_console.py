"""Progress on a terminal, silence in CI and when standard error is not a terminal."""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.console import Progress, StepPrinter, progress_enabled
from pipeline.validate import validate
from tests.conftest import REPO_ROOT


class FakeTerminal(io.StringIO):
    """A text stream that reports itself as a terminal, or not."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


Install = Callable[[bool], FakeTerminal]


@pytest.fixture
def fake_stderr(monkeypatch: pytest.MonkeyPatch) -> Install:
    """Return a function that puts a fake terminal in place of sys.stderr.

    pytest's output capture sets sys.stderr again when the test body starts,
    so the test itself calls this function.
    """

    def install(tty: bool = True) -> FakeTerminal:
        stream = FakeTerminal(tty)
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.delenv("CI", raising=False)
        return stream

    return install


def test_progress_enabled_on_terminal(fake_stderr: Install) -> None:
    fake_stderr(True)

    assert progress_enabled()


@pytest.mark.parametrize("value", ["true", "TRUE", "True"])
def test_progress_disabled_under_ci(
    fake_stderr: Install, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    fake_stderr(True)
    monkeypatch.setenv("CI", value)

    assert not progress_enabled()


def test_progress_disabled_without_terminal(fake_stderr: Install) -> None:
    fake_stderr(False)

    assert not progress_enabled()


def test_progress_draws_counter_on_terminal(fake_stderr: Install) -> None:
    terminal = fake_stderr(True)

    with Progress("validating", total=3, interval=0) as progress:
        progress.advance(detail="catalog knp")
        progress.advance(detail="catalog kbe")
        progress.advance(detail="migrations")

    output = terminal.getvalue()
    assert "\rvalidating 1/3 (33%) catalog knp" in output
    assert "\rvalidating 3/3 (100%) migrations" in output
    assert output.endswith("\n")
    assert output.count("\n") == 1


def test_progress_pads_shorter_line(fake_stderr: Install) -> None:
    terminal = fake_stderr(True)

    progress = Progress("rows", interval=0)
    progress.advance(detail="a long detail text")
    progress.advance(detail="short")
    progress.close()

    last = terminal.getvalue().split("\r")[-1]
    assert last.startswith("rows 2 short")
    assert len(last.rstrip("\n")) == len("rows 1 a long detail text")


def test_progress_limits_redraws(fake_stderr: Install) -> None:
    terminal = fake_stderr(True)

    progress = Progress("rows", total=1000, interval=3600)
    for _ in range(1000):
        progress.advance()
    progress.close()

    output = terminal.getvalue()
    # The first unit and the last one are drawn; the interval hides the rest.
    assert output.count("\r") == 2
    assert "\rrows 1000/1000 (100%)" in output


def test_progress_status_draws_at_once(fake_stderr: Install) -> None:
    terminal = fake_stderr(True)

    progress = Progress("dry-run", total=2, interval=3600)
    progress.advance(0, detail="small.sqlite: copying")
    progress.status("small.sqlite: migrations/0002_kbk.sql")
    progress.close()

    output = terminal.getvalue()
    # The interval hides no status, because a status names a new step that may run long.
    assert "\rdry-run 0/2 (0%) small.sqlite: copying" in output
    assert "\rdry-run 0/2 (0%) small.sqlite: migrations/0002_kbk.sql" in output
    assert progress.done == 0


def test_progress_status_silent_under_ci(
    fake_stderr: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = fake_stderr(True)
    monkeypatch.setenv("CI", "true")

    with Progress("dry-run", total=1, interval=0) as progress:
        progress.status("small.sqlite: copying")

    assert terminal.getvalue() == ""


def test_progress_silent_under_ci(fake_stderr: Install, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = fake_stderr(True)
    monkeypatch.setenv("CI", "true")

    with Progress("validating", total=2, interval=0) as progress:
        progress.advance()
        progress.advance()

    assert progress.done == 2
    assert terminal.getvalue() == ""


def test_progress_silent_without_terminal(fake_stderr: Install) -> None:
    terminal = fake_stderr(False)

    with Progress("validating", total=2, interval=0) as progress:
        progress.advance()

    assert terminal.getvalue() == ""


def test_step_printer_silent_under_ci(
    fake_stderr: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = fake_stderr(True)
    monkeypatch.setenv("CI", "true")

    StepPrinter(total=2)("collect")

    assert terminal.getvalue() == ""


def test_step_printer_prints_on_terminal(fake_stderr: Install) -> None:
    terminal = fake_stderr(True)

    StepPrinter(total=2)("collect")

    assert "[1/2" in terminal.getvalue()
    assert "collect" in terminal.getvalue()


def test_validate_counts_items_on_terminal(fake_stderr: Install, tmp_path: Path) -> None:
    terminal = fake_stderr(True)
    shutil.copytree(REPO_ROOT / "tests/data/catalogs/valid/catalogs", tmp_path / "catalogs")

    result = validate(tmp_path, progress=Progress("validating", interval=0))

    total = len(result.cases)
    output = terminal.getvalue()
    assert f"\rvalidating {total}/{total} (100%) migration migrations" in output
    assert "catalog knp_kbe" in output
    assert output.endswith("\n")


def test_validate_silent_under_ci(
    fake_stderr: Install, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    terminal = fake_stderr(True)
    monkeypatch.setenv("CI", "true")
    shutil.copytree(REPO_ROOT / "tests/data/catalogs/valid/catalogs", tmp_path / "catalogs")

    validate(tmp_path, progress=Progress("validating", interval=0))

    assert terminal.getvalue() == ""
