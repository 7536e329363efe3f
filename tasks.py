"""Invoke tasks of the release pipeline: a thin table of calls into `pipeline`.

Each task's first docstring line is its `inv --list` text; its flags map one
to one onto the arguments of the function it calls. Errors from `pipeline`
become one line on standard error and a non-zero exit code.
"""

from __future__ import annotations

import functools
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.program import Program
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from pipeline import catalogs, signing
from pipeline.collect import collect as collect_changes
from pipeline.config import (
    SIGNING_KEY_ENV,
    SIGNING_PASSPHRASE_ENV,
    SampleDatabase,
    chosen_samples,
    load_config,
    signing_key_from_env,
)
from pipeline.console import Progress, StepPrinter, configure_logging
from pipeline.dryrun_workers import Terminated
from pipeline.errors import (
    ConfigError,
    PipelineError,
    SignatureError,
    ValidationError,
    VerificationError,
)
from pipeline.findings import CheckCase, Finding, write_json_report, write_junit_report
from pipeline.versions import Version

F = TypeVar("F", bound=Callable[..., Any])

DEMO_KEY = Path(".keys/demo.key")
DEMO_PUBLIC_KEY = Path(".keys/minisign.pub")

REPO_HELP = "content repository to read (default: the current folder)"
JSON_HELP = "write a machine-readable JSON report to this file"
JUNIT_HELP = "write a JUnit XML report to this file"
# Environment variable that contains the password of an encrypted bundle.
BUNDLE_PASSWORD_ENV = "PIPELINE_BUNDLE_PASSWORD"
ENCRYPTED_HELP = (
    f"the bundle is encrypted; the password comes from {BUNDLE_PASSWORD_ENV}"
    " or is asked for on a terminal"
)
MAX_RATIO_HELP = (
    "largest unpacked size divided by archive size that verification accepts"
    " (default: max_ratio of [tool.pipeline] in {where}, else 100)"
)


class _CheckedArgument(Argument):
    """A task option that turns a value of the wrong type into a parse error.

    Invoke converts an `int` option's text with `int()` and lets the
    ValueError out as a traceback. Invoke prints a ParseError as one line
    and exits with code 1.
    """

    def set_value(self, value: Any, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
        except ValueError as exc:
            flag = "--" + str(self.name).replace("_", "-")
            kind = getattr(self.kind, "__name__", str(self.kind))
            expected = "a whole number, such as 2" if self.kind is int else f"a {kind} value"
            raise ParseError(f"error: {flag} {value!r}: expected {expected}") from exc


class _Task(Task[Any]):
    """A task whose options report values of the wrong type as `_CheckedArgument` does."""

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        return [
            _CheckedArgument(
                names=argument.names,
                kind=argument.kind,
                default=argument.default,
                help=argument.help,
                positional=argument.positional,
                optional=argument.optional,
                incrementable=argument.incrementable,
                attr_name=argument.attr_name,
            )
            for argument in super().get_arguments(ignore_unknown_help)
        ]


task = functools.partial(invoke_task, klass=_Task)


def guarded(positional: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Turn PipelineError into `error: ...` and exit code 1; show help for `TASK --help`.

    Invoke hands `--help` to a task's first positional argument instead of
    printing the task's help, so the guard prints it itself.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(context: Context, *args: Any, **kwargs: Any) -> Any:
            values = list(args) + [kwargs.get(name) for name in positional]
            if any(value in ("-h", "--help") for value in values):
                name = function.__name__.replace("_", "-").removesuffix("-")
                _print_help(_TASK_NAMES.get(name, name))
                return None
            configure_logging()
            try:
                return function(context, *args, **kwargs)
            except ValidationError as exc:
                _print_findings(exc.findings)
                raise Exit(f"error: {exc}", code=1) from exc
            except PipelineError as exc:
                raise Exit(f"error: {exc}", code=1) from exc
            except Terminated as exc:
                # As a shell reports a process that a signal ended.
                raise Exit("terminated", code=128 + exc.number) from exc
            except KeyboardInterrupt as exc:
                raise Exit("interrupted", code=130) from exc
            except BrokenPipeError:
                # The reader of standard output went away (`inv collect | head`): stop quietly.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise Exit(code=141) from None
            except OSError as exc:
                # A report or output path that cannot be written: name it, no traceback.
                raise Exit(f"error: {exc}", code=1) from exc

        return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature

    return decorate


def _print_findings(findings: list[object], limit: int = 20) -> None:
    """Print the findings a ValidationError carries, so the one-line error is not all CI shows."""
    for finding in findings[:limit]:
        severity = getattr(finding, "severity", "error")
        print(f"  {severity}: {finding}", file=sys.stderr)
    if len(findings) > limit:
        print(f"  ... and {len(findings) - limit} more", file=sys.stderr)


def _count(number: int, noun: str) -> str:
    """Return "1 error" or "3 errors"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _print_help(task_name: str) -> None:
    # Invoke removes each option's help text from its task while it parses a command line,
    # so put the texts back from the copy taken at import time before parsing again.
    for task_object, texts in _HELP_TEXTS:
        task_object.help.update(texts)
    Program(namespace=ns, name="inv", binary="inv").run(["inv", "--help", task_name], exit=False)


def _findings_summary(cases: list[CheckCase], limit: int = 50) -> None:
    shown = 0
    for case in cases:
        for finding in case.findings:
            if shown < limit:
                print(f"  {finding.severity}: {finding}")
            shown += 1
    if shown > limit:
        print(f"  ... and {shown - limit} more")


@task(help={"repo": REPO_HELP, "rev": "release commit (default: HEAD)", "json": JSON_HELP})
@guarded()
def collect(c: Context, repo: str = ".", rev: str = "HEAD", json: str | None = None) -> None:
    """Collect the change set since the last release tag."""
    changes = collect_changes(Path(repo), rev)
    base = changes.base_tag or "no earlier release: everything is new"
    print(f"commit {changes.commit[:12]}, base {base}")
    for kind, items in changes.by_kind().items():
        for change in items:
            old = f" (from {change.old_path})" if change.old_path else ""
            print(f"  {kind.value:<9} {change.change:<8} {change.path}{old}")
    print(f"{len(changes.changes)} changed content files")
    if json:
        write_json_report(Path(json), changes.to_json())


@task(
    help={
        "repo": REPO_HELP,
        "rev": "validate this commit's tree instead of the work tree (for example HEAD)",
        "json": JSON_HELP,
        "junit": JUNIT_HELP,
        "cache": "reuse the findings of unchanged items from .pipeline-cache/"
        " (default: on; --no-cache checks everything)",
    }
)
@guarded()
def validate(
    c: Context,
    repo: str = ".",
    rev: str | None = None,
    json: str | None = None,
    junit: str | None = None,
    cache: bool = True,
) -> None:
    """Validate every catalog, migration, fix, report, form and treasury format."""
    import tempfile

    from pipeline.content import require_content_root
    from pipeline.snapshot import export_commit
    from pipeline.validate import validate as validate_content

    root = Path(repo)
    with tempfile.TemporaryDirectory(prefix="validate-") as work:
        if rev is not None:
            commit = collect_changes(root, rev).commit
            root = export_commit(root, commit, Path(work) / "content")
            cache = False
        require_content_root(root)
        result = validate_content(root, use_cache=cache, progress=Progress("validating"))
    _findings_summary(result.cases)
    if json:
        write_json_report(Path(json), result.to_json())
    if junit:
        write_junit_report(Path(junit), "validate", result.cases)
    print(
        f"validated {len(result.cases)} items ({result.cached} unchanged, from the cache):"
        f" {_count(len(result.errors), 'error')}"
    )
    if not result.passed:
        raise ValidationError(f"validation failed with {_count(len(result.errors), 'error')}")


@task(
    help={
        "id": "catalog id, the folder name under catalogs/",
        "from_": "official source file to import",
        "key": "key column (default: the description's key, or the first column)",
        "delimiter": "field delimiter of the source file (default: ,)",
        "encoding": "encoding of the source file: utf-8, cp1251 or kz1048 (default: utf-8)",
        "repo": REPO_HELP,
    }
)
@guarded()
def catalog_import(
    c: Context,
    id: str | None = None,
    from_: str | None = None,
    key: str | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    repo: str = ".",
) -> None:
    """Import an official source file as a catalog and print what changed."""
    if not id or not from_:
        raise ConfigError("catalog.import needs --id ID and --from FILE")
    description = Path(repo) / "catalogs" / id / "catalog.json"
    new_description = not description.exists()
    delta = catalogs.import_catalog(
        Path(repo), id, Path(from_), key=key, delimiter=delimiter, encoding=encoding
    )
    if new_description:
        print(
            f"wrote {description} with placeholder titles and dates:"
            " replace them and declare column types and references; validate fails until then"
        )
    print(
        f"catalog {id}: {len(delta.added)} added, {len(delta.changed)} changed,"
        f" {len(delta.removed)} removed"
    )
    for label, changes in (
        ("added", delta.added),
        ("changed", delta.changed),
        ("removed", delta.removed),
    ):
        for change in changes[:3]:
            row = change.new if change.new is not None else change.old
            print(f"  {label}: {'/'.join(change.key)}: {row}")


@task(
    iterable=["database"],
    help={
        "repo": REPO_HELP,
        "database": "sample database URL (sqlite:///PATH or postgresql://USER@HOST:PORT/DB);"
        " repeat for several; replaces the configured ones",
        "jobs": "sample databases to dry-run at once, each in a worker process (default: 1)",
        "shard": "run only share I of N of the sample databases, such as 1/2, for a CI matrix",
        "allow_empty_shard": "pass a --shard that selects no sample database instead of failing",
        "lock_timeout_ms": "PostgreSQL lock_timeout in milliseconds (default: [tool.pipeline])",
        "statement_timeout_ms": "PostgreSQL statement_timeout in milliseconds"
        " (default: [tool.pipeline])",
        "cache": "reuse the passing result of an unchanged SQLite sample from"
        " .pipeline-cache/dry-run.json (--no-cache turns it off)",
        "json": JSON_HELP,
        "junit": JUNIT_HELP,
    },
)
@guarded()
def dry_run(
    c: Context,
    repo: str = ".",
    database: list[str] | None = None,
    jobs: int = 1,
    shard: str | None = None,
    allow_empty_shard: bool = False,
    lock_timeout_ms: str | None = None,
    statement_timeout_ms: str | None = None,
    cache: bool = True,
    json: str | None = None,
    junit: str | None = None,
) -> None:
    """Apply pending migrations to throwaway copies of the sample databases."""
    import dataclasses

    from pipeline.dryrun import Shard
    from pipeline.dryrun import dry_run as run_dry_run

    if jobs < 1:
        raise ConfigError(
            f"--jobs {jobs}: expected a positive number of sample databases at once, such as 2"
        )
    config = load_config(Path(repo).resolve())
    if lock_timeout_ms is not None:
        wait = _milliseconds(lock_timeout_ms, "--lock-timeout-ms")
        config = dataclasses.replace(config, lock_timeout_ms=wait)
    if statement_timeout_ms is not None:
        limit = _milliseconds(statement_timeout_ms, "--statement-timeout-ms")
        config = dataclasses.replace(config, statement_timeout_ms=limit)
    samples = chosen_samples(config, database or []) or None
    selected = Shard.parse(shard) if shard else None
    try:
        result = run_dry_run(
            config,
            samples,
            jobs=jobs,
            shard=selected,
            use_cache=cache,
            allow_empty_shard=allow_empty_shard,
            progress=Progress("dry-run"),
        )
    except PipelineError as exc:
        # CI shows the report files, so a dry-run that could not start still writes them.
        failure = Finding(rule="dry-run", file=str(Path(repo) / "migrations"), message=str(exc))
        if json:
            # The shard is recorded, so `inv report.merge` counts this job and shows the error.
            data: dict[str, Any] = {
                "passed": False,
                "shard": None if selected is None else dataclasses.asdict(selected),
                "error": str(exc),
                "results": [],
            }
            write_json_report(Path(json), data)
        if junit:
            write_junit_report(
                Path(junit), "dry-run", [CheckCase("dry-run", "dry-run", [failure])]
            )
        raise
    for line in result.summary():
        print(line)
    if result.cached:
        print(
            f"{result.cached} sample database result(s) reused from .pipeline-cache/dry-run.json"
        )
    if json:
        write_json_report(Path(json), result.to_json())
    if junit:
        write_junit_report(Path(junit), "dry-run", result.cases())
    if not result.passed:
        raise PipelineError("dry-run failed")


@task(
    help={
        "version": "release version YYYY.MM.N",
        "repo": REPO_HELP,
        "rev": "release commit (default: HEAD)",
        "out": "output folder (default: dist)",
        "dry_run_report": "JSON report of `inv dry-run` whose passed databases the manifest lists",
        "full": "ship every item whole, catalogs included, instead of the changes since the"
        " base release",
        "allow_empty": "build even when no content changed since the base release",
        "encrypt": "encrypt the archive with AES-256; the password comes from"
        f" {BUNDLE_PASSWORD_ENV} or is asked for on a terminal",
    }
)
@guarded()
def build(
    c: Context,
    version: str | None = None,
    repo: str = ".",
    rev: str = "HEAD",
    out: str = "dist",
    dry_run_report: str | None = None,
    full: bool = False,
    encrypt: bool = False,
    allow_empty: bool = False,
) -> None:
    """Build the bundle and its manifest (unsigned) from the release commit."""
    if not version:
        raise ConfigError("build needs --version YYYY.MM.N")
    import json as json_module
    import tempfile

    from pipeline.build import build_bundle, ratio_notice
    from pipeline.release import _snapshot_config
    from pipeline.snapshot import export_commit
    from pipeline.validate import validate as validate_content

    wanted = Version.parse(version)
    root = Path(repo).resolve()
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out {out} is a file; expected a folder for the bundle")
    changes = collect_changes(root, rev)
    if changes.base_tag and not changes.changes and not allow_empty:
        raise ConfigError(
            f"nothing to build: no content changed between {changes.base_tag} and"
            f" {changes.commit[:12]}; pass --allow-empty to build it anyway"
        )
    entries: list[dict[str, Any]] = []
    if dry_run_report:
        report = json_module.loads(Path(dry_run_report).read_text(encoding="utf-8"))
        entries = [
            {
                "database": r["database"],
                "engine": r["engine"],
                "result": "passed" if r["passed"] else "failed",
            }
            for r in report["results"]
        ]
    with tempfile.TemporaryDirectory() as work:
        content = export_commit(root, changes.commit, Path(work) / "content")
        validation = validate_content(content)
        if not validation.passed:
            raise ValidationError(
                f"{changes.commit[:12]} failed validation with"
                f" {_count(len(validation.errors), 'error')}; nothing was built",
                validation.errors,
            )
        config = _snapshot_config(root, content)
        built = build_bundle(
            config,
            content,
            changes,
            wanted,
            Path(out),
            entries,
            full=full,
            password=_bundle_password(new=True) if encrypt else None,
        )
    print(f"built {built.bundle} ({len(built.manifest['files'])} files) and {built.manifest_path}")
    notice = ratio_notice(built.ratio, config.max_ratio, built.bundle)
    if notice is not None:
        print(f"note: {notice}")


@task(
    iterable=["database"],
    help={
        "repo": REPO_HELP,
        "database": "sample database URL to generate; repeat for several"
        " (default: every configured sample with a `generate` size)",
        "size": "size for --database: small, medium or large (default: small)",
        "upto": "schema version of the sample, such as 0001 (default: the first migration)",
        "force": "regenerate SQLite samples that exist already",
    },
)
@guarded()
def samples(
    c: Context,
    repo: str = ".",
    database: list[str] | None = None,
    size: str = "small",
    upto: str | None = None,
    force: bool = False,
) -> None:
    """Generate the deterministic sample databases that the dry-run migrates."""
    from pipeline.samples import generate_samples

    config = load_config(Path(repo).resolve())
    wanted = [SampleDatabase(url=url, generate=size) for url in database or []]
    generated = generate_samples(
        config, wanted or None, upto=upto, force=force, progress=Progress("samples")
    )
    for url, built in generated:
        print(f"{url}: {'generated' if built else 'exists, kept'}")


@task(
    iterable=["report"],
    help={
        "report": "JSON report of one `inv dry-run --shard I/N`; repeat for every shard",
        "json": "write the merged JSON report to this file",
        "junit": JUNIT_HELP,
    },
)
@guarded()
def report_merge(
    c: Context,
    report: list[str] | None = None,
    json: str | None = None,
    junit: str | None = None,
) -> None:
    """Join the JSON reports of a sharded dry-run and fail when any shard failed."""
    from pipeline.report_merge import merge_reports

    result = merge_reports([Path(path) for path in report or []])
    for line in result.summary():
        print(line)
    if json:
        write_json_report(Path(json), result.to_json())
    if junit:
        write_junit_report(Path(junit), "dry-run", result.cases())
    print(f"merged {len(report or [])} report(s): {len(result.results)} sample database(s)")
    if not result.passed:
        failed = sum(1 for database in result.results if not database.passed)
        raise PipelineError(
            f"merged dry-run failed: {len(result.failures)} report(s) record a failed run,"
            f" {failed} sample database(s) failed"
        )


report = Collection("report")
report.add_task(report_merge, "merge")

keys = Collection("keys")


@task(
    help={
        "secret_key": "secret key file to write, outside any git work tree"
        " (default: ~/.parus-release/release.key)",
        "public_key": "public key file to write (default: minisign.pub beside the secret key)",
        "encrypt": f"encrypt the secret key with the passphrase in {SIGNING_PASSPHRASE_ENV}"
        " (asked for on a terminal when unset)",
    }
)
@guarded()
def keys_generate(
    c: Context,
    secret_key: str | None = None,
    public_key: str | None = None,
    encrypt: bool = False,
) -> None:
    """Generate an Ed25519 key pair in minisign's format."""
    secret = Path(secret_key) if secret_key else Path.home() / ".parus-release" / "release.key"
    public_path = Path(public_key) if public_key else secret.with_name("minisign.pub")
    work_tree = _git_work_tree(secret)
    if work_tree is not None:
        raise SignatureError(
            f"secret key {secret} lies inside the git work tree {work_tree}, where a commit"
            " could publish it; write it outside with --secret-key, or leave the default"
            " ~/.parus-release/release.key"
        )
    passphrase = _new_passphrase() if encrypt else None
    public = signing.generate_keypair(secret, public_path, passphrase)
    print(f"key id {public.key_id_hex}: secret key {secret}, public key {public_path}")


def _git_work_tree(path: Path) -> Path | None:
    """Return the git work tree that contains `path`, or None when no folder above has `.git`."""
    for folder in path.resolve().parents:
        if (folder / ".git").exists():
            return folder
    return None


keys.add_task(keys_generate, "generate")


@task(
    help={
        "trusted_keys": "current trusted-keys file",
        "new_public_key": "minisign public key of the new release key (see keys.generate)",
        "out": "next trusted-keys file to write (default: trusted-keys.next.json)",
        "valid_from": "time from which the new key may sign, RFC 3339 (default: now)",
        "retire_current": "time from which the current keys stop signing, RFC 3339"
        " (default: they stay valid)",
        "comment": "comment stored with the new key",
    }
)
@guarded()
def keys_rotate(
    c: Context,
    trusted_keys: str | None = None,
    new_public_key: str | None = None,
    out: str = "trusted-keys.next.json",
    valid_from: str | None = None,
    retire_current: str | None = None,
    comment: str = "",
) -> None:
    """Write the next trusted-keys file: the current keys plus a new release key."""
    from datetime import UTC, datetime

    from pipeline.rotation import rotate_trusted_keys

    if not trusted_keys or not new_public_key:
        raise ConfigError("keys.rotate needs --trusted-keys FILE and --new-public-key FILE")
    start = _parse_time(valid_from, "--valid-from") if valid_from else datetime.now(UTC)
    retire = _parse_time(retire_current, "--retire-current") if retire_current else None
    written = rotate_trusted_keys(
        Path(trusted_keys),
        signing.load_public_key(Path(new_public_key)),
        Path(out),
        valid_from=start,
        retire_at=retire,
        comment=comment,
    )
    print(f"wrote {out}: {len(written)} trusted keys, new key {written[-1].key_id_hex}")


keys.add_task(keys_rotate, "rotate")


def _parse_time(text: str, option: str) -> Any:
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(
            f"{option}: expected an RFC 3339 time with a time zone, such as"
            f" 2027-01-01T00:00:00Z, found {text!r}"
        )
    return moment


def _new_passphrase() -> str:
    passphrase = os.environ.get(SIGNING_PASSPHRASE_ENV)
    if passphrase:
        return passphrase
    if not sys.stdin.isatty():
        raise SignatureError(
            f"--encrypt needs a passphrase: set {SIGNING_PASSPHRASE_ENV} or run on a terminal"
        )
    first = getpass.getpass("passphrase: ")
    if first != getpass.getpass("passphrase again: "):
        raise SignatureError("the two passphrases differ; nothing was written")
    return first


def _bundle_password(new: bool) -> str:
    """Return the bundle password from the environment, or ask for it on a terminal."""
    password = os.environ.get(BUNDLE_PASSWORD_ENV)
    if password:
        return password
    if not sys.stdin.isatty():
        raise ConfigError(
            f"an encrypted bundle needs a password: set {BUNDLE_PASSWORD_ENV} or run on a terminal"
        )
    first = getpass.getpass("bundle password: ")
    if new and first != getpass.getpass("bundle password again: "):
        raise ConfigError("the two passwords differ; nothing was built")
    return first


def _load_signing_key(
    key: str | None, demo_key: bool = False, repo: str | None = None
) -> signing.SecretKey:
    env_key, passphrase = signing_key_from_env()
    path = Path(key) if key else env_key
    if path is None:
        if not demo_key:
            raise SignatureError(
                f"no signing key: pass --key FILE or set {SIGNING_KEY_ENV} (`inv keys.generate`"
                " writes a key to ~/.parus-release/release.key); add --demo-key to sign with a"
                " throwaway key under .keys/"
            )
        return _demo_key()
    repo_root = Path(repo).resolve() if repo else None
    if repo_root is not None and path.resolve().is_relative_to(repo_root):
        raise SignatureError(
            f"secret key {path} lies inside the content repository {repo_root};"
            " keep signing keys outside the repository and name them with --key or"
            f" {SIGNING_KEY_ENV}"
        )
    if not path.is_file():
        source = "--key" if key else SIGNING_KEY_ENV
        raise SignatureError(f"signing key {path} (from {source}) does not exist or is not a file")
    try:
        return signing.load_secret_key(path, passphrase)
    except SignatureError as exc:
        if passphrase is None and sys.stdin.isatty() and "passphrase" in str(exc):
            return signing.load_secret_key(path, getpass.getpass(f"passphrase for {path}: "))
        raise


def _demo_key() -> signing.SecretKey:
    if DEMO_KEY.exists():
        secret = signing.load_secret_key(DEMO_KEY, None)
        print(
            f"signing with the throwaway demo key {DEMO_KEY} (key id {secret.public.key_id_hex})"
        )
        return secret
    public = signing.generate_keypair(DEMO_KEY, DEMO_PUBLIC_KEY, None)
    # The folder ignores itself, so a demo key made inside a content repository is never committed.
    (DEMO_KEY.parent / ".gitignore").write_text("*\n", encoding="utf-8")
    print(
        f"no signing key configured: generated the throwaway demo key {DEMO_KEY}"
        f" (key id {public.key_id_hex}). Bundles signed with it are for trying the pipeline;"
        f" set {SIGNING_KEY_ENV} to the real release key for a customer release."
    )
    return signing.load_secret_key(DEMO_KEY, None)


@task(
    positional=["file"],
    help={
        "file": "file to sign; the signature goes to FILE.minisig",
        "key": f"secret key file (default: ${SIGNING_KEY_ENV})",
        "comment": "trusted comment (default: product, version and time)",
        "version": "release version for the trusted comment (default: read from manifest.json"
        " beside FILE or from the bundle's name)",
    },
)
@guarded(positional=("file",))
def sign(
    c: Context,
    file: str,
    key: str | None = None,
    comment: str | None = None,
    version: str | None = None,
) -> None:
    """Sign a file with minisign's format so that `minisign -V` verifies it."""
    from pipeline.release import release_version_of, trusted_comment

    secret = _load_signing_key(key)
    if comment is None:
        found = Version.parse(version) if version else release_version_of(Path(file))
        if found is None:
            raise ConfigError(
                f"cannot tell the release version of {file}: pass --version YYYY.MM.N"
                " (verify reads it from the trusted comment) or --comment TEXT"
            )
        product = load_config(Path(".")).product
        comment = trusted_comment(product, found)
    signature = signing.sign_file(Path(file), secret, comment)
    print(f"signed {file} with key {secret.public.key_id_hex}: {signature}")


@task(
    positional=["bundle"],
    help={
        "bundle": "bundle archive (.7z); its signature is BUNDLE.minisig",
        "public_key": "minisign public key file that must have signed the bundle",
        "trusted_keys": "trusted-keys JSON file, or a bare minisign.pub; a signature counts"
        " only from a key valid and not revoked at its signing time",
        "manifest_signature": "manifest signature"
        " (default: manifest.json.minisig beside the bundle)",
        "encrypted": ENCRYPTED_HELP,
        "allow_unsigned_manifest": "pass without a manifest signature beside the bundle"
        " (the archive signature still covers the manifest inside)",
        "accept_rotation": "when the bundle carries the next trusted keys, signed by a trusted"
        " key, merge them into the --trusted-keys file",
        "max_ratio": MAX_RATIO_HELP.format(where="./pyproject.toml"),
        "json": JSON_HELP + ", also when verification fails",
    },
)
@guarded(positional=("bundle",))
def verify(
    c: Context,
    bundle: str,
    public_key: str | None = None,
    trusted_keys: str | None = None,
    manifest_signature: str | None = None,
    encrypted: bool = False,
    allow_unsigned_manifest: bool = False,
    accept_rotation: bool = False,
    max_ratio: str | None = None,
    json: str | None = None,
) -> None:
    """Verify a bundle: signatures, manifest, archive safety and every file hash."""
    from pipeline.trust import load_trust
    from pipeline.verify import verify_bundle

    keys_: list[Any] = []
    if trusted_keys is not None:
        keys_.extend(load_trust(Path(trusted_keys)))
    if public_key is not None:
        keys_.append(signing.load_public_key(Path(public_key)))
    if not keys_:
        raise SignatureError(
            "verify needs --trusted-keys FILE or --public-key FILE (the release's minisign.pub)"
        )
    if not Path(bundle).is_file():
        raise VerificationError(f"bundle {bundle} not found")
    signature = Path(manifest_signature) if manifest_signature else None
    if signature is None and not allow_unsigned_manifest:
        _require_manifest_signature(Path(bundle), "or --manifest-signature FILE")
    limit = _max_ratio(max_ratio, Path("."))
    password = _bundle_password(new=False) if encrypted else None
    try:
        result = verify_bundle(
            Path(bundle),
            keys_,
            manifest_signature=signature,
            password=password,
            max_ratio=limit,
        )
    except PipelineError as exc:
        if json:
            write_json_report(Path(json), {"bundle": bundle, "verified": False, "error": str(exc)})
        raise
    print(
        f"{bundle}: verified version {result.version}, {result.files} files, key {result.key_id}"
    )
    if result.manifest_signature is None:
        print(
            "  manifest signature: not checked, no manifest.json.minisig beside the bundle"
            " (pass --manifest-signature FILE); the archive signature covers the manifest inside"
        )
    else:
        print(f"  manifest signature: verified ({result.manifest_signature})")
    if accept_rotation:
        _accept_rotation(Path(bundle), trusted_keys, password, limit)
    if json:
        write_json_report(
            Path(json),
            {
                "bundle": bundle,
                "verified": True,
                "version": result.version,
                "key_id": result.key_id,
                "signed_at": result.signed_at.isoformat() if result.signed_at else None,
                "files": result.files,
                "trusted_comment": result.trusted_comment,
                "manifest_signature": str(result.manifest_signature)
                if result.manifest_signature
                else None,
            },
        )


def _max_ratio(option: str | None, root: Path) -> float:
    """Return the --max-ratio value, else the `[tool.pipeline] max_ratio` setting under `root`."""
    from pipeline.config import parse_max_ratio

    if option is not None:
        return parse_max_ratio(option)
    return load_config(root).max_ratio


def _require_manifest_signature(bundle: Path, alternative: str = "") -> None:
    """Reject a bundle without `manifest.json.minisig` beside it, as verify and apply do."""
    beside = bundle.parent / "manifest.json.minisig"
    if not beside.is_file():
        expected = f"{beside} {alternative}".rstrip()
        raise SignatureError(
            f"no manifest signature: expected {expected};"
            " pass --allow-unsigned-manifest to rely on the archive signature alone"
        )


def _accept_rotation(
    bundle: Path,
    trusted_keys: str | None,
    password: str | None,
    max_ratio: float,
    *,
    stale_ok: bool = False,
) -> None:
    """Merge the next trusted keys of a verified bundle into the --trusted-keys file.

    With `stale_ok`, next trusted keys older than the file's are reported, not raised.
    """
    from pipeline.errors import StaleRotationError
    from pipeline.rotation import install_rotation

    if trusted_keys is None:
        raise ConfigError("--accept-rotation needs --trusted-keys FILE to write the new keys to")
    try:
        installed = install_rotation(
            bundle, Path(trusted_keys), password=password, max_ratio=max_ratio
        )
    except StaleRotationError as exc:
        if not stale_ok:
            raise
        print(f"  trusted keys: not changed: {exc}")
        return
    rotation = installed.rotation
    if rotation is None:
        print("  trusted keys: the bundle carries no next trusted keys")
        return
    version = rotation.source.version
    if not installed.written:
        print(f"  trusted keys: {trusted_keys} has the next trusted keys of bundle {version}")
        return
    ids = ", ".join(key.key_id_hex for key in rotation.keys)
    print(
        f"  trusted keys: wrote the next trusted keys of bundle {version} to {trusted_keys}: {ids}"
    )
    for note in rotation.notes:
        print(f"    {note}")


@task(
    iterable=["database"],
    help={
        "repo": REPO_HELP,
        "version": "release version YYYY.MM.N (default: from the commit date and existing tags)",
        "out": "output folder (default: dist)",
        "rev": "release commit (default: HEAD)",
        "key": f"secret key file (default: ${SIGNING_KEY_ENV})",
        "demo_key": "without a configured key, sign with a throwaway key under .keys/",
        "database": "sample database URL; repeat for several; replaces the configured ones",
        "full": "ship every item whole, catalogs included, instead of the changes since the"
        " base release",
        "encrypt": "encrypt the archive with AES-256; the password comes from"
        f" {BUNDLE_PASSWORD_ENV} or is asked for on a terminal",
        "next_trusted_keys": "trusted-keys file to ship, signed by the release key, so customers"
        " move to a new key (see keys.rotate)",
        "allow_empty": "release even when no content changed since the base release",
        "json": JSON_HELP,
    },
)
@guarded()
def release(
    c: Context,
    repo: str = ".",
    version: str | None = None,
    out: str = "dist",
    rev: str = "HEAD",
    key: str | None = None,
    demo_key: bool = False,
    database: list[str] | None = None,
    full: bool = False,
    encrypt: bool = False,
    next_trusted_keys: str | None = None,
    allow_empty: bool = False,
    json: str | None = None,
) -> None:
    """Collect, validate, dry-run, build, sign and verify a release."""
    from pipeline.release import release as run_release

    secret = _load_signing_key(key, demo_key, repo)
    wanted = Version.parse(version) if version else None
    try:
        result = run_release(
            Path(repo),
            Path(out),
            secret,
            version=wanted,
            rev=rev,
            databases=database or [],
            progress=StepPrinter(total=6),
            full=full,
            password=_bundle_password(new=True) if encrypt else None,
            next_trusted_keys=Path(next_trusted_keys) if next_trusted_keys else None,
            allow_empty=allow_empty,
        )
    except PipelineError as exc:
        # CI reads the outcome from the report, so a failed release gets one too.
        if json:
            write_json_report(Path(json), {"status": "failed", "error": str(exc)})
        raise
    print(
        f"released {result.version} from {result.changes.commit[:12]}"
        f" (base {result.changes.base_tag or 'none'}), signed by key {result.verified.key_id}:"
    )
    for path in result.files:
        print(f"  {path}")
    for notice in result.notices:
        print(f"note: {notice}")
    if json:
        write_json_report(Path(json), result.to_json())


PORTAL_TRUSTED_KEYS_HELP = (
    "trusted-keys.json, or a minisign public key file, that verifies bundles and the feed"
)


MEDIA_VALID_HELP = "days the copied feed must stay valid at least, or the media is refused"
LOCK_WAIT_HELP = "seconds to wait for another publish of the same portal (default: 120)"


@task(
    positional=["bundle"],
    help={
        "bundle": (
            "bundle archive (.7z) from `inv release`, its signatures beside it; with"
            " --offline-media, the new folder to write the media to"
        ),
        "portal": "portal folder to add the bundle to (created when missing)",
        "key": f"secret key file that signs the feed (default: ${SIGNING_KEY_ENV})",
        "trusted_keys": PORTAL_TRUSTED_KEYS_HELP,
        "channel": "release channel: stable or testing (default: stable)",
        "expiry_days": "days until the feed expires (default: 45)",
        "force": "allow moving a stable release back to testing",
        "offline_media": "write offline media to the folder given, as publish.offline-media",
        "from_": "with --offline-media: installed version the media updates from",
        "min_valid_days": "with --offline-media: " + MEDIA_VALID_HELP + " (default: 30)",
        "lock_timeout": LOCK_WAIT_HELP,
        "max_ratio": MAX_RATIO_HELP.format(where="./pyproject.toml"),
        "json": JSON_HELP,
    },
)
@guarded(positional=("bundle",))
def publish_bundle(
    c: Context,
    bundle: str,
    portal: str | None = None,
    key: str | None = None,
    trusted_keys: str | None = None,
    channel: str = "stable",
    expiry_days: int = 45,
    force: bool = False,
    offline_media: bool = False,
    from_: str | None = None,
    min_valid_days: int = 30,
    lock_timeout: int = 120,
    max_ratio: str | None = None,
    json: str | None = None,
) -> None:
    """Verify a bundle and add it to the update portal, or write offline media."""
    from pipeline.portal import check_portal_folder, publish
    from pipeline.trust import load_trust

    if offline_media:
        # `inv publish --offline-media DIR`: invoke has no optional positional
        # argument, so the flag is a switch and DIR fills the BUNDLE position.
        _write_media(bundle, from_, portal, trusted_keys, channel, min_valid_days, lock_timeout)
        return
    if not portal or not trusted_keys:
        raise ConfigError("publish needs --portal DIR and --trusted-keys FILE")
    trusted = load_trust(Path(trusted_keys))
    result = publish(
        Path(bundle),
        check_portal_folder(portal),
        _load_signing_key(key),
        trusted,
        channel=channel,
        expiry_days=int(expiry_days),
        force=force,
        lock_timeout=float(lock_timeout),
        max_ratio=_max_ratio(max_ratio, Path(".")),
    )
    if result.changed:
        print(
            f"published {result.version} on {result.channel} to {portal}:"
            f" feed version {result.feed_version}"
        )
    else:
        print(f"{result.version} is already published on {result.channel}; nothing changed")
    if json:
        write_json_report(
            Path(json),
            {
                "version": result.version,
                "channel": result.channel,
                "feed_version": result.feed_version,
                "changed": result.changed,
            },
        )


@task(
    positional=["media"],
    help={
        "media": "new folder to write the offline media to",
        "from_": "installed version the media updates from (default: an empty database)",
        "portal": "portal folder that holds the releases",
        "trusted_keys": PORTAL_TRUSTED_KEYS_HELP + "; copied onto the media",
        "channel": "release channel: stable or testing (default: stable)",
        "min_valid_days": MEDIA_VALID_HELP + " (default: 30)",
        "lock_timeout": LOCK_WAIT_HELP,
    },
)
@guarded(positional=("media",))
def publish_offline_media(
    c: Context,
    media: str,
    from_: str | None = None,
    portal: str | None = None,
    trusted_keys: str | None = None,
    channel: str = "stable",
    min_valid_days: int = 30,
    lock_timeout: int = 120,
) -> None:
    """Write a folder that updates a database from a version without network."""
    _write_media(media, from_, portal, trusted_keys, channel, min_valid_days, lock_timeout)


def _write_media(
    media: str,
    from_: str | None,
    portal: str | None,
    trusted_keys: str | None,
    channel: str,
    min_valid_days: int,
    lock_timeout: int = 120,
) -> None:
    from pipeline.portal import check_portal_folder, read_portal_feed, write_offline_media
    from pipeline.trust import load_trust

    if not portal or not trusted_keys:
        raise ConfigError("offline media need --portal DIR and --trusted-keys FILE")
    if from_ is not None:
        Version.parse(from_)
    folder = check_portal_folder(portal)
    keys_file = Path(trusted_keys)
    trusted = load_trust(keys_file)
    chain = write_offline_media(
        folder,
        Path(media),
        from_,
        keys_file,
        trusted,
        channel=channel,
        min_valid_days=int(min_valid_days),
        lock_timeout=float(lock_timeout),
    )
    feed = read_portal_feed(Path(media), trusted)
    expires = f"; the feed expires {feed.expires}" if feed else ""
    versions = ", ".join(r.version for r in chain)
    print(f"wrote {media}: {_count(len(chain), 'release')}, {versions}{expires}")


@task(
    help={
        "portal": "portal folder whose feed to re-sign",
        "key": f"secret key file that signs the feed (default: ${SIGNING_KEY_ENV})",
        "trusted_keys": PORTAL_TRUSTED_KEYS_HELP,
        "expiry_days": "days until the feed expires (default: 45)",
        "force_resign": (
            "re-sign a feed whose signature no longer verifies (an untrusted key signed it),"
            " after verifying every bundle it lists"
        ),
        "lock_timeout": LOCK_WAIT_HELP,
        "max_ratio": MAX_RATIO_HELP.format(where="./pyproject.toml"),
    },
)
@guarded()
def publish_refresh(
    c: Context,
    portal: str | None = None,
    key: str | None = None,
    trusted_keys: str | None = None,
    expiry_days: int = 45,
    force_resign: bool = False,
    lock_timeout: int = 120,
    max_ratio: str | None = None,
) -> None:
    """Re-sign the portal's feed with a higher feed version and a new expiry."""
    from pipeline.portal import check_portal_folder, refresh_feed
    from pipeline.trust import load_trust

    if not portal or not trusted_keys:
        raise ConfigError("publish.refresh needs --portal DIR and --trusted-keys FILE")
    feed = refresh_feed(
        check_portal_folder(portal),
        _load_signing_key(key),
        load_trust(Path(trusted_keys)),
        expiry_days=int(expiry_days),
        force_resign=force_resign,
        lock_timeout=float(lock_timeout),
        max_ratio=_max_ratio(max_ratio, Path(".")),
    )
    print(
        f"re-signed {portal}/feed.json: feed version {feed.feed_version}, expires {feed.expires}"
    )


publish = Collection("publish")
publish.add_task(publish_bundle, "bundle", default=True)
publish.add_task(publish_offline_media, "offline-media")
publish.add_task(publish_refresh, "refresh")


TRUSTED_KEYS_HELP = "trusted-keys.json, or a bare minisign.pub, whose keys may sign the bundle"
DATABASE_HELP = "database URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
BACKUP_DIR_HELP = (
    "folder for backups and the apply journal (default: backups/ beside a SQLite file)"
)


def _seconds(text: str, option: str) -> float:
    """Parse a non-negative number of seconds given on the command line."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"{option} {text!r}: expected a number of seconds, such as 30 or 2.5")
    return seconds


def _milliseconds(text: str, option: str) -> int:
    """Parse a positive whole number of milliseconds given on the command line."""
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise ConfigError(
            f"{option} {text!r}: expected a positive number of milliseconds, such as 5000"
        )
    return int(text)


def _trusted_keys(path: str | None) -> list[Any]:
    from pipeline.trust import load_trust

    if not path:
        raise SignatureError("--trusted-keys FILE is required (trusted-keys.json or minisign.pub)")
    return list(load_trust(Path(path)))


@task(
    positional=["bundle"],
    auto_shortflags=False,
    help={
        "bundle": "bundle archive (.7z); its signature is BUNDLE.minisig",
        "database": DATABASE_HELP,
        "trusted_keys": TRUSTED_KEYS_HELP,
        "install_dir": "installation folder that receives the fix payload files (default: none)",
        "dry_run": "run every step, then roll back",
        "allow_downgrade": "apply a bundle older than the installed release",
        "lock_timeout": "seconds to wait for another apply on the same database, and for a"
        " table lock that the backup or a migration needs (default: 30)",
        "keep_backups": "number of this database's backups to keep in the folder (default: 5)",
        "backup_dir": BACKUP_DIR_HELP,
        "repo": "folder that relative sqlite:/// paths start from, and whose pyproject.toml"
        " may set max_ratio (default: .)",
        "create": "create a missing SQLite database file for a fresh install",
        "encrypted": ENCRYPTED_HELP,
        "allow_unsigned_manifest": "apply without manifest.json.minisig beside the bundle"
        " (the archive signature still covers the manifest inside)",
        "max_ratio": MAX_RATIO_HELP.format(where="the --repo folder's pyproject.toml"),
        "json": JSON_HELP,
    },
)
@guarded(positional=("bundle",))
def apply(
    c: Context,
    bundle: str,
    database: str | None = None,
    trusted_keys: str | None = None,
    install_dir: str | None = None,
    dry_run: bool = False,
    allow_downgrade: bool = False,
    lock_timeout: str = "30",
    backup_dir: str | None = None,
    keep_backups: int = 5,
    repo: str = ".",
    create: bool = False,
    encrypted: bool = False,
    allow_unsigned_manifest: bool = False,
    max_ratio: str | None = None,
    json: str | None = None,
) -> None:
    """Verify a bundle, back up the database and apply the bundle, all or nothing."""
    from pipeline.apply import apply_bundle
    from pipeline.database import redact_url

    if not database:
        raise ConfigError("apply needs --database URL")
    names = {"bundle": bundle, "database": redact_url(database)}
    # QA and CI read the outcome from the report, so a failure or a stop gets one too.
    try:
        if not Path(bundle).is_file():
            raise ConfigError(f"bundle {bundle} not found")
        # A bundle passes or fails here as in `verify`, which needs the manifest signature
        # unless --allow-unsigned-manifest is given. Apply changes a database, so it requires
        # no less.
        unsigned = not (Path(bundle).parent / "manifest.json.minisig").is_file()
        if unsigned and not allow_unsigned_manifest:
            _require_manifest_signature(Path(bundle))
        limit = _max_ratio(max_ratio, Path(repo))
        password = _bundle_password(new=False) if encrypted else None
        result = apply_bundle(
            Path(bundle),
            database,
            _trusted_keys(trusted_keys),
            root=Path(repo),
            install_dir=Path(install_dir) if install_dir else None,
            dry_run=dry_run,
            allow_downgrade=allow_downgrade,
            lock_timeout=_seconds(lock_timeout, "--lock-timeout"),
            backup_dir=Path(backup_dir) if backup_dir else None,
            keep_backups=keep_backups,
            create=create,
            max_ratio=limit,
            password=password,
        )
    except (PipelineError, KeyboardInterrupt) as exc:
        if json:
            status = "failed" if isinstance(exc, PipelineError) else "interrupted"
            if isinstance(exc, Terminated):
                status = "terminated"
            write_json_report(Path(json), {**names, "status": status, "error": str(exc)})
        raise
    if result.status == "already-applied":
        print(f"{result.bundle_version} is already installed; nothing to do")
    else:
        print(
            f"{result.status} {result.bundle_version} (from {result.from_version or 'none'}):"
            f" {len(result.migrations)} migrations, {len(result.catalogs)} catalogs,"
            f" {len(result.payload)} payload files in {result.seconds:.2f} s"
        )
        print(f"  backup {result.backup} (sha256 {result.backup_sha256})")
        for catalog_id, counts in result.catalogs.items():
            print(
                f"  catalog {catalog_id}: {counts['added']} added, {counts['changed']} changed,"
                f" {counts['removed']} removed"
            )
    if unsigned:
        print(
            "  manifest signature: not checked, no manifest.json.minisig beside the bundle;"
            " the archive signature covers the manifest inside"
        )
    if result.status == "applied" and trusted_keys and trusted_keys.endswith(".json"):
        # A bundle that carries the next trusted keys moves the customer to them. The bundle
        # is applied already, so next trusted keys older than the file's only get a notice.
        _accept_rotation(Path(bundle), trusted_keys, password, limit, stale_ok=True)
    if json:
        write_json_report(Path(json), {**names, **result.to_json()})


@task(
    auto_shortflags=False,
    help={"database": DATABASE_HELP, "backup_dir": BACKUP_DIR_HELP, "repo": REPO_HELP},
)
@guarded()
def db_recover(
    c: Context, database: str | None = None, backup_dir: str | None = None, repo: str = "."
) -> None:
    """Finish or undo an interrupted apply from its journal and backup."""
    from pipeline.apply import recover

    if not database:
        raise ConfigError("db.recover needs --database URL")
    result = recover(database, Path(repo), backup_dir=Path(backup_dir) if backup_dir else None)
    messages = {
        "nothing": "no interrupted apply recorded; nothing to do",
        "finished": f"finished the committed apply of {result.bundle_version}",
        "undone": f"undid the interrupted apply of {result.bundle_version}",
        "restored": f"restored the database from the backup taken before {result.bundle_version}",
    }
    print(messages[result.action])


@task(
    help={
        "database": DATABASE_HELP,
        "out": "backup file to write",
        "verify": "restore the backup into a scratch database and compare table by table",
        "lock_timeout": "seconds to wait for a lock that another session holds (default: 30)",
        "repo": REPO_HELP,
        "json": JSON_HELP,
    }
)
@guarded()
def db_backup(
    c: Context,
    database: str | None = None,
    out: str | None = None,
    verify: bool = False,
    lock_timeout: str = "30",
    repo: str = ".",
    json: str | None = None,
) -> None:
    """Back up a database (SQLite backup API or pg_dump) and print its SHA-256."""
    from pipeline.db_backup import backup_database, verify_backup

    if not database or not out:
        raise ConfigError("db.backup needs --database URL and --out FILE")
    wait = _seconds(lock_timeout, "--lock-timeout")
    backup = backup_database(database, Path(repo), Path(out), lock_timeout_ms=int(wait * 1000))
    print(f"backed up to {backup.path} (sha256 {backup.sha256}) in {backup.seconds:.2f} s")
    report: dict[str, Any] = {"backup": str(backup.path), "sha256": backup.sha256}
    if verify:
        comparison = verify_backup(backup.path, database, Path(repo))
        report["tables"] = {t: vars(s) for t, s in comparison.tables.items()}
        report["differences"] = comparison.differences
        if not comparison.equal:
            raise PipelineError(
                f"backup {backup.path} differs from {database} after a scratch restore: "
                + "; ".join(comparison.differences[:5])
            )
        print(f"verified: {len(comparison.tables)} tables match a scratch restore")
    if json:
        write_json_report(Path(json), report)


@task(help={"backup": "backup file to restore", "database": DATABASE_HELP, "repo": REPO_HELP})
@guarded()
def db_restore(
    c: Context, backup: str | None = None, database: str | None = None, repo: str = "."
) -> None:
    """Replace a database with a backup, verified table by table against a scratch restore."""
    from pipeline.db_backup import restore_database

    if not backup or not database:
        raise ConfigError("db.restore needs --backup FILE and --database URL")
    comparison = restore_database(Path(backup), database, Path(repo))
    print(f"restored {database} from {backup}: {len(comparison.tables)} tables verified")


@task(help={"database": DATABASE_HELP, "repo": REPO_HELP, "json": JSON_HELP, "junit": JUNIT_HELP})
@guarded()
def db_check(
    c: Context,
    database: str | None = None,
    repo: str = ".",
    json: str | None = None,
    junit: str | None = None,
) -> None:
    """Check integrity, orphan rows per foreign key and duplicate catalog keys."""
    from pipeline.dbtools import check_database

    if not database:
        raise ConfigError("db.check needs --database URL")
    report = check_database(database, Path(repo))
    _findings_summary([report.case()])
    if json:
        write_json_report(Path(json), report.to_json())
    if junit:
        write_junit_report(Path(junit), "db-check", [report.case()])
    print(f"{report.database}: {'passed' if report.passed else 'FAILED'}")
    if not report.passed:
        raise PipelineError(f"{report.database} has {len(report.findings())} problem(s)")


@task(
    iterable=["policy"],
    help={
        "database": DATABASE_HELP,
        "out": "SQL script to write (default: repair.sql)",
        "policy": (
            "TABLE=delete, TABLE=null, or per foreign key column TABLE.COLUMN=null or"
            " TABLE.COLUMN=relink:VALUE; repeat per table or column"
        ),
        "default_policy": "policy of tables without --policy (default: delete)",
        "apply": "back up the database, then run the script",
        "backup_dir": "folder for the backup taken before --apply (default: the script's folder)",
        "repo": REPO_HELP,
    },
)
@guarded()
def db_repair(
    c: Context,
    database: str | None = None,
    out: str = "repair.sql",
    policy: list[str] | None = None,
    default_policy: str = "delete",
    apply: bool = False,
    backup_dir: str | None = None,
    repo: str = ".",
) -> None:
    """Write a reviewable SQL script that removes orphan rows; run it with --apply."""
    from pipeline.dbtools import repair_database

    if not database:
        raise ConfigError("db.repair needs --database URL")
    policies = {}
    for entry in policy or []:
        table, separator, value = entry.partition("=")
        if not separator:
            raise ConfigError(f"--policy {entry!r}: expected TABLE=POLICY or TABLE.COLUMN=POLICY")
        policies[table] = value
    result = repair_database(
        database,
        Path(out),
        root=Path(repo),
        policies=policies,
        default_policy=default_policy,
        apply=apply,
        backup_dir=Path(backup_dir) if backup_dir else None,
    )
    print(f"wrote {result.script}: {result.statements} statement(s)")
    if result.applied and result.backup and result.remaining is not None:
        print(f"applied after backing up to {result.backup.path}")
        for line in result.relinked:
            print(f"  {line}")
        print(f"check afterwards: {'passed' if result.remaining.passed else 'FAILED'}")


@task(help={"database": DATABASE_HELP, "repo": REPO_HELP, "json": JSON_HELP})
@guarded()
def db_reindex(
    c: Context, database: str | None = None, repo: str = ".", json: str | None = None
) -> None:
    """Rebuild indexes and refresh statistics; print the sizes before and after."""
    from pipeline.dbtools import reindex_database

    if not database:
        raise ConfigError("db.reindex needs --database URL")
    result = reindex_database(database, Path(repo))
    print(
        f"{result.database}: {result.size_before} -> {result.size_after} bytes"
        + (
            f", indexes {result.index_size_before} -> {result.index_size_after} bytes"
            if result.index_size_before is not None
            else ""
        )
    )
    before = result.indexes_before or {}
    for name, size in (result.indexes_after or {}).items():
        print(f"  index {name}: {before.get(name, 0)} -> {size} bytes")
    if result.index_note:
        print(f"  {result.index_note}")
    if json:
        write_json_report(Path(json), vars(result))


@task(
    help={
        "from_": "source database URL",
        "to": "target database URL; an empty database or a new SQLite file",
        "repo": "content repository whose migrations create the target schema (default: .)",
        "json": JSON_HELP,
    }
)
@guarded()
def db_transfer(
    c: Context,
    from_: str | None = None,
    to: str | None = None,
    repo: str = ".",
    json: str | None = None,
) -> None:
    """Copy a database between SQLite and PostgreSQL or servers, verified by checksums."""
    from pipeline.dbtools import transfer_database

    if not from_ or not to:
        raise ConfigError("db.transfer needs --from URL and --to URL")
    result = transfer_database(from_, to, root=Path("."), repo=Path(repo))
    print(
        f"transferred {result.source} to {result.target}: {len(result.tables)} tables,"
        f" {result.rows} rows, checksums match"
    )
    if json:
        write_json_report(
            Path(json),
            {
                "source": result.source,
                "target": result.target,
                "tables": {t: vars(s) for t, s in result.tables.items()},
            },
        )


@task(
    positional=["bundle"],
    iterable=["database"],
    help={
        "bundle": "bundle archive (.7z); its signature is BUNDLE.minisig",
        "database": "test database URL; repeat for several. Each is copied, never changed",
        "trusted_keys": TRUSTED_KEYS_HELP,
        "out": "folder for qa.html, qa.json and qa.junit.xml (default: qa)",
        "repo": "folder that relative sqlite:/// paths start from, and whose pyproject.toml"
        " may set max_ratio (default: .)",
        "max_ratio": MAX_RATIO_HELP.format(where="the --repo folder's pyproject.toml"),
    },
)
@guarded(positional=("bundle",))
def qa(
    c: Context,
    bundle: str,
    database: list[str] | None = None,
    trusted_keys: str | None = None,
    out: str = "qa",
    repo: str = ".",
    max_ratio: str | None = None,
) -> None:
    """Apply a bundle to a copy of each test database and write an HTML QA report."""
    from pipeline.qa import qa_bundle

    if not database:
        raise ConfigError("qa needs at least one --database URL")
    keys_ = _trusted_keys(trusted_keys)
    result = qa_bundle(
        Path(bundle),
        database,
        keys_,
        Path(out),
        root=Path(repo),
        max_ratio=_max_ratio(max_ratio, Path(repo)),
    )
    for db in result.databases:
        print(f"{db.database} ({db.engine}): {db.status}")
        if db.error:
            print(f"  error: {db.error}")
    print(f"wrote {result.html}, {result.json} and {result.junit}")
    if not result.passed:
        raise PipelineError(f"QA of {bundle} failed")


db = Collection("db")
db.add_task(db_recover, "recover")
db.add_task(db_backup, "backup")
db.add_task(db_restore, "restore")
db.add_task(db_check, "check")
db.add_task(db_repair, "repair")
db.add_task(db_reindex, "reindex")
db.add_task(db_transfer, "transfer")


FORMAT_HELP = "treasury format id, the folder name under packages/treasury/"


@task(
    positional=["file"],
    help={
        "file": "treasury file to parse",
        "format_": FORMAT_HELP,
        "json": "write the canonical records to this JSON file",
        "repo": REPO_HELP,
    },
)
@guarded(positional=("file",))
def treasury_parse(
    c: Context, file: str, format_: str | None = None, json: str | None = None, repo: str = "."
) -> None:
    """Parse a statement file with a treasury format into canonical records."""
    from pipeline.treasury import load_format, parse_file

    if not format_:
        raise ConfigError("treasury.parse needs --format ID")
    warnings: list[Finding] = []
    records = parse_file(load_format(Path(repo), format_), Path(file), warnings=warnings)
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"{file}: {len(records)} record(s) with {format_}")
    if json:
        write_json_report(Path(json), records)


@task(
    positional=["records"],
    help={
        "records": "JSON file with an array of canonical records",
        "format_": FORMAT_HELP,
        "out": "export file to write",
        "repo": REPO_HELP,
    },
)
@guarded(positional=("records",))
def treasury_render(
    c: Context, records: str, format_: str | None = None, out: str | None = None, repo: str = "."
) -> None:
    """Write canonical records as an export file in a treasury format."""
    from pipeline.treasury import load_format, render_file

    if not format_ or not out:
        raise ConfigError("treasury.render needs --format ID and --out FILE")
    warnings: list[Finding] = []
    count = render_file(
        load_format(Path(repo), format_), Path(records), Path(out), warnings=warnings
    )
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"{out}: {count} record(s) in {format_}")


@task(
    help={
        "format_": FORMAT_HELP,
        "repo": REPO_HELP,
        "accept_definition_change": "reason why the definition changed while no sample"
        " changed; stored in conformance.json",
    }
)
@guarded()
def treasury_record(
    c: Context,
    format_: str | None = None,
    repo: str = ".",
    accept_definition_change: str | None = None,
) -> None:
    """Check a treasury format's samples and record their hashes in conformance.json."""
    from pipeline.treasury import record_conformance

    if not format_:
        raise ConfigError("treasury.record needs --format ID")
    path = record_conformance(Path(repo), format_, accept_reason=accept_definition_change)
    print(f"recorded {path}")


@task(
    help={
        "repo": REPO_HELP,
        "rev": "render the reports and forms of this commit, changed since the release"
        " before it (default: the work tree, changed up to HEAD)",
        "database": "sample database URL (default: the first configured sample database)",
        "out": "folder for the HTML pages, replaced by each run (default: dist/preview)",
        "all": "preview every report and form, changed or not",
        "json": "write the commit and the pages by item and language to this JSON file",
    }
)
@guarded()
def report_preview(
    c: Context,
    repo: str = ".",
    rev: str | None = None,
    database: str | None = None,
    out: str = "dist/preview",
    all: bool = False,
    json: str | None = None,
) -> None:
    """Render changed reports and forms in kk and ru to HTML with sample data."""
    from pipeline.preview import preview_changed

    previews = preview_changed(Path(repo), Path(out), rev=rev, database_url=database, every=all)
    for item, by_language in previews.pages.items():
        print(f"  {item}: {', '.join(str(path) for path in by_language.values())}")
    source = f"commit {previews.commit}" if previews.commit else "the work tree"
    print(f"previewed {len(previews.pages)} report(s) and form(s) of {source} into {out}")
    if json:
        write_json_report(Path(json), {"commit": previews.commit, "pages": previews.pages})


treasury = Collection("treasury")
treasury.add_task(treasury_parse, "parse")
treasury.add_task(treasury_render, "render")
treasury.add_task(treasury_record, "record")


@task(
    help={
        "portal": "portal URL (http:// or https://) or folder, such as offline media",
        "database": "database URL to update: sqlite:///PATH or postgresql://...",
        "trusted_keys": PORTAL_TRUSTED_KEYS_HELP,
        "channel": "release channel: stable or testing (default: stable)",
        "check": "print the releases that would be applied and change nothing",
        "state_file": (
            "file that records the last accepted feed version (default: DB.parus-update.json"
            " beside a SQLite file; per user for PostgreSQL)"
        ),
        "work_dir": "folder for the downloads (default: the state file's path without .json)",
        "root": "folder that relative sqlite:/// paths start from, and whose pyproject.toml"
        " may set max_ratio (default: .)",
        "install_dir": "installation folder that receives the fix payload files (default: none)",
        "timeout": "seconds to wait for each network request (default: 30)",
        "retries": "retries of a failed request before the update stops, 0 or more (default: 5)",
        "max_ratio": MAX_RATIO_HELP.format(where="the --root folder's pyproject.toml"),
        "json": JSON_HELP,
    }
)
@guarded()
def update(
    c: Context,
    portal: str | None = None,
    database: str | None = None,
    trusted_keys: str | None = None,
    channel: str = "stable",
    check: bool = False,
    state_file: str | None = None,
    work_dir: str | None = None,
    root: str = ".",
    install_dir: str | None = None,
    timeout: int = 30,
    retries: int = 5,
    max_ratio: str | None = None,
    json: str | None = None,
) -> None:
    """Update a database to the newest release on a channel from a portal or offline media."""
    from pipeline.trust import load_trust
    from pipeline.update import update as run_update

    if not portal or not database or not trusted_keys:
        raise ConfigError(
            "update needs --portal URL_OR_DIR, --database URL and --trusted-keys FILE"
        )
    result = run_update(
        portal,
        database,
        load_trust(Path(trusted_keys)),
        channel=channel,
        check_only=check,
        state_file=Path(state_file) if state_file else None,
        work_dir=Path(work_dir) if work_dir else None,
        root=Path(root),
        install_dir=Path(install_dir) if install_dir else None,
        timeout=float(timeout),
        retries=int(retries),
        trusted_keys_file=Path(trusted_keys),
        max_ratio=_max_ratio(max_ratio, Path(root)),
    )
    plan = result.plan
    print(
        f"feed version {plan.feed_version} (expires {plan.expires}),"
        f" installed {plan.installed or 'nothing'}, channel {plan.channel}"
    )
    versions = ", ".join(release.version for release in plan.chain)
    if result.created_database and plan.chain:
        verb = "would create" if check else "created"
        print(f"{verb} the empty SQLite database {result.created_database} for a fresh install")
    if not plan.chain:
        print("up to date: no newer release on this channel")
    elif check:
        print(f"would apply {_count(len(plan.chain), 'release')}: {versions}")
        for release in plan.chain:
            print(
                f"  {release.version} ({release.channel}, {release.size} bytes, {release.sha256})"
            )
    else:
        print(f"applied {_count(len(result.applied), 'release')}: {', '.join(result.applied)}")
    if json:
        write_json_report(Path(json), result.to_json())


catalog = Collection("catalog")
catalog.add_task(catalog_import, "import")

ns = Collection(collect, validate, dry_run, build, sign, verify, release, catalog, keys)
ns.add_task(samples)
ns.add_collection(report)
ns.add_task(apply)
ns.add_task(qa)
ns.add_collection(db)
_TASK_NAMES = {
    "catalog-import": "catalog.import",
    "keys-generate": "keys.generate",
    "keys-rotate": "keys.rotate",
}
ns.add_collection(publish)
ns.add_task(update)
_TASK_NAMES["publish-bundle"] = "publish"
_TASK_NAMES["publish-offline-media"] = "publish.offline-media"
ns.add_collection(treasury)
# The report collection already contains `merge`, and `preview` joins it.
report.add_task(report_preview, "preview")
_TASK_NAMES.update(
    {
        "treasury-parse": "treasury.parse",
        "treasury-render": "treasury.render",
        "treasury-record": "treasury.record",
        "report-preview": "report.preview",
    }
)
_TASK_NAMES["report-merge"] = "report.merge"


def _all_tasks(collection: Collection) -> list[Any]:
    tasks = list(collection.tasks.values())
    for child in collection.collections.values():
        tasks.extend(_all_tasks(child))
    return tasks


_HELP_TEXTS = [(task_object, dict(task_object.help)) for task_object in _all_tasks(ns)]
