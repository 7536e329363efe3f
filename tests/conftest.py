"""Shared fixtures: external tools, git repositories and the shared real-world data."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Debian package that provides each external tool the tests call.
TOOL_PACKAGES = {"7zz": "7zip", "minisign": "minisign", "chromium": "chromium", "openssl": "openssl"}


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """Return the path of an external tool; skip the test when it is missing.

    Under CI=true a missing tool fails the test instead, because CI must run
    every test.
    """
    path = shutil.which(name)
    if path:
        return path
    package = TOOL_PACKAGES.get(name, name)
    message = f"{name} is not installed (Debian package {package})"
    if under_ci():
        pytest.fail(message + "; CI must run every test")
    pytest.skip(message)


def require_shared_data(relative: str) -> Path:
    """Return a file of the shared real-world data folder; skip (fail under CI) when absent."""
    path = SHARED_DATA / relative
    if path.exists():
        return path
    message = f"real-world data file {path} is missing"
    if under_ci():
        pytest.fail(message + "; CI must run every test")
    pytest.skip(message)


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity and return its standard output."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Release Tests",
        "GIT_AUTHOR_EMAIL": "tests@parus-kaz.example",
        "GIT_COMMITTER_NAME": "Release Tests",
        "GIT_COMMITTER_EMAIL": "tests@parus-kaz.example",
    }
    result = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """An empty git repository with main as its branch."""
    repo = tmp_path / "content"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "core.autocrlf", "false")
    return repo
