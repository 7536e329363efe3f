"""Build provenance: an in-toto Statement v1 with a SLSA provenance v1 predicate.

The statement is `provenance.json` inside the bundle and beside it in the
output folder, where `provenance.json.minisig` signs it like the manifest.
Its subjects are the bundle's files other than `manifest.json` and
`provenance.json` itself, because a file inside the bundle cannot name the
hash of the archive or of the manifest that lists it.

The statement contains nothing that varies between two builds of one commit:
`runDetails.metadata` carries no invocation id and no start or finish time,
and the source repository is a configured or remote URL, never a local path.
That URL is recorded without user name, password, query string or fragment.

Layout::

    {
      "_type": "https://in-toto.io/Statement/v1",
      "subject": [{"name": "<archive path>", "digest": {"sha256": "<hex>"}}],
      "predicateType": "https://slsa.dev/provenance/v1",
      "predicate": {
        "buildDefinition": {
          "buildType": BUILD_TYPE,
          "externalParameters": {"product", "version", "full", "encrypted",
                                 "source": {"repository", "commit", "base_tag"}},
          "internalParameters": {"compression", "source_date_epoch"},
          "resolvedDependencies": [{"name": "source" | "base", "uri"?, "digest": {"gitCommit"}}]
        },
        "runDetails": {"builder": {"id": BUILDER_ID, "version": {<tool>: <version>}},
                       "metadata": {}}
      }
    }
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import BundleError

logger = logging.getLogger(__name__)

PROVENANCE_NAME = "provenance.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://parus-kaz.example/parus-kaz-release/bundle/v1"
BUILDER_ID = "https://parus-kaz.example/parus-kaz-release"
# The `[tool.pipeline]` setting that names the content repository in the provenance.
REPOSITORY_SETTING = "repository"


@dataclass(frozen=True)
class BuildInputs:
    """Inputs and settings of one build, as the provenance records them."""

    product: str
    version: str
    commit: str
    base_tag: str | None
    base_commit: str | None
    repository: str | None
    full: bool
    encrypted: bool
    compression: dict[str, Any]
    source_date_epoch: int
    tools: dict[str, str]


def source_repository(repo: Path, configured: object) -> str | None:
    """Return the URL that names the content repository, or None when there is none to name.

    The `[tool.pipeline] repository` setting wins. Otherwise the `origin`
    remote counts when it is a URL (`scheme://` or `user@host:path`), not a
    local path, which would differ between two checkouts of one commit.
    Either way the URL passes through `public_url`, because every customer
    receives the provenance.
    """
    if isinstance(configured, str) and configured:
        return public_url(configured)
    shown = subprocess.run(
        ["git", "remote", "get-url", "origin"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    url = shown.stdout.strip()
    if shown.returncode != 0 or not url:
        logger.debug("%s has no origin remote; the provenance names no repository", repo)
        return None
    if "://" in url and not url.startswith("file://"):
        return public_url(url)
    if _SCP_LIKE.fullmatch(url):
        return public_url(url)
    logger.debug("origin %s is a local path; the provenance names no repository", url)
    return None


# Git's scp-like syntax `[user[:password]@]host:path`, which git takes when a colon comes
# before the first slash. The host has no `/`, `:` or `@`, and a password may contain `@`.
_SCP_LIKE = re.compile(r"(?:(?P<userinfo>[^/]*)@)?(?P<host>[^:/@]+):(?P<path>.+)")


def public_url(url: str) -> str:
    """Return `url` without user name, password, query string or fragment.

    A user name can be an access token, like a password, and a query string
    can carry a token (`?private_token=...`), so all of them are dropped. The
    result names the repository, but cloning from it may need credentials.
    """
    if "://" in url:
        parts = urllib.parse.urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        public = urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    else:
        match = _SCP_LIKE.fullmatch(url)
        public = f"{match['host']}:{match['path']}" if match else url
    if public != url:
        # The dropped parts may be secret, so only the public URL is logged.
        logger.info("recording the source repository as %s, without credentials or query", public)
    return public


def provenance_statement(
    inputs: BuildInputs, subjects: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Return the provenance statement of a build whose files are `subjects`.

    `subjects` are manifest file entries (`path`, `size`, `sha256`).
    """
    source: dict[str, Any] = {"name": "source", "digest": {"gitCommit": inputs.commit}}
    if inputs.repository:
        source["uri"] = f"git+{inputs.repository}"
    dependencies = [source]
    if inputs.base_commit is not None:
        base: dict[str, Any] = {"name": "base", "digest": {"gitCommit": inputs.base_commit}}
        if inputs.repository and inputs.base_tag:
            base["uri"] = f"git+{inputs.repository}@refs/tags/{inputs.base_tag}"
        dependencies.append(base)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": entry["path"], "digest": {"sha256": entry["sha256"]}} for entry in subjects
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "product": inputs.product,
                    "version": inputs.version,
                    "full": inputs.full,
                    "encrypted": inputs.encrypted,
                    "source": {
                        "repository": inputs.repository,
                        "commit": inputs.commit,
                        "base_tag": inputs.base_tag,
                    },
                },
                "internalParameters": {
                    "compression": inputs.compression,
                    "source_date_epoch": inputs.source_date_epoch,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": dict(sorted(inputs.tools.items()))},
                "metadata": {},
            },
        },
    }


def provenance_bytes(statement: dict[str, Any]) -> bytes:
    """Serialize a statement canonically: sorted keys, two-space indent, UTF-8, final LF."""
    return (json.dumps(statement, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


def check_provenance(data: bytes, manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """Parse a provenance statement and check it against the manifest it ships with.

    Checks the statement and predicate types, that the source commit equals
    the manifest's, and that the subjects are exactly the manifest's files
    other than the provenance itself, with equal SHA-256 hashes.

    Raises:
        BundleError: the statement is not JSON or disagrees with the manifest.
    """
    try:
        statement = json.loads(data.decode("utf-8"))
        statement_type = statement["_type"]
        predicate_type = statement["predicateType"]
        subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
        commit = statement["predicate"]["buildDefinition"]["externalParameters"]["source"][
            "commit"
        ]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BundleError(
            f"{name}: expected an in-toto statement with subjects and a SLSA predicate: {exc!r}"
        ) from exc
    if statement_type != STATEMENT_TYPE or predicate_type != PREDICATE_TYPE:
        raise BundleError(
            f"{name}: expected _type {STATEMENT_TYPE} and predicateType {PREDICATE_TYPE},"
            f" found {statement_type} and {predicate_type}"
        )
    if commit != manifest["source"]["commit"]:
        raise BundleError(
            f"{name}: source commit {commit} differs from the manifest's"
            f" {manifest['source']['commit']}"
        )
    listed = {
        entry["path"]: entry["sha256"]
        for entry in manifest["files"]
        if entry["path"] != PROVENANCE_NAME
    }
    if subjects != listed:
        differing = sorted(set(subjects.items()) ^ set(listed.items()))
        raise BundleError(
            f"{name}: subjects differ from the manifest's files, first at {differing[0][0]}"
        )
    result: dict[str, Any] = statement
    return result
