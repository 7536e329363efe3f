"""The collect stage: the content that changed since the last release, from git history.

The base of a release is the `release/YYYY.MM.N` tag with the highest version
whose commit is a proper ancestor of the release commit. The change set is the
tree diff from that commit to the release commit, with rename detection, kept
to content paths (`pipeline.content.classify`). Without a base tag every
content file of the release commit is "added".

Git runs through GitPython's command wrapper with NUL-separated output, so
paths come out as git stores them, never in git's quoted octal form.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import git

from pipeline.content import Kind, classify
from pipeline.errors import CollectError
from pipeline.versions import Version

log = logging.getLogger(__name__)

ChangeType = Literal["added", "modified", "renamed", "deleted"]

_KIND_ORDER = {kind: index for index, kind in enumerate(Kind)}
_FETCH_HINT = (
    "fetch the full history with `git fetch --unshallow --tags`,"
    " or set `fetch-depth: 0` on the CI checkout"
)


@dataclass(frozen=True)
class Change:
    """One changed content file of a release.

    `commits` are the full ids of the commits in the release range whose own
    diff changes `path` or `old_path`, oldest first. A merge commit counts only
    where its result differs from every parent (a conflict resolution or an
    edit made in the merge).
    """

    kind: Kind
    item: str
    change: ChangeType
    path: str
    old_path: str | None
    commits: tuple[str, ...]


@dataclass(frozen=True)
class ChangeSet:
    """The content changes between the base release tag and the release commit."""

    repo: Path
    commit: str
    commit_time: int
    base_tag: str | None
    base_commit: str | None
    changes: tuple[Change, ...]

    def by_kind(self) -> dict[Kind, list[Change]]:
        """Group the changes by kind. Every kind is present, in the order of `Kind`."""
        groups: dict[Kind, list[Change]] = {kind: [] for kind in Kind}
        for change in self.changes:
            groups[change.kind].append(change)
        return groups

    def items(self, kind: Kind) -> list[str]:
        """Return the sorted ids of the items of `kind` that changed.

        A rename counts for the item it left as well as the item it entered,
        because the old item lost a file.
        """
        found: set[str] = set()
        for change in self.changes:
            if change.kind is kind:
                found.add(change.item)
            if change.old_path is not None:
                old = classify(change.old_path)
                if old is not None and old.kind is kind:
                    found.add(old.item)
        return sorted(found)

    def to_json(self) -> dict[str, Any]:
        """Return the change set as a JSON-able dict with a fixed key order.

        The repository path is left out, so two checkouts of one commit give
        equal dicts. `changes` has a list for every kind, in the order of `Kind`.
        """
        return {
            "commit": self.commit,
            "commit_time": self.commit_time,
            "base_tag": self.base_tag,
            "base_commit": self.base_commit,
            "changes": {
                kind.value: [_change_json(change) for change in changes]
                for kind, changes in self.by_kind().items()
            },
        }


def _change_json(change: Change) -> dict[str, Any]:
    return {
        "item": change.item,
        "change": change.change,
        "path": change.path,
        "old_path": change.old_path,
        "commits": list(change.commits),
    }


def has_release_tags(repo: Path) -> bool:
    """Tell whether `repo` has a release tag, reading the ref files without a git process.

    Returns True when the ref files cannot show it (refs in a reftable, an unreadable
    repository), so the caller then asks git.
    """
    try:
        with _open_repo(repo) as handle:
            return bool(_release_tags_from_files(handle, None)) or _reftable(handle)
    except (CollectError, OSError, ValueError):
        return True


def find_base_tag(
    repo: Path, commit: str, before: Version | None = None
) -> tuple[str, str] | None:
    """Find the release tag a release at `commit` is built against.

    Returns the tag name and the full id of its commit, or None when no release
    tag qualifies (the first release). With `before`, only tags with a lower
    version count.

    Raises:
        CollectError: `repo` is not a git repository, `commit` does not name a
            commit, a release tag points at a missing object, or the clone is
            shallow and no release tag is reachable.
    """
    with _open_repo(repo) as handle:
        return _resolve_and_find_base(handle, repo, commit, before)[1]


def collect(repo: Path, rev: str = "HEAD", before: Version | None = None) -> ChangeSet:
    """Collect the content changes of the release at `rev`.

    Raises:
        CollectError: `repo` is not a git repository or has no commits, `rev`
            does not name a commit, or history needed for the base is missing.
    """
    with _open_repo(repo) as handle:
        base: tuple[str, str] | None
        quick = _quick_range(handle, repo, rev, before)
        if quick is not None:
            commit, base, pending, history = quick
        else:
            commit, tags = _resolve_and_list_tags(handle, repo, rev, before)
            base = _find_base(handle, repo, commit, tags, include_own=before is not None)
            entries, history = _entries_and_history(handle, base[1] if base else None, commit)
            pending = _content_changes(repo, entries)
        base_tag, base_commit = base if base is not None else (None, None)
        changes = [_with_commits(change, history) for change in pending]
        changes.sort(key=lambda c: (_KIND_ORDER[c.kind], c.path))
        commit_time = history.times.get(commit)
        if commit_time is None:
            # The release commit is in its own range, so this is only a safety net.
            commit_time = handle.commit(commit).committed_date

    counts = Counter(change.kind for change in changes)
    summary = ", ".join(f"{kind.value} {counts[kind]}" for kind in Kind if counts[kind])
    log.info(
        "collected %d changes at %s since %s: %s",
        len(changes),
        commit,
        base_tag or "the start of history (no release tag)",
        summary or "none",
    )
    return ChangeSet(
        repo=repo,
        commit=commit,
        commit_time=commit_time,
        base_tag=base_tag,
        base_commit=base_commit,
        changes=tuple(changes),
    )


def _entries_and_history(
    handle: git.Repo, base_commit: str | None, commit: str
) -> tuple[list[_Entry], _History]:
    """Read the tree diff and the history of the range with two concurrent git processes.

    The two commands do not depend on each other, so on two or more cores the
    stage takes about as long as the slower one.
    """
    rev_range = commit if base_commit is None else f"{base_commit}..{commit}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        history_future = pool.submit(_read_history, handle, rev_range)
        entries: list[_Entry]
        if base_commit is None:
            entries = [("A", path, None) for path in _tree_paths(handle, commit)]
        else:
            entries = _diff_entries(handle, base_commit, commit)
        history = history_future.result()
    return entries, history


def _open_repo(path: Path) -> git.Repo:
    try:
        return git.Repo(path)
    except git.NoSuchPathError as exc:
        raise CollectError(f"{path}: no such folder; expected a git repository") from exc
    except git.InvalidGitRepositoryError as exc:
        raise CollectError(
            f"{path}: not a git repository; pass the root folder of a content repository"
        ) from exc


def _git(handle: git.Repo, command: str, *args: str) -> str:
    """Run `git COMMAND ARGS` and return its standard output, raising CollectError on failure."""
    try:
        output: str = getattr(handle.git, command)(*args)
    except git.GitCommandError as exc:
        raise _command_error(handle, exc) from exc
    return output


def _git_bytes(handle: git.Repo, command: str, *args: str) -> bytes:
    """Run git like `_git`, but return the raw bytes of its output (for `-z` output)."""
    try:
        output: bytes = getattr(handle.git, command)(
            *args, stdout_as_string=False, strip_newline_in_stdout=False
        )
    except git.GitCommandError as exc:
        raise _command_error(handle, exc) from exc
    return output


def _command_error(handle: git.Repo, exc: git.GitCommandError) -> CollectError:
    stderr = str(exc.stderr).strip()
    command = " ".join(str(part) for part in exc.command)
    return CollectError(f"{handle.working_dir}: `{command}` failed ({exc.status}): {stderr}")


def _resolve_commit(handle: git.Repo, repo: Path, rev: str) -> str:
    """Return the full id of the commit `rev` names."""
    if rev and not rev.startswith("-"):
        try:
            commit: str = handle.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")
            return commit
        except git.GitCommandError as exc:
            # With --quiet, exit status 1 means no such commit. Anything else,
            # such as git rejecting a repository owned by another user, raises with its message.
            if exc.status != 1:
                raise _command_error(handle, exc) from exc
    if not _git(handle, "rev_list", "--all", "--max-count=1"):
        raise CollectError(f"{repo}: the repository has no commits; commit the content first")
    raise CollectError(
        f"{repo}: revision {rev!r} does not name a commit;"
        " expected a commit id, branch or tag that exists in this repository"
    )


def _is_shallow(handle: git.Repo) -> bool:
    return _git(handle, "rev_parse", "--is-shallow-repository") == "true"


def _resolve_and_find_base(
    handle: git.Repo, repo: Path, rev: str, before: Version | None
) -> tuple[str, tuple[str, str] | None]:
    """Return the full id of the commit `rev` names and its base tag and tag commit."""
    commit, tags = _resolve_and_list_tags(handle, repo, rev, before)
    return commit, _find_base(handle, repo, commit, tags, include_own=before is not None)


def _resolve_and_list_tags(
    handle: git.Repo, repo: Path, rev: str, before: Version | None
) -> tuple[str, list[tuple[Version, str]]]:
    """Return the full id of the commit `rev` names and the release tags below `before`.

    The release tags are listed while `rev` is resolved, because each git
    process costs a few milliseconds of start-up and the two do not depend on
    each other. An unknown `rev` is reported before any problem with the tags.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        tags_future = pool.submit(_release_tags, handle, before)
        commit = _resolve_commit(handle, repo, rev)
        tags = tags_future.result()
    return commit, tags


_HEX_ID = frozenset("0123456789abcdef")


def _quick_range(
    handle: git.Repo, repo: Path, rev: str, before: Version | None
) -> tuple[str, tuple[str, str], list[_Pending], _History] | None:
    """Read the usual case in one round of git processes; return None for any other case.

    The usual case: `rev` is HEAD or a full commit id, and the highest release
    tag is the base. The tag names and the commit HEAD points at are read from
    the ref files, so no git process has to run first. Then three git processes
    run at once: the tree diff and the history since that tag, and a
    `rev-parse` that confirms both ids. The history's boundary commits show
    whether the tag's commit is an ancestor of the release commit.

    None sends the caller to the step-by-step path, which also reports every
    error: an unknown `rev`, a tag that does not peel to a commit, a repository
    whose refs are not plain files, a base below the highest tag, or HEAD
    moving while this runs.
    """
    if rev != "HEAD" and not (len(rev) == 40 and _HEX_ID.issuperset(rev)):
        return None
    try:
        tags = _release_tags_from_files(handle, before)
        commit = git.SymbolicReference.dereference_recursive(handle, rev) if rev == "HEAD" else rev
    except (OSError, ValueError) as exc:
        log.debug("refs not read from files (%s); collecting step by step", exc)
        return None
    if not tags:
        return None
    tag = tags[0][1]
    base = f"refs/tags/{tag}^{{commit}}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        entries_future = pool.submit(_diff_entries, handle, base, commit)
        history_future = pool.submit(_read_history, handle, f"{base}..{commit}")
        ids = _try_rev_parse(handle, f"{commit}^{{commit}}", base)
        try:
            # The tree diff usually ends first, so its paths are classified
            # while the history is still being read.
            pending = _content_changes(repo, entries_future.result())
            history = history_future.result()
        except CollectError as exc:
            log.debug("quick range failed (%s); collecting step by step", exc)
            return None
    if ids is None or ids[0] != commit:
        return None
    tagged = ids[1]
    if tagged == commit:
        # A tag on the release commit is the base only for a build below its version.
        return (commit, (tag, tagged), pending, history) if before is not None else None
    if tagged not in history.boundary:
        return None
    log.debug("base tag is %s at %s (version %s)", tag, tagged, tags[0][0])
    return commit, (tag, tagged), pending, history


def _release_tags_from_files(
    handle: git.Repo, before: Version | None
) -> list[tuple[Version, str]]:
    """List the release tags below `before` from the ref files, highest version first.

    A repository that keeps its refs in a reftable has no such files, so it
    lists nothing here and goes the step-by-step way.
    """
    if _reftable(handle):
        return []
    refs: list[git.TagReference] = list(git.TagReference.list_items(handle))
    names = [ref.path for ref in refs]
    return _release_versions(names, before)


def _reftable(handle: git.Repo) -> bool:
    return Path(handle.common_dir, "reftable").exists()


def _try_rev_parse(handle: git.Repo, *revs: str) -> list[str] | None:
    """Return the ids that `revs` resolve to in one `git rev-parse`, or None when it fails."""
    try:
        output: str = handle.git.rev_parse(*revs)
    except git.GitCommandError:
        return None
    ids = output.split()
    return ids if len(ids) == len(revs) else None


def _find_base(
    handle: git.Repo,
    repo: Path,
    commit: str,
    tags: list[tuple[Version, str]],
    include_own: bool = False,
) -> tuple[str, str] | None:
    """Return the highest of `tags` whose commit is a proper ancestor of `commit`.

    With `include_own`, a tag on `commit` itself counts too: `tags` then holds
    only versions below the one being built, so such a tag is an earlier
    release of the same commit, not a rebuild of this one.

    For each tag, the ancestry check of the tag's commit runs in a thread
    while the tag is peeled, because it can name that commit as
    `refs/tags/TAG^{commit}` before its id is known. Its result counts only
    when the tag peels to a commit.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        for version, tag in tags:
            ancestry = pool.submit(_try_is_ancestor, handle, f"refs/tags/{tag}^{{commit}}", commit)
            tagged = _peel_tag(handle, repo, tag)
            is_ancestor = ancestry.result()
            if tagged is None:
                continue
            if tagged == commit:
                if include_own:
                    log.debug("base tag %s is on the release commit itself", tag)
                    return tag, tagged
                log.debug("tag %s is on the release commit itself, so it is not the base", tag)
                continue
            if is_ancestor is None:
                # The early check failed for another reason; this one reports it.
                is_ancestor = _is_ancestor(handle, tagged, commit)
            if not is_ancestor:
                log.debug("tag %s (%s) is not an ancestor of %s; skipped", tag, tagged, commit)
                continue
            log.debug("base tag is %s at %s (version %s)", tag, tagged, version)
            # NOTE: in a shallow clone a merged branch whose history is cut off still
            # yields a base, but its boundary commit then counts as adding every file.
            return tag, tagged

    if _is_shallow(handle):
        raise CollectError(
            f"{repo}: the clone is shallow and no release tag is reachable from {commit},"
            f" so the history back to the last release is missing; {_FETCH_HINT}"
        )
    log.debug("no release tag is an ancestor of %s; this is the first release", commit)
    return None


def _release_tags(handle: git.Repo, before: Version | None) -> list[tuple[Version, str]]:
    """List the release tags with a version below `before`, highest version first."""
    # Only ref names are read here, because asking for object fields makes git fail
    # on a tag whose object is missing. `_peel_tag` reports that case with a fix.
    output = _git(handle, "for_each_ref", "--format=%(refname)", "refs/tags")
    return _release_versions(output.splitlines(), before)


def _release_versions(refnames: list[str], before: Version | None) -> list[tuple[Version, str]]:
    """Keep the release tags of `refnames` with a version below `before`, highest first."""
    tags: list[tuple[Version, str]] = []
    for refname in refnames:
        tag = refname.removeprefix("refs/tags/")
        version = Version.from_tag(tag)
        if version is None:
            log.debug("tag %s is not a release/YYYY.MM.N tag; ignored", tag)
        elif before is not None and version >= before:
            log.debug("tag %s is not below version %s; ignored", tag, before)
        else:
            tags.append((version, tag))
    tags.sort(reverse=True)
    return tags


def _peel_tag(handle: git.Repo, repo: Path, tag: str) -> str | None:
    """Return the commit a tag points at, or None when it points at a tree or blob."""
    ref = f"refs/tags/{tag}"
    try:
        commit: str = handle.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        return commit
    except git.GitCommandError as exc:
        if exc.status != 1:
            raise _command_error(handle, exc) from exc
    # `^{}` peels to the first object that is not a tag, so for a tag that
    # for-each-ref listed it fails when an object on the way is missing.
    try:
        object_type = handle.git.cat_file("-t", f"{ref}^{{}}")
    except git.GitCommandError as exc:
        if _is_shallow(handle):
            hint = _FETCH_HINT
        else:
            hint = "fetch it with `git fetch --tags` or check the repository with `git fsck`"
        raise CollectError(
            f"{repo}: release tag {tag} points at a commit that is missing from the"
            f" repository, so the history back to the last release is missing; {hint}"
        ) from exc
    log.debug("tag %s points at a %s, not a commit; ignored", tag, object_type)
    return None


def _is_ancestor(handle: git.Repo, ancestor: str, descendant: str) -> bool:
    try:
        handle.git.merge_base("--is-ancestor", ancestor, descendant)
    except git.GitCommandError as exc:
        if exc.status == 1:
            return False
        raise _command_error(handle, exc) from exc
    return True


def _try_is_ancestor(handle: git.Repo, ancestor: str, descendant: str) -> bool | None:
    """Return whether `ancestor` is an ancestor of `descendant`, or None when git fails."""
    try:
        handle.git.merge_base("--is-ancestor", ancestor, descendant)
    except git.GitCommandError as exc:
        return False if exc.status == 1 else None
    return True


def _tree_paths(handle: git.Repo, commit: str) -> list[str]:
    """List every file path of the commit's tree."""
    output = _git_bytes(handle, "ls_tree", "-r", "-z", "--name-only", "--full-tree", commit)
    return [_decode_path(raw) for raw in output.split(b"\0") if raw]


# One entry of a tree diff: git's status letter, the path, and the old path of a rename.
_Entry = tuple[str, str, str | None]


def _diff_entries(handle: git.Repo, base: str, commit: str) -> list[_Entry]:
    """Diff two commits' trees with rename detection.

    `diff-tree` is plumbing, so user settings such as diff.renames or diff.relative do not
    change its output.
    """
    output = _git_bytes(handle, "diff_tree", "-r", "-z", "-M", "--name-status", base, commit)
    fields = [_decode_path(raw) for raw in output.split(b"\0")]
    entries: list[_Entry] = []
    index = 0
    while index < len(fields) and fields[index]:
        status = fields[index]
        if status.startswith("R"):
            # A rename is `R<score>`, the old path, then the new path.
            entries.append(("R", fields[index + 2], fields[index + 1]))
            index += 3
        else:
            entries.append((status, fields[index + 1], None))
            index += 2
    return entries


_CHANGE_TYPES: dict[str, ChangeType] = {
    "A": "added",
    "D": "deleted",
    "M": "modified",
    "T": "modified",
    "R": "renamed",
}


@dataclass(frozen=True)
class _Pending:
    """A content change from the tree diff, before the history names its commits."""

    kind: Kind
    item: str
    change: ChangeType
    path: str
    old_path: str | None


def _content_changes(repo: Path, entries: list[_Entry]) -> list[_Pending]:
    """Keep the diff entries that touch content, classified; see `_classify_entry`."""
    pending = []
    for entry in entries:
        change = _classify_entry(repo, entry)
        if change is not None:
            pending.append(change)
    return pending


def _classify_entry(repo: Path, entry: _Entry) -> _Pending | None:
    """Classify a diff entry as a content change, or return None when it touches no content path.

    Raises:
        CollectError: git printed an unknown status, or a content path is not UTF-8.
    """
    status, path, old_path = entry
    change = _CHANGE_TYPES.get(status)
    if change is None:
        raise CollectError(f"{repo}: unexpected git diff status {status!r} for {path}")
    if old_path is not None and classify(old_path) is None:
        # A rename into content is an addition as far as the release is concerned.
        old_path, change = None, "added"
    content = classify(path)
    if content is None and old_path is not None:
        # A rename out of content removes the old path from the release.
        path, old_path, change = old_path, None, "deleted"
        content = classify(path)
    if content is None:
        return None

    for checked in (path, old_path):
        if checked is not None and not _is_utf8(checked):
            raise CollectError(
                f"{repo}: content path {checked!r} is not valid UTF-8;"
                " rename it to a UTF-8 name and commit again"
            )
    return _Pending(content.kind, content.item, change, path, old_path)


def _with_commits(pending: _Pending, history: _History) -> Change:
    """Return the Change of `pending` with the commits of the range that touched its paths."""
    commits = set(history.by_path.get(pending.path, []))
    if pending.old_path is not None:
        commits.update(history.by_path.get(pending.old_path, []))
    return Change(
        kind=pending.kind,
        item=pending.item,
        change=pending.change,
        path=pending.path,
        old_path=pending.old_path,
        commits=tuple(sorted(commits, key=history.position.__getitem__)),
    )


@dataclass
class _History:
    """The commits of a release range: their order, commit times and the paths each one changed."""

    position: dict[str, int] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)
    by_path: dict[str, list[str]] = field(default_factory=dict)
    # Parents of range commits that lie outside the range. The base commit is
    # one of them exactly when it is an ancestor of the release commit.
    boundary: set[str] = field(default_factory=set)


def _read_history(handle: git.Repo, rev_range: str) -> _History:
    """Read which commits of `rev_range` changed which paths, oldest commit first."""
    # `--raw -z` puts a `:mode mode id id status` field before each path, so a
    # path is always the field after one that starts with ":" and every other
    # non-empty field is a commit: its mark, id and commit time. The mark is "-"
    # for a boundary commit, whose paths are skipped. `-c` lists a merge's
    # path only when the result differs from every parent. The explicit options
    # override user settings (diff.renames, log.showSignature) that would
    # change the output.
    output = _git_bytes(
        handle,
        "log",
        "--reverse",
        "--date-order",
        "--format=%m%H %ct",
        "--boundary",
        "--raw",
        "-z",
        "--no-abbrev",
        "--no-renames",
        "-c",
        "--root",
        "--no-show-signature",
        "--no-color",
        rev_range,
        "--",
    )

    history = _History()
    current: str | None = None
    expect_path = False
    for raw in output.split(b"\0"):
        field_text = raw.removeprefix(b"\n")
        if expect_path:
            if current is not None:
                history.by_path.setdefault(_decode_path(raw), []).append(current)
            expect_path = False
        elif field_text.startswith(b":"):
            expect_path = True
        elif field_text:
            text = field_text.decode("ascii")
            commit, _, seconds = text[1:].partition(" ")
            if text[0] == "-":
                # A boundary root commit still shows its diff with --root; it is not in the range.
                history.boundary.add(commit)
                current = None
                continue
            current = commit
            history.position[current] = len(history.position)
            history.times[current] = int(seconds)
    return history


def _decode_path(raw: bytes) -> str:
    """Decode a path git printed. Bytes that are not UTF-8 become lone surrogates."""
    return raw.decode("utf-8", errors="surrogateescape")


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
