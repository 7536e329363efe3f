"""The collect stage against real git repositories made in tmp_path."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import git

from pipeline import collect as collect_module
from pipeline.collect import Change, ChangeSet, collect, find_base_tag, has_release_tags
from pipeline.content import Kind, classify
from pipeline.errors import CollectError
from pipeline.versions import Version

FIX_FILE = "packages/fixes/ФХ-1/payload/Отчёт.xml"


def write(repo: Path, path: str, text: str = "x\n") -> None:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def commit(repo: Path, message: str) -> str:
    """Stage everything, commit, and return the full id of the new commit."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def tag(repo: Path, name: str, rev: str = "HEAD", annotated: bool = True) -> None:
    if annotated:
        git(repo, "tag", "-a", "-m", f"Release {name}", name, rev)
    else:
        git(repo, "tag", name, rev)


def summary(changes: tuple[Change, ...]) -> list[tuple[str, str, str, str, str | None]]:
    """Reduce changes to (kind, item, change, path, old_path) for exact comparison."""
    return [(c.kind.value, c.item, c.change, c.path, c.old_path) for c in changes]


def commits_of(change_set: ChangeSet) -> dict[str, tuple[str, ...]]:
    return {change.path: change.commits for change in change_set.changes}


@pytest.fixture
def one_round_results(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What each call of the one-round collect returned, None where it gave way."""
    results: list[object] = []
    one_round = collect_module._quick_range

    def spy(*args: Any) -> object:
        result = one_round(*args)
        results.append(result)
        return result

    monkeypatch.setattr(collect_module, "_quick_range", spy)
    return results


@pytest.fixture
def released(git_repo: Path) -> tuple[Path, str]:
    """A repository with one commit of every kind of content, tagged release/2026.11.0."""
    write(git_repo, "README.md", "content repository\n")
    write(git_repo, "catalogs/kbk/catalog.json", "{}\n")
    write(git_repo, "catalogs/kbk/rows.csv", "code\n1\n")
    write(git_repo, "catalogs/oked/catalog.json", "{}\n")
    write(git_repo, "migrations/0001_init.sql", "CREATE TABLE t (id INTEGER);\n")
    write(git_repo, "packages/reports/R-01/report.json", "{}\n")
    write(git_repo, "packages/reports/R-01/query.sql", "SELECT 1;\n")
    write(git_repo, "packages/forms/F-02/form.json", "{}\n")
    write(git_repo, "packages/treasury/mt940/format.json", "{}\n")
    base = commit(git_repo, "Add the first content")
    tag(git_repo, "release/2026.11.0")
    return git_repo, base


def test_first_release_adds_every_content_file(git_repo: Path) -> None:
    write(git_repo, "README.md")
    write(git_repo, "catalogs/README.md")
    write(git_repo, "catalogs/kbk/catalog.json")
    write(git_repo, "migrations/0001_init.sql")
    write(git_repo, "migrations/notes.txt")
    first = commit(git_repo, "Add a catalog and a migration")
    write(git_repo, "catalogs/kbk/rows.csv")
    write(git_repo, FIX_FILE)
    write(git_repo, "packages/fixes/ФХ-1/fix.json")
    write(git_repo, "packages/fixes/index.md")
    second = commit(git_repo, "Add rows and a fix")

    change_set = collect(git_repo)

    assert change_set.commit == second
    assert change_set.base_tag is None
    assert change_set.base_commit is None
    assert summary(change_set.changes) == [
        ("catalog", "kbk", "added", "catalogs/kbk/catalog.json", None),
        ("catalog", "kbk", "added", "catalogs/kbk/rows.csv", None),
        ("migration", "0001_init.sql", "added", "migrations/0001_init.sql", None),
        ("fix", "ФХ-1", "added", "packages/fixes/ФХ-1/fix.json", None),
        ("fix", "ФХ-1", "added", FIX_FILE, None),
    ]
    assert commits_of(change_set) == {
        "catalogs/kbk/catalog.json": (first,),
        "catalogs/kbk/rows.csv": (second,),
        "migrations/0001_init.sql": (first,),
        "packages/fixes/ФХ-1/fix.json": (second,),
        FIX_FILE: (second,),
    }


def test_second_release_lists_each_change_type(released: tuple[Path, str]) -> None:
    repo, base = released
    write(repo, "catalogs/kbk/rows.csv", "code\n1\n2\n")
    write(repo, "migrations/0002_add_column.sql", "ALTER TABLE t ADD c TEXT;\n")
    git(repo, "mv", "packages/reports/R-01/query.sql", "packages/reports/R-01/data.sql")
    first = commit(repo, "Add a row, a migration, and rename the report query")
    git(repo, "rm", "-q", "-r", "packages/forms/F-02")
    write(repo, FIX_FILE)
    write(repo, "catalogs/kbk/rows.csv", "code\n1\n2\n3\n")
    second = commit(repo, "Remove a form, add a fix, add another row")

    change_set = collect(repo)

    assert change_set.base_tag == "release/2026.11.0"
    assert change_set.base_commit == base
    assert summary(change_set.changes) == [
        ("catalog", "kbk", "modified", "catalogs/kbk/rows.csv", None),
        ("migration", "0002_add_column.sql", "added", "migrations/0002_add_column.sql", None),
        ("fix", "ФХ-1", "added", FIX_FILE, None),
        (
            "report",
            "R-01",
            "renamed",
            "packages/reports/R-01/data.sql",
            "packages/reports/R-01/query.sql",
        ),
        ("form", "F-02", "deleted", "packages/forms/F-02/form.json", None),
    ]
    assert commits_of(change_set) == {
        "catalogs/kbk/rows.csv": (first, second),
        "migrations/0002_add_column.sql": (first,),
        FIX_FILE: (second,),
        "packages/reports/R-01/data.sql": (first,),
        "packages/forms/F-02/form.json": (second,),
    }


def test_renamed_commits_include_old_path(git_repo: Path) -> None:
    # Rename detection needs the old and new file to stay at least half similar.
    layout = "".join(f"column_{n}: 20\n" for n in range(20))
    write(git_repo, "packages/reports/R-01/layout.txt", layout)
    commit(git_repo, "Add a report layout")
    tag(git_repo, "release/2026.11.0")
    write(git_repo, "packages/reports/R-01/layout.txt", layout + "total: 30\n")
    edit = commit(git_repo, "Add a total to the layout")
    git(git_repo, "mv", "packages/reports/R-01/layout.txt", "packages/reports/R-01/page.txt")
    rename = commit(git_repo, "Rename the layout")
    write(git_repo, "packages/reports/R-01/page.txt", layout + "total: 40\n")
    after = commit(git_repo, "Widen the total")

    change_set = collect(git_repo)

    assert summary(change_set.changes) == [
        (
            "report",
            "R-01",
            "renamed",
            "packages/reports/R-01/page.txt",
            "packages/reports/R-01/layout.txt",
        ),
    ]
    assert change_set.changes[0].commits == (edit, rename, after)


def test_cyrillic_paths_come_out_exact(released: tuple[Path, str]) -> None:
    repo, _ = released
    write(repo, FIX_FILE)
    write(repo, "packages/fixes/ФХ-1/payload/Справочник КБК.csv")
    commit(repo, "Add a fix with Cyrillic file names")

    change_set = collect(repo)

    paths = [change.path for change in change_set.changes]
    assert paths == [FIX_FILE, "packages/fixes/ФХ-1/payload/Справочник КБК.csv"]
    assert change_set.items(Kind.FIX) == ["ФХ-1"]
    text = json.dumps(change_set.to_json(), ensure_ascii=False)
    assert FIX_FILE in text
    assert "\\320" not in text


def test_non_content_paths_are_ignored(released: tuple[Path, str]) -> None:
    repo, _ = released
    write(repo, "README.md", "changed\n")
    write(repo, "catalogs/README.md")
    write(repo, "packages/reports/index.md")
    write(repo, "migrations/archive/0000_old.sql")
    write(repo, "docs/catalogs/kbk/rows.csv")
    commit(repo, "Change only files outside the content layout")

    change_set = collect(repo)

    assert change_set.changes == ()
    assert change_set.items(Kind.CATALOG) == []


def test_rename_across_content_boundary(released: tuple[Path, str]) -> None:
    repo, _ = released
    body = "\n".join(f"line {n}" for n in range(40)) + "\n"
    write(repo, "drafts/treasury.txt", body)
    write(repo, "packages/forms/F-02/layout.txt", body.replace("line", "row"))
    commit(repo, "Add a draft and a form layout")
    tag(repo, "release/2026.12.0")
    git(repo, "mv", "drafts/treasury.txt", "packages/treasury/mt940/sample.txt")
    (repo / "archive").mkdir()
    git(repo, "mv", "packages/forms/F-02/layout.txt", "archive/layout.txt")
    git(repo, "mv", "packages/reports/R-01/query.sql", "packages/forms/F-02/query.sql")
    commit(repo, "Move files into, out of and between content folders")

    change_set = collect(repo)

    assert summary(change_set.changes) == [
        ("form", "F-02", "deleted", "packages/forms/F-02/layout.txt", None),
        (
            "form",
            "F-02",
            "renamed",
            "packages/forms/F-02/query.sql",
            "packages/reports/R-01/query.sql",
        ),
        ("treasury", "mt940", "added", "packages/treasury/mt940/sample.txt", None),
    ]
    assert change_set.items(Kind.FORM) == ["F-02"]
    assert change_set.items(Kind.REPORT) == ["R-01"]
    assert change_set.items(Kind.TREASURY) == ["mt940"]


@pytest.mark.parametrize("annotated", [True, False], ids=["annotated", "lightweight"])
def test_base_tag_annotated_or_lightweight(git_repo: Path, annotated: bool) -> None:
    write(git_repo, "catalogs/kbk/catalog.json")
    base = commit(git_repo, "Add a catalog")
    tag(git_repo, "release/2026.11.0", annotated=annotated)
    write(git_repo, "catalogs/kbk/rows.csv")
    head = commit(git_repo, "Add rows")

    assert find_base_tag(git_repo, head) == ("release/2026.11.0", base)
    change_set = collect(git_repo)
    assert change_set.base_commit == base
    assert summary(change_set.changes) == [
        ("catalog", "kbk", "added", "catalogs/kbk/rows.csv", None),
    ]


def test_tag_on_release_commit_is_skipped(released: tuple[Path, str]) -> None:
    repo, base = released
    write(repo, "catalogs/kbk/rows.csv", "code\n2\n")
    head = commit(repo, "Change a row")
    tag(repo, "release/2026.12.0")

    first_build = collect(repo, "release/2026.12.0")

    assert first_build.commit == head
    assert first_build.base_tag == "release/2026.11.0"
    assert first_build.base_commit == base
    assert summary(first_build.changes) == [
        ("catalog", "kbk", "modified", "catalogs/kbk/rows.csv", None),
    ]


def test_only_tag_on_release_commit_means_first_release(git_repo: Path) -> None:
    write(git_repo, "catalogs/kbk/catalog.json")
    head = commit(git_repo, "Add a catalog")
    tag(git_repo, "release/2026.11.0")

    assert find_base_tag(git_repo, head) is None
    assert collect(git_repo).base_tag is None


def test_highest_version_wins_over_newest_commit(released: tuple[Path, str]) -> None:
    repo, base = released
    write(repo, "catalogs/kbk/rows.csv", "code\n2\n")
    commit(repo, "Change a row")
    tag(repo, "release/2026.10.1")
    tag(repo, "release/2026.13.0", annotated=False)
    tag(repo, "release/latest")
    tag(repo, "v2027.1.0")
    git(repo, "tag", "release/2027.01.0", "HEAD^{tree}")
    git(repo, "checkout", "-q", "-b", "hotfix", base)
    write(repo, "catalogs/oked/rows.csv")
    commit(repo, "Hotfix on a branch")
    tag(repo, "release/2026.12.5")
    git(repo, "checkout", "-q", "main")
    write(repo, "migrations/0002_add_column.sql")
    head = commit(repo, "Add a migration")

    assert find_base_tag(repo, head) == ("release/2026.11.0", base)
    change_set = collect(repo)
    assert change_set.base_tag == "release/2026.11.0"
    assert [change.path for change in change_set.changes] == [
        "catalogs/kbk/rows.csv",
        "migrations/0002_add_column.sql",
    ]


def test_before_limits_base_tags(released: tuple[Path, str]) -> None:
    repo, november = released
    write(repo, "catalogs/kbk/rows.csv", "code\n2\n")
    december = commit(repo, "Change a row")
    tag(repo, "release/2026.12.0")
    write(repo, "migrations/0002_add_column.sql")
    head = commit(repo, "Add a migration")

    assert find_base_tag(repo, head) == ("release/2026.12.0", december)
    assert find_base_tag(repo, head, Version(2026, 12, 0)) == ("release/2026.11.0", november)
    assert find_base_tag(repo, head, Version(2026, 11, 0)) is None

    change_set = collect(repo, before=Version(2026, 12, 0))
    assert change_set.base_tag == "release/2026.11.0"
    assert [change.path for change in change_set.changes] == [
        "catalogs/kbk/rows.csv",
        "migrations/0002_add_column.sql",
    ]
    everything = collect(repo, before=Version(2026, 11, 0))
    assert everything.base_tag is None
    assert len(everything.changes) == 9


def test_revert_inside_range_leaves_no_change(released: tuple[Path, str]) -> None:
    repo, _ = released
    write(repo, "catalogs/kbk/rows.csv", "code\n1\n99\n")
    write(repo, "packages/treasury/mt940/format.json", '{"version": 2}\n')
    change = commit(repo, "Change a row and the treasury format")
    git(repo, "revert", "--no-edit", "HEAD")
    write(repo, "packages/treasury/mt940/format.json", '{"version": 3}\n')
    again = commit(repo, "Change the treasury format again")

    change_set = collect(repo)

    assert summary(change_set.changes) == [
        ("treasury", "mt940", "modified", "packages/treasury/mt940/format.json", None),
    ]
    revert = git(repo, "rev-parse", "HEAD^").strip()
    assert change_set.changes[0].commits == (change, revert, again)


def test_merge_commits_attribute_branch_work(
    released: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = released

    def commit_at(message: str, minute: int) -> str:
        monkeypatch.setenv("GIT_COMMITTER_DATE", f"2026-12-01T09:{minute:02d}:00Z")
        return commit(repo, message)

    git(repo, "checkout", "-q", "-b", "feature")
    write(repo, "catalogs/kbk/rows.csv", "code\n1\nfeature\n")
    write(repo, "migrations/0002_feature.sql")
    feature = commit_at("Change rows on a branch", 1)
    git(repo, "checkout", "-q", "main")
    write(repo, "catalogs/kbk/rows.csv", "code\n1\nmain\n")
    main = commit_at("Change rows on main", 2)
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-12-01T09:03:00Z")
    with pytest.raises(subprocess.CalledProcessError):
        git(repo, "merge", "-q", "feature")
    write(repo, "catalogs/kbk/rows.csv", "code\n1\nmain\nfeature\n")
    merge = commit_at("Merge the branch, keeping both rows", 3)

    change_set = collect(repo)

    assert commits_of(change_set) == {
        "catalogs/kbk/rows.csv": (feature, main, merge),
        "migrations/0002_feature.sql": (feature,),
    }


def test_one_round_and_step_by_step_agree(
    released: tuple[Path, str], one_round_results: list[object]
) -> None:
    repo, _ = released
    git(repo, "checkout", "-q", "-b", "feature")
    git(repo, "mv", "packages/reports/R-01", "packages/reports/R-02")
    write(repo, "packages/reports/R-02/query.sql", "SELECT 2;\n")
    commit(repo, "Rename a report on a branch")
    git(repo, "checkout", "-q", "main")
    write(repo, "migrations/0002_add_column.sql")
    commit(repo, "Add a migration")
    git(repo, "merge", "-q", "--no-edit", "feature")
    at_head = collect(repo, "HEAD")
    by_branch = collect(repo, "main")

    assert one_round_results[0] is not None
    assert one_round_results[1] is None
    assert at_head.commit == by_branch.commit
    assert at_head.base_tag == by_branch.base_tag == "release/2026.11.0"
    assert at_head.commit_time == by_branch.commit_time
    assert at_head.changes == by_branch.changes
    assert ("report", "R-02", "renamed") in [
        (c.kind.value, c.item, c.change) for c in at_head.changes
    ]


def test_linear_range_diff_matches_git(
    released: tuple[Path, str], one_round_results: list[object]
) -> None:
    repo, _ = released
    write(repo, "migrations/0002_temporary.sql", "SELECT 1;\n")
    write(repo, "catalogs/kbk/rows.csv", "code\n1\n2\n")
    commit(repo, "Add a migration for a while and change rows")
    (repo / "migrations" / "0002_temporary.sql").unlink()
    git(repo, "mv", "packages/reports/R-01", "packages/reports/R-03")
    write(repo, "packages/reports/R-03/query.sql", "SELECT 1;\nSELECT 3;\n")
    (repo / "packages/forms/F-02/form.json").chmod(0o755)
    commit(repo, "Drop the migration, rename a report, make a form executable")
    (repo / "catalogs/oked/catalog.json").unlink()
    (repo / "catalogs/oked/catalog.json").symlink_to("../kbk/catalog.json")
    write(repo, "catalogs/kbk/rows.csv", "code\n1\n")
    commit(repo, "Turn a catalog file into a link and restore the rows")
    at_head = collect(repo, "HEAD")
    by_branch = collect(repo, "main")

    assert one_round_results[0] is not None
    assert at_head.changes == by_branch.changes
    assert summary(at_head.changes) == [
        ("catalog", "oked", "modified", "catalogs/oked/catalog.json", None),
        ("report", "R-03", "renamed", "packages/reports/R-03/query.sql",
         "packages/reports/R-01/query.sql"),
        ("report", "R-03", "renamed", "packages/reports/R-03/report.json",
         "packages/reports/R-01/report.json"),
        ("form", "F-02", "modified", "packages/forms/F-02/form.json", None),
    ]  # fmt: skip


def test_commit_time_is_committer_time(git_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(git_repo, "catalogs/kbk/catalog.json")
    monkeypatch.setenv("GIT_AUTHOR_DATE", "2026-11-20T08:00:00Z")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-12-01T09:00:00Z")
    commit(git_repo, "Add a catalog")

    change_set = collect(git_repo)

    assert change_set.commit_time == int(datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp())


def test_to_json_shape(released: tuple[Path, str]) -> None:
    repo, base = released
    write(repo, FIX_FILE)
    head = commit(repo, "Add a fix")

    document = collect(repo).to_json()

    assert list(document) == ["commit", "commit_time", "base_tag", "base_commit", "changes"]
    assert document["commit"] == head
    assert document["base_tag"] == "release/2026.11.0"
    assert document["base_commit"] == base
    assert list(document["changes"]) == [kind.value for kind in Kind]
    assert document["changes"]["fix"] == [
        {
            "item": "ФХ-1",
            "change": "added",
            "path": FIX_FILE,
            "old_path": None,
            "commits": [head],
        }
    ]
    assert document["changes"]["catalog"] == []
    assert json.loads(json.dumps(document)) == document


def test_by_kind_and_items(released: tuple[Path, str]) -> None:
    repo, _ = released
    write(repo, "catalogs/oked/rows.csv")
    write(repo, "catalogs/kbk/rows.csv", "code\n2\n")
    write(repo, "catalogs/kbk/catalog.json", '{"id": "kbk"}\n')
    commit(repo, "Change two catalogs")

    change_set = collect(repo)

    groups = change_set.by_kind()
    assert list(groups) == list(Kind)
    assert [c.path for c in groups[Kind.CATALOG]] == [
        "catalogs/kbk/catalog.json",
        "catalogs/kbk/rows.csv",
        "catalogs/oked/rows.csv",
    ]
    assert groups[Kind.MIGRATION] == []
    assert change_set.items(Kind.CATALOG) == ["kbk", "oked"]
    assert change_set.items(Kind.REPORT) == []


def test_info_line_names_commit_base_and_counts(
    released: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    repo, _ = released
    write(repo, FIX_FILE)
    write(repo, "catalogs/oked/rows.csv")
    head = commit(repo, "Add a fix and rows")

    with caplog.at_level(logging.INFO, logger="pipeline.collect"):
        collect(repo)

    messages = [
        r.getMessage()
        for r in caplog.records
        if r.name == "pipeline.collect" and r.levelno == logging.INFO
    ]
    assert messages == [f"collected 2 changes at {head} since release/2026.11.0: catalog 1, fix 1"]


def test_shallow_clone_without_base_tag_fails(released: tuple[Path, str], tmp_path: Path) -> None:
    repo, _ = released
    write(repo, "catalogs/kbk/rows.csv", "code\n2\n")
    commit(repo, "Change a row")
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))

    with pytest.raises(CollectError) as caught:
        collect(clone)

    message = str(caught.value)
    assert str(clone) in message
    assert "shallow" in message
    assert "git fetch --unshallow --tags" in message
    assert "fetch-depth: 0" in message


def test_shallow_clone_with_cut_tag_history_fails(
    released: tuple[Path, str], tmp_path: Path
) -> None:
    repo, _ = released
    write(repo, "catalogs/kbk/rows.csv", "code\n2\n")
    commit(repo, "Change a row")
    write(repo, "catalogs/kbk/rows.csv", "code\n3\n")
    commit(repo, "Change the row again")
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    git(clone, "fetch", "-q", "--depth", "1", "origin", "tag", "release/2026.11.0")

    with pytest.raises(CollectError, match="no release tag is reachable") as caught:
        collect(clone)

    assert "git fetch --unshallow --tags" in str(caught.value)


def test_shallow_clone_with_missing_tag_commit_fails(
    released: tuple[Path, str], tmp_path: Path
) -> None:
    repo, base = released
    write(repo, "catalogs/kbk/rows.csv", "code\n2\n")
    commit(repo, "Change a row")
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    # git refuses to create a ref to an object it lacks, so write the ref file directly.
    ref_file = clone / ".git" / "refs" / "tags" / "release" / "2026.11.0"
    ref_file.parent.mkdir(parents=True)
    ref_file.write_text(base + "\n", encoding="ascii")

    with pytest.raises(CollectError) as caught:
        collect(clone)

    message = str(caught.value)
    assert "release tag release/2026.11.0 points at a commit that is missing" in message
    assert "git fetch --unshallow --tags" in message
    assert "fetch-depth: 0" in message


def test_shallow_clone_reaching_base_tag_works(git_repo: Path, tmp_path: Path) -> None:
    write(git_repo, "README.md")
    commit(git_repo, "Start the repository")
    write(git_repo, "catalogs/kbk/rows.csv", "code\n1\n")
    base = commit(git_repo, "Add rows")
    tag(git_repo, "release/2026.11.0")
    write(git_repo, "catalogs/kbk/rows.csv", "code\n2\n")
    head = commit(git_repo, "Change a row")
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "2", f"file://{git_repo}", str(clone))
    assert git(clone, "rev-parse", "--is-shallow-repository").strip() == "true"

    change_set = collect(clone)

    assert change_set.base_tag == "release/2026.11.0"
    assert change_set.base_commit == base
    assert summary(change_set.changes) == [
        ("catalog", "kbk", "modified", "catalogs/kbk/rows.csv", None),
    ]
    assert change_set.changes[0].commits == (head,)


def test_missing_tag_commit_in_full_clone_fails(git_repo: Path) -> None:
    write(git_repo, "catalogs/kbk/catalog.json")
    commit(git_repo, "Add a catalog")
    ref_file = git_repo / ".git" / "refs" / "tags" / "release" / "2026.11.0"
    ref_file.parent.mkdir(parents=True)
    ref_file.write_text("1" * 40 + "\n", encoding="ascii")

    with pytest.raises(CollectError, match="missing from the repository") as caught:
        collect(git_repo)

    assert "git fsck" in str(caught.value)


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()

    with pytest.raises(CollectError) as caught:
        collect(plain)

    assert str(caught.value).startswith(f"{plain}: not a git repository")


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "missing"

    with pytest.raises(CollectError, match="no such folder") as caught:
        find_base_tag(missing, "HEAD")

    assert str(missing) in str(caught.value)


def test_repository_without_commits(git_repo: Path) -> None:
    with pytest.raises(CollectError) as caught:
        collect(git_repo)

    assert (
        str(caught.value) == f"{git_repo}: the repository has no commits; commit the content first"
    )


@pytest.mark.parametrize("rev", ["no-such-branch", "--all", "HEAD^{tree}", "release/2026.11.0"])
def test_bad_revision(git_repo: Path, rev: str) -> None:
    write(git_repo, "catalogs/kbk/catalog.json")
    commit(git_repo, "Add a catalog")

    with pytest.raises(CollectError) as caught:
        collect(git_repo, rev)

    message = str(caught.value)
    assert message.startswith(f"{git_repo}: revision {rev!r} does not name a commit")
    assert "expected a commit id, branch or tag" in message


def test_content_path_not_utf8_fails(git_repo: Path) -> None:
    bad = os.fsdecode(b"packages/fixes/F-1/payload/\xcf\xf0\xe8.xml")
    write(git_repo, bad)
    write(git_repo, os.fsdecode(b"notes/\xcf\xf0\xe8.txt"))
    commit(git_repo, "Add a payload file named in CP1251")

    with pytest.raises(CollectError, match="is not valid UTF-8") as caught:
        collect(git_repo)

    assert "packages/fixes/F-1/payload/" in str(caught.value)


def test_non_utf8_path_outside_content_is_ignored(git_repo: Path) -> None:
    write(git_repo, os.fsdecode(b"notes/\xcf\xf0\xe8.txt"))
    write(git_repo, "catalogs/kbk/catalog.json")
    commit(git_repo, "Add a CP1251-named note and a catalog")

    change_set = collect(git_repo)

    assert [change.path for change in change_set.changes] == ["catalogs/kbk/catalog.json"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("catalogs/kato/rows.csv", (Kind.CATALOG, "kato")),
        ("catalogs/README.md", None),
        ("migrations/0001_init.sql", (Kind.MIGRATION, "0001_init.sql")),
        ("migrations/0001_init.sqlite.sql", (Kind.MIGRATION, "0001_init.sqlite.sql")),
        ("migrations/old/0001_init.sql", None),
        ("migrations/0001_init.txt", None),
        ("packages/fixes/rounding/fix.json", (Kind.FIX, "rounding")),
        ("packages/fixes/README.md", None),
        ("packages/README.md", None),
        ("packages", None),
        ("packages/reports/f-1/sql/data.sql", (Kind.REPORT, "f-1")),
        ("packages/forms/f-2/form.json", (Kind.FORM, "f-2")),
        ("packages/treasury/mt940/format.json", (Kind.TREASURY, "mt940")),
        ("docs/catalogs/kato/rows.csv", None),
        ("./catalogs/kato/rows.csv", (Kind.CATALOG, "kato")),
        ("catalogs//kato/rows.csv", (Kind.CATALOG, "kato")),
        ("/catalogs/kato/rows.csv", None),
        ("", None),
        (".", None),
    ],
)
def test_classify_paths(path: str, expected: tuple[Kind, str] | None) -> None:
    content = classify(path)

    found = None if content is None else (content.kind, content.item)
    assert found == expected


def test_has_release_tags_reads_ref_files(git_repo: Path, tmp_path: Path) -> None:
    write(git_repo, "catalogs/kbk/catalog.json", "{}\n")
    commit(git_repo, "Add a catalog")
    tag(git_repo, "v1.0", annotated=False)
    before = has_release_tags(git_repo)
    tag(git_repo, "release/2026.11.0")
    git(git_repo, "pack-refs", "--all")

    assert not before
    assert has_release_tags(git_repo)
    assert has_release_tags(tmp_path / "not-a-repository")
