"""The task layer as a release manager and CI use it: exit codes, messages and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import git, require_tool
from test_release import CLI, bundle_path, run_cli

from pipeline import cli, signing
from pipeline.errors import BundleError, ConfigError
from pipeline.release import WORK_PREFIX, release
from pipeline.versions import Version


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd)


@pytest.fixture
def content(demo_repo: Path) -> Path:
    """The demo content repository, as the release tests use it."""
    return demo_repo


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[Path, Path]:
    secret, public = tmp_path / "keys/release.key", tmp_path / "keys/minisign.pub"
    signing.generate_keypair(secret, public)
    return secret, public


def test_validate_rejects_missing_repository(tmp_path: Path) -> None:
    done = run("validate", "--repo", str(tmp_path / "no-such-folder"), cwd=tmp_path)
    assert done.returncode == 1
    assert "does not exist or is not a folder" in done.stderr


def test_validate_rejects_folder_without_content(tmp_path: Path) -> None:
    done = run("validate", "--repo", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "is not a content repository" in done.stderr
    assert "catalogs/" in done.stderr


def test_validate_failure_prints_findings(content: Path) -> None:
    rows = content / "catalogs/knp/rows.csv"
    lines = rows.read_text(encoding="utf-8").splitlines()
    rows.write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    done = run("validate", "--repo", str(content), "--no-cache", cwd=content)
    assert done.returncode == 1
    assert "catalogs/knp/rows.csv" in done.stdout + done.stderr
    assert "validation failed with 1 error" in done.stderr


def test_validate_rev_checks_the_commit(content: Path) -> None:
    (content / "catalogs/knp/rows.csv").write_text("broken\n", encoding="utf-8")
    work_tree = run("validate", "--repo", str(content), "--no-cache", cwd=content)
    committed = run("validate", "--repo", str(content), "--rev", "HEAD", cwd=content)
    assert work_tree.returncode == 1
    assert committed.returncode == 0, committed.stdout + committed.stderr


def test_build_refuses_invalid_commit(content: Path, tmp_path: Path) -> None:
    definition = next((content / "packages/fixes").glob("*/fix.json"))
    document = json.loads(definition.read_text(encoding="utf-8"))
    document["title"].pop("kk")
    definition.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    git(content, "commit", "-q", "-am", "Drop a Kazakh title")
    out = tmp_path / "out"
    done = run(
        "build", "--repo", str(content), "--version", "2026.12.0", "--out", str(out), cwd=content
    )
    assert done.returncode == 1
    assert "failed validation" in done.stderr
    assert "missing required field 'kk'" in done.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_build_then_sign_then_verify(
    content: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    secret, public = key_files
    out = tmp_path / "out"
    built = run(
        "build", "--repo", str(content), "--version", "2026.12.0", "--out", str(out), cwd=content
    )
    assert built.returncode == 0, built.stderr
    bundle = bundle_path(out, "2026.12.0")
    for target in (bundle, out / "manifest.json"):
        signed = run("sign", str(target), "--key", str(secret), cwd=content)
        assert signed.returncode == 0, signed.stderr
    checked = run("verify", str(bundle), "--public-key", str(public), cwd=content)
    assert checked.returncode == 0, checked.stderr
    assert "verified version 2026.12.0" in checked.stdout


def test_sign_without_version_says_how(key_files: tuple[Path, Path], tmp_path: Path) -> None:
    secret, _ = key_files
    target = tmp_path / "notes.txt"
    target.write_text("x\n", encoding="utf-8")
    done = run("sign", str(target), "--key", str(secret), cwd=tmp_path)
    assert done.returncode == 1
    assert "pass --version YYYY.MM.N" in done.stderr
    assert not (tmp_path / "notes.txt.minisig").exists()


def test_sign_with_missing_env_key_names_variable(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_text('{"version": "2026.12.0"}', encoding="utf-8")
    env = {**os.environ, "PIPELINE_SIGNING_KEY": str(tmp_path / "absent.key")}
    done = subprocess.run(
        [CLI, "sign", str(target)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "PIPELINE_SIGNING_KEY" in done.stderr
    assert "absent.key" in done.stderr


def test_dry_run_reports_unreadable_migrations(content: Path, tmp_path: Path) -> None:
    (content / "migrations/5_bad.sql").write_text("SELECT 1;\n", encoding="utf-8")
    report, junit = tmp_path / "d.json", tmp_path / "d.xml"
    done = run(
        "dry-run",
        "--repo",
        str(content),
        "--json",
        str(report),
        "--junit",
        str(junit),
        cwd=content,
    )
    assert done.returncode == 1
    assert json.loads(report.read_text(encoding="utf-8"))["passed"] is False
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None
    assert "5_bad.sql" in (failure.text or "")


def test_release_rejects_empty_release(
    content: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    secret = signing.load_secret_key(key_files[0])
    release(content, tmp_path / "a", secret, version=Version.parse("2026.12.0"))
    git(content, "tag", "release/2026.12.0")
    (content / "NOTES.txt").write_text("not content\n", encoding="utf-8")
    git(content, "add", "NOTES.txt")
    git(content, "commit", "-q", "-m", "Add a note outside the content")
    out = tmp_path / "b"
    with pytest.raises(
        BundleError, match=r"nothing to release: no content changed between release/2026\.12\.0"
    ):
        release(content, out, secret, version=Version.parse("2026.12.1"))
    assert not out.exists()
    done = release(content, out, secret, version=Version.parse("2026.12.1"), allow_empty=True)
    assert done.changes.changes == ()


def test_release_removes_stale_work_folder(
    content: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    stale = out / f"{WORK_PREFIX}999999999-abc"
    stale.mkdir(parents=True)
    (stale / "left.txt").write_text("x", encoding="utf-8")
    release(
        content, out, signing.load_secret_key(key_files[0]), version=Version.parse("2026.12.0")
    )
    assert not stale.exists()


def test_release_out_must_be_folder(
    content: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "file"
    out.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="is a file; expected a folder"):
        release(
            content, out, signing.load_secret_key(key_files[0]), version=Version.parse("2026.12.0")
        )


def test_invalid_toml_names_repository_file(
    content: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    (content / "pyproject.toml").write_text("[tool.pipeline\n", encoding="utf-8")
    git(content, "commit", "-q", "-am", "Break the settings")
    with pytest.raises(ConfigError) as caught:
        release(
            content,
            tmp_path / "o",
            signing.load_secret_key(key_files[0]),
            version=Version.parse("2026.12.0"),
        )
    assert f"{content}/pyproject.toml at " in str(caught.value)
    assert ".release-" not in str(caught.value)


def test_demo_key_folder_ignores_itself(content: Path, tmp_path: Path) -> None:
    require_tool("minisign")
    done = run(
        "release",
        "--demo-key",
        "--repo",
        str(content),
        "--out",
        str(tmp_path / "o"),
        "--version",
        "2026.12.0",
        cwd=content,
    )
    assert done.returncode == 0, done.stderr
    assert (content / ".keys/.gitignore").read_text(encoding="utf-8") == "*\n"
    assert git(content, "status", "--porcelain", "--untracked-files=all") == ""


def test_import_placeholders_fail_validation(content: Path, tmp_path: Path) -> None:
    source = tmp_path / "units.csv"
    source.write_text("code,name\n796,штука\n", encoding="utf-8")
    imported = run(
        "catalog.import",
        "--repo",
        str(content),
        "--id",
        "units",
        "--from",
        str(source),
        cwd=content,
    )
    assert imported.returncode == 0, imported.stderr
    assert "placeholder titles" in imported.stdout
    checked = run("validate", "--repo", str(content), "--no-cache", cwd=content)
    assert checked.returncode == 1
    assert "placeholder 'TODO'" in checked.stdout + checked.stderr


def test_verify_says_when_manifest_signature_is_missing(
    content: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    release(
        content, out, signing.load_secret_key(key_files[0]), version=Version.parse("2026.12.0")
    )
    (out / "manifest.json.minisig").unlink()
    report = tmp_path / "v.json"
    refused = run(
        "verify",
        str(bundle_path(out, "2026.12.0")),
        "--public-key",
        str(out / "minisign.pub"),
        cwd=tmp_path,
    )
    assert refused.returncode == 1
    assert "no manifest signature" in refused.stderr
    assert "--allow-unsigned-manifest" in refused.stderr
    done = run(
        "verify",
        str(bundle_path(out, "2026.12.0")),
        "--public-key",
        str(out / "minisign.pub"),
        "--allow-unsigned-manifest",
        "--json",
        str(report),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "manifest signature: not checked" in done.stdout
    assert json.loads(report.read_text(encoding="utf-8"))["manifest_signature"] is None


def _resign(out: Path, secret: Path, when: str) -> None:
    comment = f"product=parus-kaz-budget version=2026.12.0 time={when}"
    for name in ("parus-kaz-budget-2026.12.0.7z", "manifest.json", "provenance.json"):
        done = run("sign", str(out / name), "--key", str(secret), "--comment", comment, cwd=out)
        assert done.returncode == 0, done.stderr


def test_verify_rejects_future_signing_time(
    content: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    release(
        content, out, signing.load_secret_key(key_files[0]), version=Version.parse("2026.12.0")
    )
    _resign(out, key_files[0], "2099-01-01T00:00:00Z")
    report = tmp_path / "v.json"
    done = run(
        "verify",
        str(bundle_path(out, "2026.12.0")),
        "--public-key",
        str(key_files[1]),
        "--json",
        str(report),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "which is in the future" in done.stderr
    written = json.loads(report.read_text(encoding="utf-8"))
    assert written["verified"] is False
    assert "which is in the future" in written["error"]


def test_verify_rejects_backdated_expired_key(
    content: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from pipeline.trust import TrustedKey, write_trusted_keys

    out = tmp_path / "dist"
    release(
        content, out, signing.load_secret_key(key_files[0]), version=Version.parse("2026.12.0")
    )
    # The key expired in 2020; the signer claims to have signed in 2019.
    _resign(out, key_files[0], "2019-06-01T00:00:00Z")
    trusted_file = tmp_path / "trusted-keys.json"
    expired = TrustedKey(
        public=signing.load_public_key(key_files[1]),
        valid_from=datetime(2018, 1, 1, tzinfo=UTC),
        valid_until=datetime(2020, 1, 1, tzinfo=UTC),
        revoked=False,
        comment="retired release key",
    )
    write_trusted_keys(trusted_file, [expired])
    done = run(
        "verify",
        str(bundle_path(out, "2026.12.0")),
        "--trusted-keys",
        str(trusted_file),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "before the release commit's time" in done.stderr
    assert expired.public.key_id_hex in done.stderr


def test_verify_accepts_rotation_into_trusted_keys(
    content: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from pipeline.rotation import rotate_trusted_keys
    from pipeline.trust import load_trusted_keys, trusted_keys_from_public_key, write_trusted_keys

    secret = signing.load_secret_key(key_files[0])
    trusted_file = tmp_path / "trusted-keys.json"
    write_trusted_keys(trusted_file, trusted_keys_from_public_key(key_files[1]))
    signing.generate_keypair(tmp_path / "next.key", tmp_path / "next.pub")
    rotate_trusted_keys(
        trusted_file,
        signing.load_public_key(tmp_path / "next.pub"),
        tmp_path / "next.json",
        valid_from=datetime(2020, 1, 2, tzinfo=UTC),
        retire_at=datetime(2099, 1, 1, tzinfo=UTC),
        comment="next release key",
    )
    out = tmp_path / "dist"
    release(
        content,
        out,
        secret,
        version=Version.parse("2026.12.0"),
        next_trusted_keys=tmp_path / "next.json",
    )
    done = run(
        "verify",
        str(bundle_path(out, "2026.12.0")),
        "--trusted-keys",
        str(trusted_file),
        "--accept-rotation",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote the next trusted keys of bundle 2026.12.0" in done.stdout
    ids = [key.public.key_id_hex for key in load_trusted_keys(trusted_file)]
    assert signing.load_public_key(tmp_path / "next.pub").key_id_hex in ids
    assert secret.public.key_id_hex in ids

    # A customer applying the bundle moves to the new keys without a manual step.
    customer = tmp_path / "customer-trusted-keys.json"
    write_trusted_keys(customer, trusted_keys_from_public_key(key_files[1]))
    database = tmp_path / "customer.sqlite"
    applied = run(
        "apply",
        str(bundle_path(out, "2026.12.0")),
        "--database",
        f"sqlite:///{database}",
        "--trusted-keys",
        str(customer),
        "--create",
        "--install-dir",
        str(tmp_path / "install"),
        cwd=tmp_path,
    )
    assert applied.returncode == 0, applied.stderr
    assert "wrote the next trusted keys of bundle 2026.12.0" in applied.stdout
    customer_ids = [key.public.key_id_hex for key in load_trusted_keys(customer)]
    assert signing.load_public_key(tmp_path / "next.pub").key_id_hex in customer_ids


def test_symlinked_migration_fails_validation(content: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in (content / "migrations").glob("*.sql"))
    link = content / f"migrations/{int(names[-1][:4]) + 1:04d}_link.sql"
    link.symlink_to("/nonexistent/x.sql")
    git(content, "add", "-A")
    git(content, "commit", "-q", "-m", "Add a linked migration")
    checked = run("validate", "--repo", str(content), "--no-cache", cwd=content)
    assert checked.returncode == 1
    assert "found a symbolic link to '/nonexistent/x.sql'" in checked.stdout + checked.stderr
    built = run(
        "build",
        "--repo",
        str(content),
        "--version",
        "2026.12.0",
        "--out",
        str(tmp_path / "o"),
        cwd=content,
    )
    assert built.returncode == 1
    assert "Traceback" not in built.stderr
    assert link.name in built.stderr


def test_report_path_that_cannot_be_written(content: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x", encoding="utf-8")
    done = run("collect", "--repo", str(content), "--json", str(blocker / "x.json"), cwd=content)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error:" in done.stderr


def test_secret_key_inside_repository_is_rejected(content: Path, tmp_path: Path) -> None:
    signing.generate_keypair(content / "inside.key", content / "inside.pub")
    done = run(
        "release",
        "--repo",
        str(content),
        "--key",
        str(content / "inside.key"),
        "--out",
        str(tmp_path / "o"),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "lies inside the content repository" in done.stderr


def test_verify_missing_bundle(tmp_path: Path, key_files: tuple[Path, Path]) -> None:
    done = run(
        "verify", str(tmp_path / "absent.7z"), "--public-key", str(key_files[1]), cwd=tmp_path
    )
    assert done.returncode == 1
    assert "bundle" in done.stderr
    assert "absent.7z not found" in done.stderr


def test_cache_folder_ignores_itself(content: Path) -> None:
    done = run("validate", "--repo", str(content), cwd=content)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (content / ".pipeline-cache/.gitignore").read_text(encoding="utf-8") == "*\n"
    assert git(content, "status", "--porcelain", "--untracked-files=all") == ""


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--jobs",
            "0",
            "--jobs 0: expected a positive number of sample databases at once, such as 2",
        ),
        (
            "--jobs",
            "-1",
            "--jobs -1: expected a positive number of sample databases at once, such as 2",
        ),
        (
            "--lock-timeout-ms",
            "-5",
            "--lock-timeout-ms '-5': expected a positive number of milliseconds, such as 5000",
        ),
        (
            "--lock-timeout-ms",
            "0",
            "--lock-timeout-ms '0': expected a positive number of milliseconds, such as 5000",
        ),
        (
            "--lock-timeout-ms",
            "5s",
            "--lock-timeout-ms '5s': expected a positive number of milliseconds, such as 5000",
        ),
        (
            "--statement-timeout-ms",
            "-1",
            "--statement-timeout-ms '-1': expected a positive number of milliseconds,"
            " such as 5000",
        ),
    ],
)
def test_dry_run_rejects_bad_option(tmp_path: Path, option: str, value: str, message: str) -> None:
    done = run(
        "dry-run", "--database", "sqlite:///sample.sqlite", f"{option}={value}", cwd=tmp_path
    )

    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {message}"


@pytest.mark.parametrize(
    ("task", "option", "value"),
    [("dry-run", "--jobs", "abc"), ("dry-run", "--jobs", "2.5"), ("update", "--timeout", "")],
)
def test_option_not_whole_number(tmp_path: Path, task: str, option: str, value: str) -> None:
    done = run(task, f"{option}={value}", cwd=tmp_path)

    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {option} {value!r}: expected a whole number, such as 2"


def test_dry_run_accepts_valid_options(content: Path) -> None:
    done = run(
        "dry-run", "--jobs", "2", "--lock-timeout-ms", "700", "--statement-timeout-ms", "9000",
        cwd=content,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "small.sqlite (sqlite " in done.stdout


class _InterruptedImport:
    """An import hook that raises KeyboardInterrupt for one module, as Ctrl+C would."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == self.name:
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_importing_tasks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "tasks", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport("tasks"), *sys.meta_path])

    with pytest.raises(SystemExit) as stopped:
        cli.main()

    assert stopped.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"
