"""The release: collect, validate, dry-run, build, sign and verify, in that order.

Every stage reads a snapshot of the release commit's tree. Outputs are made
in a hidden folder inside `out` and moved into place only after the bundle
verified, so a failed release leaves no partial bundle behind.

The output folder receives the bundle, `manifest.json` and `provenance.json`,
a minisign signature of each, and the public key. The signatures carry the
signing time in their trusted comment, so they differ between two releases
of one commit while the bundle, manifest and provenance do not.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import git

from pipeline import rotation, signing
from pipeline.build import (
    BuildResult,
    build_bundle,
    check_version,
    ratio_notice,
    source_date_epoch,
)
from pipeline.collect import ChangeSet, collect, find_base_tag
from pipeline.config import Config, chosen_samples, load_config
from pipeline.dryrun import DryRunResult, dry_run
from pipeline.dryrun_catalogs import release_catalogs
from pipeline.errors import (
    BundleError,
    CollectError,
    ConfigError,
    MigrationError,
    ValidationError,
    VerificationError,
)
from pipeline.processes import process_exists
from pipeline.snapshot import export_commit
from pipeline.treasury.conformance import check_base_conformance
from pipeline.validate import ValidationResult, validate
from pipeline.verify import VerifyResult, verify_bundle
from pipeline.versions import Version

logger = logging.getLogger(__name__)

PUBLIC_KEY_NAME = "minisign.pub"
# Prefix of the work folder a release makes inside its output folder; the process id follows.
WORK_PREFIX = ".release-"
Progress = Callable[[str], None]


@dataclass
class ReleaseResult:
    """Outputs of a release and the findings of each stage."""

    version: Version
    changes: ChangeSet
    validation: ValidationResult
    dry_run: DryRunResult
    build: BuildResult
    verified: VerifyResult
    files: list[Path]
    # Things the release manager should know, such as a bundle that needs a higher ratio limit.
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": str(self.version),
            "commit": self.changes.commit,
            "base_tag": self.changes.base_tag,
            "files": [str(p) for p in self.files],
            "key_id": self.verified.key_id,
            "changes": self.changes.to_json(),
            "validation": self.validation.to_json(),
            "dry_run": self.dry_run.to_json(),
            "notices": self.notices,
        }


def trusted_comment(product: str, version: Version, when: datetime | None = None) -> str:
    """Return the one-line trusted comment signed with every release file."""
    moment = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"product={product} version={version} time={moment}"


def default_version(repo_path: Path, rev: str = "HEAD") -> Version:
    """Choose the version of a release of `rev` when none is given.

    A commit tagged `release/V` rebuilds V. Otherwise the version is the
    commit's year and month, numbered after the tags of that month.
    """
    try:
        repo = git.Repo(repo_path)
        commit = repo.commit(rev)
    except (git.GitError, ValueError) as exc:
        raise CollectError(f"cannot read revision {rev!r} of {repo_path}: {exc}") from exc
    month_versions = []
    when = datetime.fromtimestamp(commit.committed_date, UTC)
    for tag in repo.tags:
        version = Version.from_tag(tag.name)
        if version is None:
            continue
        if tag.commit == commit:
            return version
        if (version.year, version.month) == (when.year, when.month):
            month_versions.append(version.number)
    number = max(month_versions) + 1 if month_versions else 0
    return Version(when.year, when.month, number)


def release(
    repo: Path,
    out: Path,
    secret_key: signing.SecretKey,
    *,
    version: Version | None = None,
    rev: str = "HEAD",
    databases: Sequence[str] = (),
    progress: Progress | None = None,
    full: bool = False,
    password: str | None = None,
    next_trusted_keys: Path | None = None,
    allow_empty: bool = False,
) -> ReleaseResult:
    """Release the content repository `repo` at `rev` into the folder `out`.

    `full` ships every item whole instead of the changes since the base
    release. `password` encrypts the archive with AES-256.
    `next_trusted_keys` is a trusted-keys file that the bundle carries,
    signed by `secret_key`, to move customers to a new key (pipeline.rotation).
    A release with no content change since its base is rejected unless
    `allow_empty` is set.

    Raises:
        PipelineError: a stage failed; its subclass names the stage.
    """
    step = progress or (lambda _message: None)
    repo = repo.resolve()
    version = version or default_version(repo, rev)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; expected a folder for the release")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_work_folders(out)
    try:
        return _release_into(
            repo,
            out,
            secret_key,
            version,
            rev,
            databases,
            step,
            full,
            password,
            next_trusted_keys,
            allow_empty,
        )
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise


def _release_into(
    repo: Path,
    out: Path,
    secret_key: signing.SecretKey,
    version: Version,
    rev: str,
    databases: Sequence[str],
    step: Progress,
    full: bool,
    password: str | None,
    next_trusted_keys: Path | None,
    allow_empty: bool,
) -> ReleaseResult:
    prefix = f"{WORK_PREFIX}{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=out) as work_name:
        work = Path(work_name)
        step(f"collect: changes up to {rev} for {version}")
        changes = collect(repo, rev, before=version)
        _check_newer_than_released(repo, changes.commit, version)
        if changes.base_tag and not changes.changes and not allow_empty:
            raise BundleError(
                f"nothing to release: no content changed between {changes.base_tag} and"
                f" {changes.commit[:12]}; pass --allow-empty to release it anyway"
            )
        content = export_commit(repo, changes.commit, work / "content")
        try:
            config = _snapshot_config(repo, content, databases)
        except ConfigError as exc:
            # Name the repository's own file, not the temporary snapshot.
            where = f"{repo / 'pyproject.toml'} at {changes.commit[:12]}"
            raise ConfigError(str(exc).replace(str(content / "pyproject.toml"), where)) from exc

        step(f"validate: {content.name}")
        validation = validate(content)
        if changes.base_commit is not None:
            validation.cases.append(check_base_conformance(content, repo, changes.base_commit))
        if not validation.passed:
            errors = validation.errors
            noun = "error" if len(errors) == 1 else "errors"
            raise ValidationError(
                f"validation failed with {len(errors)} {noun}; first: {errors[0]}", errors
            )

        step("dry-run: pending migrations on the sample databases")
        samples = list(config.sample_databases)
        if not samples:
            raise ConfigError(
                "no sample database to dry-run on: add sample_databases to [tool.pipeline]"
                f" in {repo / 'pyproject.toml'} or pass --database sqlite:///PATH"
            )
        dry = dry_run(
            config,
            samples,
            bundle_version=str(version),
            catalogs=release_catalogs(content, changes, full),
            base=None if changes.base_commit is None else (repo, changes.base_commit),
        )
        if not dry.passed:
            raise MigrationError(_dry_run_failure(dry))

        step(f"build: {config.product}-{version}.7z")
        staged = work / "out"
        signed_keys = None
        if next_trusted_keys is not None:
            signed_keys = rotation.signed_trusted_keys(
                next_trusted_keys,
                secret_key,
                config.product,
                str(version),
                source_date_epoch(changes.commit_time),
            )
        built = build_bundle(
            config,
            content,
            changes,
            version,
            staged,
            _dry_run_entries(dry),
            full=full,
            password=password,
            next_trusted_keys=signed_keys,
        )

        step(f"sign: key {secret_key.public.key_id_hex}")
        comment = trusted_comment(config.product, version)
        bundle_signature = signing.sign_file(built.bundle, secret_key, comment)
        manifest_signature = signing.sign_file(built.manifest_path, secret_key, comment)
        provenance_signature = signing.sign_file(built.provenance_path, secret_key, comment)
        public_key = staged / PUBLIC_KEY_NAME
        public_key.write_text(secret_key.public.to_minisign(), encoding="utf-8")

        step("verify: signature, manifest and every file hash")
        final_bundle = out / built.bundle.name
        notices = []
        notice = ratio_notice(built.ratio, config.max_ratio, final_bundle)
        if notice is not None:
            logger.info("%s", notice)
            notices.append(notice)
        try:
            # The limit fits the bundle just written, whose ratio comes from its own content.
            # The notice above names the limit at which verify and apply accept it.
            verified = verify_bundle(
                built.bundle,
                [secret_key.public],
                manifest_signature=manifest_signature,
                password=password,
                max_ratio=max(config.max_ratio, math.ceil(built.ratio)),
            )
        except VerificationError as exc:
            # Name the bundle where the release would have put it, not the work folder.
            message = str(exc).replace(str(built.bundle), str(final_bundle))
            raise VerificationError(
                f"{message}. No file of this release was written to {out}"
            ) from exc

        files = []
        # The bundle moves last: a folder with a bundle in it always has its signature.
        moved = (
            public_key,
            built.manifest_path,
            manifest_signature,
            built.provenance_path,
            provenance_signature,
            bundle_signature,
            built.bundle,
        )
        for path in moved:
            target = out / path.name
            path.replace(target)
            files.append(target)
    logger.info("released %s into %s", version, out)
    return ReleaseResult(version, changes, validation, dry, built, verified, files, notices)


def _check_newer_than_released(repo: Path, commit: str, version: Version) -> None:
    """Reject `version` when a release tag reachable from `commit` is as new or newer.

    A tag of `version` itself on `commit` is a rebuild and passes.
    """
    newest = find_base_tag(repo, commit)
    check_version(version, newest[0] if newest else None)
    on_commit = git.Repo(repo).git.tag("--points-at", commit).split()
    for tag in on_commit:
        tagged = Version.from_tag(tag)
        if tagged is not None and tagged > version:
            raise BundleError(
                f"version {version} is older than {tag} on the same commit;"
                f" choose a version greater than {tagged}"
            )


def _remove_stale_work_folders(out: Path) -> None:
    """Remove work folders that a killed release left in `out`.

    A folder is stale when the process whose id is in its name no longer
    runs, so a release running at the same time keeps its folder.
    """
    for folder in out.glob(f"{WORK_PREFIX}*"):
        pid_text = folder.name.removeprefix(WORK_PREFIX).split("-", 1)[0]
        if not pid_text.isdigit() or process_exists(int(pid_text)):
            continue
        logger.info("removing %s, left by an interrupted release", folder)
        shutil.rmtree(folder, ignore_errors=True)


def release_version_of(path: Path) -> Version | None:
    """Return the release version of a bundle, manifest or provenance file, or None.

    The manifest beside the file is read first; a bundle's name
    `<product>-<version>.7z` is the fallback.
    """
    manifest = path if path.name == "manifest.json" else path.parent / "manifest.json"
    if manifest.is_file():
        try:
            return Version.parse(str(json.loads(manifest.read_text(encoding="utf-8"))["version"]))
        except (ValueError, KeyError, TypeError, ConfigError):
            pass
    match = re.search(r"-(\d{4}\.\d{2}\.\d+)\.7z$", path.name)
    if match:
        return Version.parse(match[1])
    return None


def _snapshot_config(repo: Path, content: Path, urls: Sequence[str] = ()) -> Config:
    """Read the settings committed with the content, with sample paths kept in the work tree.

    The samples are those of `urls`, or the configured ones without any
    (`chosen_samples`). Generated sample databases are caches of the work
    tree, so relative `sqlite:///` paths stay relative to the repository,
    not to the snapshot.
    """
    config = load_config(content)
    samples = tuple(
        dataclasses.replace(sample, url=f"sqlite:///{sample.sqlite_path(repo)}")
        if sample.engine == "sqlite"
        else sample
        for sample in chosen_samples(config, urls)
    )
    return dataclasses.replace(config, sample_databases=samples)


def _dry_run_entries(result: DryRunResult) -> list[dict[str, Any]]:
    return [
        {"database": r.database, "engine": r.engine, "result": "passed" if r.passed else "failed"}
        for r in result.results
    ]


def _dry_run_failure(result: DryRunResult) -> str:
    """Describe every failed sample, each by its error or its first three findings."""
    failed = [r for r in result.results if not r.passed]
    reasons = [
        f"{r.database}: {r.error or '; '.join(str(f) for f in r.findings[:3])}" for r in failed
    ]
    return (
        f"dry-run failed on {len(failed)} of {len(result.results)} sample databases;"
        f" {'; '.join(reasons)}"
    )
