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
    remote counts. Either way a local path or `file:` URL gives None, because
    it would differ between two checkouts of one commit, and any other URL
    passes through `public_url`, because every customer receives the provenance.
    """
    if isinstance(configured, str) and configured:
        return _recorded_url(configured, "the repository setting")
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
    return _recorded_url(url, "the origin remote")


def _recorded_url(url: str, source: str) -> str | None:
    """Return `public_url(url)`, or None when `url` names a local path."""
    if _is_local(url):
        # Two checkouts of one commit differ in their local paths, and a path
        # names only a folder on the build machine.
        logger.info("%s is a local path; the provenance names no repository", source)
        return None
    return public_url(url)


# Git's scp-like syntax `[user[:password]@]host:path`, which git takes when a colon comes
# before the first slash. The host has no `/`, `:` or `@`, and a password may contain `@`.
_SCP_LIKE = re.compile(r"(?:(?P<userinfo>[^/]*)@)?(?P<host>[^:/@]+):(?P<path>.+)")
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<rest>.*)", re.DOTALL)
# Schemes that mark a URL even when the `//` after them is missing or mistyped.
_URL_SCHEMES = frozenset({"http", "https", "ssh", "git", "git+ssh", "ssh+git", "ftp", "ftps"})


def _is_local(url: str) -> bool:
    """Return True for a `file:` URL or a path, which git reads from this machine."""
    match = _SCHEME.fullmatch(url)
    scheme = match["scheme"].lower() if match else ""
    if scheme == "file":
        return True
    if "://" in url or scheme in _URL_SCHEMES:
        return False
    scp = _SCP_LIKE.fullmatch(url)
    # A one-letter host is a Windows drive letter, as in `C:/content`.
    return scp is None or len(scp["host"]) == 1


def public_url(url: str) -> str:
    """Return `url` without user name, password, path parameters, query string or fragment.

    A user name can be an access token, like a password, and a path parameter
    or a query string can carry a token (`;auth=...`, `?private_token=...`),
    so all of them are dropped. In a malformed URL such as `https:/user:pw@host/x`
    everything before the last `@` of the part up to the first `/` after the
    scheme counts as user information. The result names the repository, but
    cloning from it may need credentials.
    """
    match = _SCHEME.fullmatch(url)
    if match and ("://" in url or match["scheme"].lower() in _URL_SCHEMES):
        public = _public_hierarchical(match["scheme"].lower(), match["rest"])
    else:
        scp = _SCP_LIKE.fullmatch(url)
        public = f"{scp['host']}:{scp['path']}" if scp else url
    if public != url:
        # The dropped parts may be secret, so only the public URL is logged.
        logger.info("recording the source repository as %s, without credentials or query", public)
    return public


def _public_hierarchical(scheme: str, rest: str) -> str:
    """Rebuild `scheme://host/path` from the part of a URL after `scheme:`."""
    authority, slash, path = rest.lstrip("/").partition("/")
    # Cut the query and fragment after taking the host, so a `?` or `#` inside a
    # password cannot end the authority early.
    host = re.split(r"[?#]", authority.rpartition("@")[2], maxsplit=1)[0]
    path = re.split(r"[?#]", path, maxsplit=1)[0]
    path = re.sub(r";[^/]*", "", path)
    return f"{scheme}://{host}{slash}{path}"


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
