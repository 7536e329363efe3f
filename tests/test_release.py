"""The release end to end: real git repositories, real keys, real 7-Zip and minisign."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    REPO_ROOT,
    git,
    require_shared_data,
    require_tool,
)

from pipeline import signing
from pipeline.errors import BundleError, MigrationError, ValidationError
from pipeline.release import release
from pipeline.samples import generate_sample
from pipeline.verify import verify_bundle
from pipeline.versions import Version

CLI = str(Path(sys.executable).parent / "parus-release")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "true"}
    env.pop("PIPELINE_SIGNING_KEY", None)
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture
def secret_key(tmp_path: Path) -> signing.SecretKey:
    keys = tmp_path / "keys"
    signing.generate_keypair(keys / "release.key", keys / "minisign.pub")
    return signing.load_secret_key(keys / "release.key")


def bundle_path(out: Path, version: str) -> Path:
    return out / f"parus-kaz-budget-{version}.7z"


def test_release_writes_signed_outputs(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    result = release(demo_repo, out, secret_key, version=Version.parse("2026.12.0"))

    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "manifest.json",
        "manifest.json.minisig",
        "minisign.pub",
        "parus-kaz-budget-2026.12.0.7z",
        "parus-kaz-budget-2026.12.0.7z.minisig",
        "provenance.json",
        "provenance.json.minisig",
    ]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["version"] == "2026.12.0"
    assert manifest["source"]["commit"] == result.changes.commit
    assert manifest["source"]["base_tag"] is None
    assert {c["id"] for c in manifest["catalogs"]} >= {"kato", "knp"}
    assert all(c["rows"] > 0 for c in manifest["catalogs"])
    assert [m["version"] for m in manifest["migrations"]][:1] == ["0001"]
    assert manifest["dry_run"] and all(d["result"] == "passed" for d in manifest["dry_run"])
    paths = {f["path"] for f in manifest["files"]}
    assert {"notes/kk.md", "notes/ru.md"} <= paths
    assert any(p.startswith("fixes/") for p in paths)
    assert any(p.startswith("reports/") for p in paths)
    assert any(p.startswith("treasury/") for p in paths)
    assert "migrations/0001_baseline.sql" in paths


def test_release_outputs_pass_real_tools(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    minisign = require_tool("minisign")
    seven_zip = require_tool("7zz")
    out = tmp_path / "dist"
    release(demo_repo, out, secret_key, version=Version.parse("2026.12.0"))
    bundle = bundle_path(out, "2026.12.0")

    for target in (bundle, out / "manifest.json"):
        checked = subprocess.run(
            [minisign, "-V", "-p", str(out / "minisign.pub"), "-m", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
        assert "version=2026.12.0" in checked.stdout
    tested = subprocess.run(
        [seven_zip, "t", str(bundle)], capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout
    assert "Everything is Ok" in tested.stdout


def test_release_is_reproducible(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    release(demo_repo, first, secret_key, version=Version.parse("2026.12.0"))
    release(demo_repo, second, secret_key, version=Version.parse("2026.12.0"))
    name = "parus-kaz-budget-2026.12.0.7z"
    assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "manifest.json").read_bytes() == (second / "manifest.json").read_bytes()


def test_release_notes_in_both_languages(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    import py7zr

    out = tmp_path / "dist"
    release(demo_repo, out, secret_key, version=Version.parse("2026.12.0"))
    with py7zr.SevenZipFile(bundle_path(out, "2026.12.0")) as archive:
        archive.extract(path=tmp_path / "x", targets=["notes/kk.md", "notes/ru.md"])
    kk = (tmp_path / "x/notes/kk.md").read_text(encoding="utf-8")
    ru = (tmp_path / "x/notes/ru.md").read_text(encoding="utf-8")
    assert kk.startswith("# Парус-КАЗ.Бюджет 2026.12.0 жаңартуы")
    assert ru.startswith("# Обновление Парус-КАЗ.Бюджет 2026.12.0")
    assert "## Түзетулер" in kk
    assert "## Анықтамалықтар" in kk
    assert "## Исправления" in ru
    assert "## Справочники" in ru
    assert "Первый выпуск." in ru


def test_release_second_version_ships_changes_only(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    release(demo_repo, tmp_path / "first", secret_key, version=Version.parse("2026.12.0"))
    git(demo_repo, "tag", "release/2026.12.0")
    fix = next((demo_repo / "packages/fixes").iterdir())
    definition = json.loads((fix / "fix.json").read_text(encoding="utf-8"))
    definition["tickets"] = [*definition.get("tickets", []), "PKB-9999"]
    (fix / "fix.json").write_text(
        json.dumps(definition, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    git(demo_repo, "commit", "-q", "-am", "Add a ticket to a fix")

    out = tmp_path / "second"
    release(demo_repo, out, secret_key, version=Version.parse("2026.12.1"))
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["source"]["base_tag"] == "release/2026.12.0"
    assert list(manifest["changes"]) == ["fix"]
    assert [c["path"] for c in manifest["changes"]["fix"]] == [
        f"packages/fixes/{fix.name}/fix.json"
    ]
    shipped = {f["path"].split("/")[0] for f in manifest["files"]}
    assert shipped == {"fixes", "migrations", "notes", "provenance.json"}


def test_release_refuses_version_not_newer(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    git(demo_repo, "tag", "release/2026.12.0")
    (demo_repo / "README.md").write_text("demo\n", encoding="utf-8")
    git(demo_repo, "add", "README.md")
    git(demo_repo, "commit", "-q", "-m", "Add a readme")
    out = tmp_path / "dist"
    with pytest.raises(
        BundleError, match=r"2026\.11\.3 is not newer than the base release release/2026\.12\.0"
    ):
        release(demo_repo, out, secret_key, version=Version.parse("2026.11.3"))


def test_failed_validation_leaves_no_output(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    rows = demo_repo / "catalogs/knp/rows.csv"
    lines = rows.read_text(encoding="utf-8").splitlines()
    rows.write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    git(demo_repo, "commit", "-q", "-am", "Duplicate a KNP row")
    out = tmp_path / "dist"
    with pytest.raises(ValidationError, match=r"catalogs/knp/rows\.csv"):
        release(demo_repo, out, secret_key, version=Version.parse("2026.12.0"))
    assert not out.exists()


def test_failed_dry_run_leaves_no_output(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    migration = demo_repo / "migrations/0099_broken.sql"
    names = sorted(p.name for p in (demo_repo / "migrations").glob("*.sql"))
    last = int(names[-1][:4])
    migration = demo_repo / f"migrations/{last + 1:04d}_broken.sql"
    migration.write_text("ALTER TABLE no_such_table ADD COLUMN x TEXT;\n", encoding="utf-8")
    git(demo_repo, "add", "-A")
    git(demo_repo, "commit", "-q", "-m", "Add a broken migration")
    out = tmp_path / "dist"
    with pytest.raises(MigrationError, match=f"{migration.name}.*no_such_table"):
        release(demo_repo, out, secret_key, version=Version.parse("2026.12.0"))
    assert not out.exists()


def test_release_ignores_uncommitted_edits(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    (demo_repo / "catalogs/knp/rows.csv").write_text("broken\n", encoding="utf-8")
    out = tmp_path / "dist"
    result = release(demo_repo, out, secret_key, version=Version.parse("2026.12.0"))
    assert result.validation.passed


def test_cli_lists_every_task() -> None:
    listed = run_cli("--list", cwd=REPO_ROOT)
    assert listed.returncode == 0, listed.stderr
    for name in (
        "collect",
        "validate",
        "catalog.import",
        "dry-run",
        "build",
        "keys.generate",
        "sign",
        "verify",
        "release",
    ):
        line = next(
            (line for line in listed.stdout.splitlines() if line.split()[:1] == [name]), ""
        )
        assert len(line.split()) > 1, f"{name} has no description in --list"


@pytest.mark.parametrize("name", ["verify", "sign", "release", "catalog.import"])
def test_cli_task_help_explains_flags(name: str) -> None:
    shown = run_cli(name, "--help", cwd=REPO_ROOT)
    assert shown.returncode == 0, shown.stderr
    assert "Options:" in shown.stdout
    assert "--" in shown.stdout.split("Options:")[1]


def test_cli_release_without_key_says_how(demo_repo: Path, tmp_path: Path) -> None:
    failed = run_cli(
        "release", "--repo", str(demo_repo), "--out", str(tmp_path / "o"), cwd=tmp_path
    )
    assert failed.returncode == 1
    assert "no signing key" in failed.stderr
    assert "PIPELINE_SIGNING_KEY" in failed.stderr
    assert "~/.parus-release/release.key" in failed.stderr


def test_generated_key_kept_outside_repository(demo_repo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "CI": "true", "HOME": str(home)}
    env.pop("PIPELINE_SIGNING_KEY", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args], cwd=demo_repo, env=env, capture_output=True, text=True, check=False
        )

    generated = cli("keys.generate")
    secret = home / ".parus-release" / "release.key"
    released = cli("release", "--key", str(secret), "--out", str(tmp_path / "o"))
    rejected = cli("keys.generate", "--secret-key", "release.key", "--public-key", "r.pub")

    # Run inside the content repository, the default still puts the secret key outside it.
    assert generated.returncode == 0, generated.stderr
    assert secret.is_file()
    assert (home / ".parus-release" / "minisign.pub").is_file()
    assert not (demo_repo / ".keys").exists()
    assert released.returncode == 0, released.stderr
    assert rejected.returncode == 1
    assert "lies inside the git work tree" in rejected.stderr
    assert not (demo_repo / "release.key").exists()
    assert not (demo_repo / "r.pub").exists()


def test_cli_release_with_demo_key(demo_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    done = run_cli(
        "release",
        "--demo-key",
        "--repo",
        str(demo_repo),
        "--out",
        str(out),
        "--version",
        "2026.12.0",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "throwaway demo key" in done.stdout
    assert (tmp_path / ".keys/demo.key").exists()
    checked = run_cli(
        "verify",
        str(bundle_path(out, "2026.12.0")),
        "--public-key",
        str(out / "minisign.pub"),
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr
    assert "verified version 2026.12.0" in checked.stdout


@pytest.mark.realdata
def test_kato_release_and_refresh(
    git_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    source = require_shared_data("catalogs/kato_2022_ru.csv")
    minisign = require_tool("minisign")
    seven_zip = require_tool("7zz")
    repo = git_repo
    (repo / "migrations").mkdir()
    (repo / "migrations/0001_baseline.sql").write_text(
        "CREATE TABLE kato (id TEXT PRIMARY KEY, parent_id TEXT, code TEXT, name TEXT);\n",
        encoding="utf-8",
    )
    (repo / "pyproject.toml").write_text(
        "[tool.pipeline]\n"
        'sample_databases = [{ url = "sqlite:///.samples/s.sqlite", generate = "small" }]\n',
        encoding="utf-8",
    )
    (repo / ".gitignore").write_text(".samples/\n", encoding="utf-8")
    # The editor writes the description: titles, types, and the parent reference
    # that makes validate check every parent_id of the real file.
    description = json.loads(
        (REPO_ROOT / "catalogs/kato/catalog.json").read_text(encoding="utf-8")
    )
    description["columns"] = [c for c in description["columns"] if c["name"] != "name_kk"]
    (repo / "catalogs/kato").mkdir(parents=True)
    (repo / "catalogs/kato/catalog.json").write_text(
        json.dumps(description, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    imported = run_cli(
        "catalog.import",
        "--repo",
        str(repo),
        "--id",
        "kato",
        "--from",
        str(source),
        "--key",
        "id",
        "--delimiter",
        ";",
        cwd=repo,
    )
    assert imported.returncode == 0, imported.stderr
    assert "16264 added" in imported.stdout
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Import the KATO classifier")

    collected = run_cli(
        "collect", "--repo", str(repo), "--json", str(tmp_path / "c.json"), cwd=repo
    )
    assert collected.returncode == 0, collected.stderr
    assert "catalogs/kato/rows.csv" in collected.stdout
    validated = run_cli("validate", "--repo", str(repo), cwd=repo)
    assert validated.returncode == 0, validated.stdout + validated.stderr

    out = tmp_path / "first"
    release(repo, out, secret_key, version=Version.parse("2026.12.0"))
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [(c["id"], c["rows"]) for c in manifest["catalogs"]] == [("kato", 16264)]
    bundle = bundle_path(out, "2026.12.0")
    for target in (bundle, out / "manifest.json"):
        checked = subprocess.run(
            [minisign, "-V", "-p", str(out / "minisign.pub"), "-m", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
    tested = subprocess.run(
        [seven_zip, "t", str(bundle)], capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout
    assert verify_bundle(bundle, [secret_key.public]).version == "2026.12.0"
    git(repo, "tag", "release/2026.12.0")

    lines = source.read_text(encoding="utf-8-sig").splitlines()
    header, rows = lines[0], lines[1:]
    parents = {row.split(";")[1] for row in rows}
    leaves = [row for row in rows if row.split(";")[0] not in parents]
    renamed, removed = leaves[10], leaves[20]
    fields = renamed.split(";")
    fields[3] = fields[3] + " (переименован)"
    refreshed = [";".join(fields) if row == renamed else row for row in rows if row != removed]
    new_source = tmp_path / "kato_refreshed.csv"
    new_source.write_text("\n".join([header, *refreshed]) + "\n", encoding="utf-8")
    imported = run_cli(
        "catalog.import",
        "--repo",
        str(repo),
        "--id",
        "kato",
        "--from",
        str(new_source),
        "--key",
        "id",
        "--delimiter",
        ";",
        cwd=repo,
    )
    assert imported.returncode == 0, imported.stderr
    assert "0 added, 1 changed, 1 removed" in imported.stdout
    git(repo, "commit", "-q", "-am", "Refresh KATO: one settlement renamed, one removed")

    out = tmp_path / "second"
    release(repo, out, secret_key, version=Version.parse("2026.12.1"))
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["changes"] == {
        "catalog": [
            {
                "item": "kato",
                "path": "catalogs/kato/rows.csv",
                "change": "modified",
                "commits": [manifest["source"]["commit"]],
            }
        ]
    }
    assert [(c["id"], c["rows"]) for c in manifest["catalogs"]] == [("kato", 16263)]


def test_cli_lists_report_tasks() -> None:
    listed = run_cli("--list", cwd=REPO_ROOT)
    names = {line.split()[0] for line in listed.stdout.splitlines() if line.startswith("  ")}
    assert {"report.merge", "report.preview", "publish.refresh", "db.recover"} <= names


def test_release_on_tagged_commit_uses_that_tag(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    git(demo_repo, "tag", "release/2026.11.0")
    result = release(
        demo_repo, tmp_path / "o", secret_key, version=Version.parse("2026.12.0"), allow_empty=True
    )
    assert result.changes.base_tag == "release/2026.11.0"
    assert result.changes.changes == ()


def test_rebuild_of_tagged_release_keeps_earlier_base(
    demo_repo: Path, secret_key: signing.SecretKey, tmp_path: Path
) -> None:
    git(demo_repo, "tag", "release/2026.11.0")
    (demo_repo / "migrations/0099_x.sql").write_text("SELECT 1;\n", encoding="utf-8")
    names = sorted(p.name for p in (demo_repo / "migrations").glob("*.sql"))
    (demo_repo / "migrations/0099_x.sql").rename(
        demo_repo / f"migrations/{int(names[-2][:4]) + 1:04d}_x.sql"
    )
    git(demo_repo, "add", "-A")
    git(demo_repo, "commit", "-q", "-m", "Add a migration")
    git(demo_repo, "tag", "release/2026.12.0")
    result = release(demo_repo, tmp_path / "o", secret_key, version=Version.parse("2026.12.0"))
    assert result.changes.base_tag == "release/2026.11.0"
    with pytest.raises(BundleError, match=r"2026\.11\.5 is older than release/2026\.12\.0"):
        release(demo_repo, tmp_path / "p", secret_key, version=Version.parse("2026.11.5"))


def test_release_database_override_in_work_tree(demo_repo: Path, tmp_path: Path) -> None:
    url = "sqlite:///.samples/small.sqlite"
    keys = tmp_path / "keys"
    signing.generate_keypair(keys / "release.key", keys / "minisign.pub")
    args = ["--key", str(keys / "release.key"), "--database", url, "--version", "2026.12.0"]

    dry = run_cli("dry-run", "--database", url, cwd=demo_repo)
    released = run_cli("release", *args, "--out", str(tmp_path / "o"), cwd=demo_repo)

    # The URL is the configured one, so its `generate` applies and its path is in the work tree.
    assert dry.returncode == 0, dry.stderr
    assert released.returncode == 0, released.stderr
    assert (demo_repo / ".samples" / "small.sqlite").is_file()


def test_release_failure_names_every_sample(
    demo_repo: Path, tmp_path: Path, secret_key: signing.SecretKey
) -> None:
    urls = []
    for name in ("one", "two"):
        generate_sample(demo_repo, demo_repo / ".samples" / f"{name}.sqlite", "small")
        urls.append(f"sqlite:///.samples/{name}.sqlite")
    (demo_repo / "migrations" / "0004_broken.sql").write_text(
        "ALTER TABLE nowhere ADD COLUMN note TEXT;\n", "utf-8"
    )
    git(demo_repo, "add", "-A")
    git(demo_repo, "commit", "-q", "-m", "Add a broken migration")

    with pytest.raises(MigrationError) as error:
        release(
            demo_repo,
            tmp_path / "o",
            secret_key,
            version=Version.parse("2026.12.0"),
            databases=urls,
        )

    message = str(error.value)
    assert message.startswith("dry-run failed on 2 of 2 sample databases; one.sqlite: ")
    assert "; two.sqlite: " in message
    assert message.count("no such table: nowhere") == 2


def test_cli_failed_release_writes_report(demo_repo: Path, tmp_path: Path) -> None:
    (demo_repo / "migrations" / "0004_broken.sql").write_text(
        "ALTER TABLE nowhere ADD COLUMN note TEXT;\n", "utf-8"
    )
    git(demo_repo, "add", "-A")
    git(demo_repo, "commit", "-q", "-m", "Add a broken migration")
    report = tmp_path / "release.json"

    failed = run_cli(
        "release", "--demo-key", "--out", str(tmp_path / "o"), "--json", str(report), cwd=demo_repo
    )

    assert failed.returncode == 1
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["status"] == "failed"
    assert "no such table: nowhere" in data["error"]
    assert data["error"] in failed.stderr
