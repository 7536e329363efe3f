"""Progress of the sample generation and the dry-run: on a terminal, and silent under CI."""

from __future__ import annotations

import io
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import samples
from pipeline.config import Config, SampleDatabase
from pipeline.console import Progress
from pipeline.dryrun import dry_run
from pipeline.samples import generate_sample, generate_samples

REPO_ROOT = Path(__file__).resolve().parent.parent
MIGRATION = "migrations/0002_budget_classification.sql"


def make_content(root: Path) -> Path:
    shutil.copytree(REPO_ROOT / "migrations", root / "migrations")
    return root


def progress(label: str) -> tuple[Progress, io.StringIO]:
    stream = io.StringIO()
    return Progress(label, enabled=True, interval=0, stream=stream), stream


def test_samples_show_rows_written(tmp_path: Path) -> None:
    root = make_content(tmp_path)
    config = Config(
        root=root,
        sample_databases=(SampleDatabase("sqlite:///small.sqlite", generate="small"),),
    )
    shown, stream = progress("samples")

    generate_samples(config, progress=shown)

    output = stream.getvalue()
    assert "\rsamples 0/1 (0%) small.sqlite: migrations up to 0001" in output
    assert "\rsamples 0/1 (0%) small.sqlite: organizations 40 rows written" in output
    assert "\rsamples 0/1 (0%) small.sqlite: payment_documents 600 rows written" in output
    assert "\rsamples 0/1 (0%) small.sqlite: integrity checks" in output
    assert "\rsamples 1/1 (100%) small.sqlite: generated" in output
    assert output.endswith("\n")


def test_samples_count_rows_in_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_content(tmp_path)
    monkeypatch.setattr(samples, "ROWS_PER_STEP", 250)
    shown, stream = progress("samples")

    generate_sample(root, root / "small.sqlite", "small", progress=shown)

    output = stream.getvalue()
    assert "small.sqlite: payment_documents 250 rows written" in output
    assert "small.sqlite: payment_documents 500 rows written" in output
    assert "small.sqlite: payment_documents 600 rows written" in output


def test_dry_run_names_sample_and_migration(tmp_path: Path) -> None:
    root = make_content(tmp_path)
    generate_sample(root, root / "first.sqlite", "small")
    generate_sample(root, root / "second.sqlite", "small")
    samples = tuple(SampleDatabase(f"sqlite:///{name}.sqlite") for name in ("first", "second"))
    shown, stream = progress("dry-run")

    dry_run(Config(root=root, sample_databases=samples), jobs=2, progress=shown)

    output = stream.getvalue()
    for name in ("first", "second"):
        assert f"{name}.sqlite: copying" in output
        assert f"{name}.sqlite: {MIGRATION}" in output
        assert f"{name}.sqlite: integrity checks" in output
        assert f"{name}.sqlite: report queries" in output
    assert "\rdry-run 2/2 (100%) " in output
    assert output.endswith("\n")


def run_on_terminal(args: list[str], cwd: Path, ci: bool) -> tuple[int, str]:
    """Run an inv task with standard error on a pseudo-terminal; return its code and output."""
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    if ci:
        env["CI"] = "true"
    terminal, child_end = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child_end,
    )
    os.close(child_end)
    chunks = []
    while True:
        try:
            data = os.read(terminal, 65536)
        except OSError:
            # Linux reports EIO once the child has closed its end.
            break
        if not data:
            break
        chunks.append(data)
    os.close(terminal)
    return process.wait(), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("ci", [False, True], ids=["terminal", "ci"])
def test_tasks_show_progress_on_terminal(tmp_path: Path, ci: bool) -> None:
    root = make_content(tmp_path)
    database = ["--database", "sqlite:///small.sqlite"]

    generated = run_on_terminal(["samples", *database], root, ci)
    checked = run_on_terminal(["dry-run", *database], root, ci)

    assert generated[0] == 0, generated[1]
    assert checked[0] == 0, checked[1]
    if ci:
        assert generated[1] == ""
        assert checked[1] == ""
    else:
        assert "samples 1/1 (100%) small.sqlite: generated" in generated[1]
        assert f"small.sqlite: {MIGRATION}" in checked[1]
        assert "dry-run 1/1 (100%) small.sqlite: done" in checked[1]
