"""Migration files of a content repository: naming, reading and splitting into statements.

A migration is a file directly in `migrations/`, named `NNNN_slug.sql` when its
SQL is portable, or `NNNN_slug.sqlite.sql` plus `NNNN_slug.postgresql.sql` when
each engine needs its own text. Versions are four digits, start at 0001 and
have no gaps. A migration runs in one transaction unless its leading comment
block contains the line `-- pipeline: no-transaction`.

The checksum is taken over the normalized text (UTF-8 BOM removed, CRLF and CR
turned into LF), so a checkout with other line endings does not look modified.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import hashlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.content import KIND_FOLDERS, Kind
from pipeline.errors import MigrationError
from pipeline.findings import Finding, errors_only

DIALECTS = ("sqlite", "postgresql")
MIGRATIONS_FOLDER = KIND_FOLDERS[Kind.MIGRATION]
NO_TRANSACTION_MARK = "-- pipeline: no-transaction"
REBUILD_TABLES_MARK = "-- pipeline: rebuild-tables"

_NAME = re.compile(
    r"^(?P<version>\d{4})_(?P<slug>[a-z0-9]+(?:_[a-z0-9]+)*)"
    r"(?:\.(?P<dialect>sqlite|postgresql))?\.sql$"
)
_NAME_RULE = (
    "expected NNNN_slug.sql, NNNN_slug.sqlite.sql or NNNN_slug.postgresql.sql"
    " (a 4-digit version and a slug of lower-case letters, digits and underscores)"
)
_NO_TRANSACTION = re.compile(r"^--\s*pipeline:\s*no-transaction\s*$", re.IGNORECASE)
_REBUILD_TABLES = re.compile(r"^--\s*pipeline:\s*rebuild-tables\s*$", re.IGNORECASE)
FOREIGN_KEYS_MESSAGE = (
    "PRAGMA foreign_keys is not allowed in a migration: it does nothing inside a"
    " transaction and would silently turn foreign key checks off; remove it"
)
_PRAGMA = r"^PRAGMA\s+(?:[\w\"`\[\]]+\s*\.\s*)?[\"`\[]?"
# Statements a migration must not contain, with the reason given to its author. They
# are matched on the statement without comments, so `PRAGMA /* c */ name` counts.
_RESERVED_MESSAGE = (
    "a migration must not create, alter, drop or write a table named pipeline_* or"
    " catalog_*, nor rename a table to such a name:"
    " the pipeline manages these tables, apply creates its own before the migrations"
    " and loads the catalog tables from catalogs/ after them, and the next load of a"
    " catalog rejects rows it did not write; give the table another name, or change the"
    " catalog in catalogs/"
)
# A write anywhere in a statement (a CTE, a trigger or function body, EXPLAIN
# ANALYZE, SELECT INTO) into a pipeline_* or catalog_* table.
_RESERVED_NAME = r"(?:[\w\"`\[\]]+\s*\.\s*){0,2}[\"`\[]?(?:pipeline|catalog)_"
_RESERVED_WRITE = re.compile(
    r"\bINTO\s+(?:(?:TEMP|TEMPORARY|UNLOGGED|TABLE|ONLY)\s+)*"
    + _RESERVED_NAME
    + r"|\b(?:UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM|COPY)\s+(?:ONLY\s+)?"
    + _RESERVED_NAME
    + r"|\bTRUNCATE(?:\s+TABLE)?(?:\s+(?:ONLY\s+)?[\w\"`\[\].]+\s*,)*\s+(?:ONLY\s+)?"
    + _RESERVED_NAME,
    re.IGNORECASE,
)
# The code before a function's or a DO block's quoted body.
_BODY_BEFORE = re.compile(r"\b(?:AS|DO)\s*$", re.IGNORECASE)
_REJECTED = (
    (re.compile(_PRAGMA + r"foreign_keys\b", re.IGNORECASE), FOREIGN_KEYS_MESSAGE),
    (
        re.compile(_PRAGMA + r"ignore_check_constraints\b", re.IGNORECASE),
        "PRAGMA ignore_check_constraints is not allowed in a migration: it lets rows that"
        " break CHECK constraints be written, and they stay in the database; remove it,"
        " and correct the rows or the constraint in the migration instead",
    ),
    (
        re.compile(_PRAGMA + r"writable_schema\b", re.IGNORECASE),
        "PRAGMA writable_schema is not allowed in a migration: a direct edit of"
        " sqlite_schema can leave the database corrupt; use ALTER TABLE, or rebuild the"
        f" table in a migration marked '{REBUILD_TABLES_MARK}'",
    ),
    (
        re.compile(r"^ATTACH\b", re.IGNORECASE),
        "ATTACH is not allowed in a migration: the attached database is another file,"
        " which a dry-run would change instead of its throwaway copy and which apply"
        " neither backs up nor restores; change only the database being migrated",
    ),
    (
        re.compile(r"^DETACH\b", re.IGNORECASE),
        "DETACH is not allowed in a migration, because ATTACH is not; remove it",
    ),
    (
        re.compile(
            r"^(?:CREATE\s+(?:(?:TEMP|TEMPORARY|UNLOGGED)\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
            r"|ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?|DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?"
            r"|ALTER\s+TABLE\s+.+?\s+RENAME\s+TO\s+"
            r"|(?:INSERT|REPLACE)(?:\s+OR\s+\w+)?\s+INTO\s+|MERGE\s+INTO\s+"
            r"|UPDATE(?:\s+OR\s+\w+)?(?:\s+ONLY)?\s+|DELETE\s+FROM(?:\s+ONLY)?\s+"
            r"|TRUNCATE(?:\s+TABLE)?(?:\s+ONLY)?\s+)"
            r"(?:[\w\"`\[\]]+\s*\.\s*)?[\"`\[]?(?:pipeline|catalog)_",
            re.IGNORECASE | re.DOTALL,
        ),
        _RESERVED_MESSAGE,
    ),
    (
        re.compile(r"^VACUUM\b.*\bINTO\b", re.IGNORECASE | re.DOTALL),
        "VACUUM INTO is not allowed in a migration: it writes a copy of the database"
        " to another file; remove it",
    ),
)
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$")
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_CONCURRENTLY = re.compile(
    r"^(?:CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX\s+\w+)\s+CONCURRENTLY\b",
    re.IGNORECASE,
)
CONCURRENTLY_MESSAGE = (
    "{operation} CONCURRENTLY cannot run inside a transaction block, but this migration"
    " runs in one; put it in a migration of its own whose leading comment contains"
    f" the line '{NO_TRANSACTION_MARK}'"
)
# ALTER TABLE forms that SQLite's parser accepts only from a given library version.
SQLITE_FEATURES = (
    (
        re.compile(r"^ALTER\s+TABLE\s+.+?\s+DROP\s+(?:COLUMN\s+)?", re.IGNORECASE | re.DOTALL),
        (3, 35, 0),
        "ALTER TABLE ... DROP COLUMN",
    ),
    (
        re.compile(r"^ALTER\s+TABLE\s+.+?\s+RENAME\s+(?:COLUMN\s+)?\S+\s+TO\s", re.I | re.S),
        (3, 25, 0),
        "ALTER TABLE ... RENAME COLUMN",
    ),
)


class MigrationFileError(MigrationError):
    """A migration file that cannot be read or run; `path` and `line` locate the problem.

    `problem` is the message without the location, for a finding that carries
    the file and line itself.
    """

    def __init__(self, problem: str, path: str, line: int | None = None) -> None:
        super().__init__(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")
        self.problem = problem
        self.path = path
        self.line = line


@dataclass(frozen=True)
class Migration:
    """One migration as it applies to one engine."""

    version: str
    slug: str
    path: str
    dialect: str | None
    text: str
    checksum: str
    transactional: bool

    @property
    def name(self) -> str:
        """The file name, such as `0002_kbk.sql`."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def rebuilds_tables(self) -> bool:
        """True when the leading comment block contains `-- pipeline: rebuild-tables`."""
        return _header_has(self.text, _REBUILD_TABLES)


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a migration, without its final semicolon; `line` is 1-based."""

    sql: str
    line: int


@dataclass(frozen=True)
class _MigrationFile:
    version: str
    slug: str
    dialect: str | None
    file: Path
    path: str


def normalize_text(data: bytes, path: str) -> str:
    """Decode UTF-8 migration bytes, drop a BOM and turn CRLF and CR into LF.

    Raises:
        MigrationFileError: the bytes are not UTF-8; the error names the line.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise MigrationFileError(
            f"expected UTF-8, found byte 0x{data[exc.start]:02x}; save the file as UTF-8",
            path,
            line,
        ) from exc
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def checksum_text(text: str) -> str:
    """Return the SHA-256 hex digest of normalized migration text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_transactional(text: str) -> bool:
    """Return False when the leading comment block contains `-- pipeline: no-transaction`."""
    return not _header_has(text, _NO_TRANSACTION)


def _header_has(text: str, mark: re.Pattern[str]) -> bool:
    """Return True when a line of the leading comment block matches `mark`."""
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            return False
        if mark.match(stripped):
            return True
    return False


def rejected_statement(statement: Statement, dialect: str) -> str | None:
    """Return why a migration must not contain `statement`, or None when it may.

    Rejected are `PRAGMA foreign_keys`, `PRAGMA ignore_check_constraints`,
    `PRAGMA writable_schema`, `ATTACH`, `DETACH`, `VACUUM INTO`, and CREATE,
    ALTER, DROP or RENAME TO of the pipeline's own `pipeline_*` and `catalog_*` tables.
    """
    sql = strip_comments(statement.sql, dialect).strip()
    for pattern, message in _REJECTED:
        if pattern.match(sql):
            return message
    if _RESERVED_WRITE.search(_without_strings(statement.sql, dialect)):
        return _RESERVED_MESSAGE
    return None


def _without_strings(sql: str, dialect: str) -> str:
    """Return `sql` without comments and with each string literal emptied.

    Quoted names stay, because they are names. A string right after AS or
    DO is the body of a function or of a DO block: its statements stay,
    with their own strings emptied in turn.
    NOTE: a name written with escapes (`U&"catalog\\005fknp"`) or built at run
    time (EXECUTE, PREPARE) is not seen.
    """
    pieces: list[str] = []
    for kind, first, end in _segments(sql, dialect):
        piece = sql[first:end]
        if kind == "comment":
            piece = " "
        elif kind == "quoted" and piece[:1] in ("'", "$"):
            # AS or DO ends the code just before, maybe with a comment between.
            body = _BODY_BEFORE.search("".join(pieces[-3:]))
            if body is None:
                piece = "''"
            elif piece.startswith("'"):
                piece = _without_strings(piece[1:-1].replace("''", "'"), dialect)
            else:
                tag = piece[: piece.index("$", 1) + 1]
                piece = _without_strings(piece[len(tag) : -len(tag)], dialect)
        pieces.append(piece)
    return "".join(pieces)


def concurrent_operation(statement: Statement) -> str | None:
    """Return `CREATE INDEX` and the like for a `... CONCURRENTLY` statement, else None."""
    match = _CONCURRENTLY.match(statement.sql)
    if match is None:
        return None
    return " ".join(match.group().split()[:-1]).upper()


def sqlite_version_problem(
    statement: Statement, version: tuple[int, int, int] | None = None
) -> str | None:
    """Describe why the SQLite library cannot run `statement`, or return None when it can.

    `version` defaults to `sqlite3.sqlite_version_info`, read when called.
    """
    current = tuple(version or sqlite3.sqlite_version_info)
    for pattern, needed, feature in SQLITE_FEATURES:
        if current < needed and pattern.match(statement.sql) and not _is_rename_table(statement):
            have = ".".join(str(part) for part in current)
            need = ".".join(str(part) for part in needed)
            return (
                f"{feature} needs SQLite {need} or newer, but this Python uses SQLite {have};"
                f" run the pipeline with a Python built against SQLite {need} or newer,"
                " or rebuild the table in the migration instead"
            )
    return None


def _is_rename_table(statement: Statement) -> bool:
    return re.match(r"^ALTER\s+TABLE\s+\S+\s+RENAME\s+TO\s", statement.sql, re.I) is not None


def line_comments(text: str, dialect: str) -> list[tuple[int, str]]:
    """Return the 1-based line and text of every `--` comment outside quotes.

    Raises:
        MigrationError: an unterminated quote or comment.
    """
    lines = _Lines(text)
    return [
        (lines.line(first), text[first:end])
        for kind, first, end in _segments(text, dialect)
        if kind == "comment" and text.startswith("--", first)
    ]


def strip_comments(sql: str, dialect: str) -> str:
    """Return `sql` with every comment outside quotes replaced by one space."""
    pieces = [
        " " if kind == "comment" else sql[first:end]
        for kind, first, end in _segments(sql, dialect)
    ]
    return "".join(pieces)


# -- splitting ---------------------------------------------------------------------------------


_NEWLINE = re.compile("\n")


class _Lines:
    """Map text offsets to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._starts = [0] + [match.end() for match in _NEWLINE.finditer(text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset)


@functools.lru_cache(maxsize=1024)
def _segments(text: str, dialect: str) -> tuple[tuple[str, int, int], ...]:
    """Return the `(kind, start, end)` pieces of `text`: kind is `code`, `quoted` or `comment`.

    Quoted pieces are string literals, quoted identifiers and PostgreSQL dollar
    quotes. Raises MigrationError for an unterminated quote or comment. The
    header marks, the lint, the splitter and the report queries each scan the
    same texts, so the pieces of a text are kept.
    """
    return tuple(_scan_segments(text, dialect))


def _scan_segments(text: str, dialect: str) -> Iterator[tuple[str, int, int]]:
    lines = _Lines(text)
    length = len(text)
    position = 0
    code_start = 0
    while position < length:
        char = text[position]
        following = text[position : position + 2]
        end: int | None = None
        kind = "quoted"
        what = ""
        if following == "--":
            kind = "comment"
            newline = text.find("\n", position)
            end = length if newline < 0 else newline
        elif following == "/*":
            kind = "comment"
            end = _block_comment_end(text, position, dialect == "postgresql")
            what = "block comment"
        elif char in "'\"":
            backslash = (
                char == "'"
                and dialect == "postgresql"
                and position > 0
                and text[position - 1] in "Ee"
                and (
                    position < 2 or not (text[position - 2].isalnum() or text[position - 2] == "_")
                )
            )
            end = _quote_end(text, position, char, backslash)
            what = "string literal" if char == "'" else "quoted identifier"
        elif dialect == "sqlite" and char in "`[":
            close = "`" if char == "`" else "]"
            found = text.find(close, position + 1)
            end = -1 if found < 0 else found + 1
            what = "quoted identifier"
        elif dialect == "postgresql" and char == "$":
            previous = text[position - 1] if position else " "
            match = _DOLLAR_TAG.match(text, position)
            if match and not (previous.isalnum() or previous == "_"):
                found = text.find(match.group(), match.end())
                end = -1 if found < 0 else found + len(match.group())
                what = f"dollar quote {match.group()}"
        if end is None:
            position += 1
            continue
        if end < 0:
            raise MigrationError(f"unterminated {what} starting at line {lines.line(position)}")
        if code_start < position:
            yield "code", code_start, position
        yield kind, position, end
        position = end
        code_start = end
    if code_start < length:
        yield "code", code_start, length


def _block_comment_end(text: str, start: int, nested: bool) -> int:
    depth = 0
    position = start
    while position < len(text):
        pair = text[position : position + 2]
        if pair == "/*" and (nested or depth == 0):
            depth += 1
            position += 2
        elif pair == "*/":
            depth -= 1
            position += 2
            if depth == 0:
                return position
        else:
            position += 1
    return -1


def _quote_end(text: str, start: int, quote: str, backslash: bool) -> int:
    position = start + 1
    while position < len(text):
        char = text[position]
        if backslash and char == "\\":
            position += 2
            continue
        if char == quote:
            if text[position + 1 : position + 2] == quote:
                position += 2
                continue
            return position + 1
        position += 1
    return -1


def split_statements(text: str, dialect: str) -> list[Statement]:
    """Split migration text into statements at semicolons outside quotes and comments.

    The lint, the runner and the checks after the migrations each split the
    same file, so the statements of a text are kept and split once per process.

    SQLite trigger bodies (`BEGIN ... END;`) stay whole because a semicolon
    ends a statement only where `sqlite3.complete_statement` agrees. PostgreSQL
    dollar quotes (`$$` and `$tag$`), `E'...'` strings and nested block comments
    are kept intact. Comments and blank space before a statement are dropped.

    Raises:
        MigrationError: an unknown dialect, an unterminated quote or comment, or a
            SQLite statement (such as a trigger without `END;`) that never completes.
    """
    return list(_split_once(text, dialect))


@functools.lru_cache(maxsize=256)
def _split_once(text: str, dialect: str) -> tuple[Statement, ...]:
    return tuple(_split(text, dialect))


def _split(text: str, dialect: str) -> list[Statement]:
    if dialect not in DIALECTS:
        raise MigrationError(f"unknown dialect {dialect!r}: expected one of {', '.join(DIALECTS)}")
    # NOTE: a PostgreSQL SQL-standard function body (`BEGIN ATOMIC ... END`) is not
    # recognized and is split at its inner semicolons; write such bodies in $$ quotes.
    lines = _Lines(text)
    statements: list[Statement] = []
    start: int | None = None
    for kind, first, end in _segments(text, dialect):
        if kind == "comment":
            continue
        if kind == "quoted":
            start = first if start is None else start
            continue
        for position in range(first, end):
            char = text[position]
            if char == ";":
                if start is None:
                    continue
                if dialect == "sqlite" and not sqlite3.complete_statement(
                    text[start : position + 1]
                ):
                    continue
                statements.append(Statement(text[start:position].strip(), lines.line(start)))
                start = None
            elif start is None and not char.isspace():
                start = position
    if start is not None:
        rest = text[start:].strip()
        if dialect == "sqlite" and not sqlite3.complete_statement(rest + ";"):
            raise MigrationError(
                f"statement starting at line {lines.line(start)} never ends"
                " (a trigger body needs END;)"
            )
        statements.append(Statement(rest, lines.line(start)))
    return statements


def query_parameters(sql: str, dialect: str) -> list[str]:
    """Return the distinct `:name` placeholders of a query, in order of first use.

    Placeholders inside quotes and comments, and PostgreSQL `::type` casts, are
    not parameters.
    """
    names: list[str] = []
    for kind, first, end in _segments(sql, dialect):
        if kind != "code":
            continue
        for match in _PARAMETER.finditer(sql, first, end):
            if match.group(1) not in names:
                names.append(match.group(1))
    return names


@functools.lru_cache(maxsize=4096)
def sql_names(sql: str, dialect: str) -> frozenset[str] | None:
    """Return every word and quoted name of `sql`, lower case; None when it does not scan.

    This is a superset of the objects a statement names: the words of string
    literals and comments count too. A caller that skips the statements
    naming none of a set of objects therefore never skips one that names one.
    """
    try:
        segments = _segments(sql, dialect)
    except MigrationError:
        return None
    names = set()
    for kind, first, end in segments:
        piece = sql[first:end]
        if kind == "quoted" and len(piece) >= 2:
            names.add(piece[1:-1].replace(piece[0] * 2, piece[0]).lower())
        names.update(word.lower() for word in _WORD.findall(piece))
    # The scan ends a backtick name at the next backtick, SQLite at a single one.
    names.update(name.replace("``", "`").lower() for name in _BACKTICKS.findall(sql))
    return frozenset(names)


# The characters of an unquoted name, as the body of a regular expression
# character set. SQLite 3.40 and PostgreSQL 15 (in a UTF-8 database) count
# every character at or above U+0080 as one, so `платежи№2` is one name,
# although `№` is not a word character (`\w`) to Python. A name does not
# start with a digit or `$`.
NAME_CHARACTERS = r"0-9A-Za-z_$\u0080-\U0010ffff"
_WORD = re.compile(rf"[A-Za-z_\u0080-\U0010ffff][{NAME_CHARACTERS}]*")
_BACKTICKS = re.compile(r"`((?:[^`]|``)*)`")


def replace_parameters(sql: str, dialect: str, replacement: str) -> str:
    """Return `sql` with every `:name` placeholder outside quotes and comments replaced."""
    pieces: list[str] = []
    for kind, first, end in _segments(sql, dialect):
        piece = sql[first:end]
        pieces.append(_PARAMETER.sub(replacement, piece) if kind == "code" else piece)
    return "".join(pieces)


# -- files -------------------------------------------------------------------------------------


def _list_files(root: Path) -> tuple[list[_MigrationFile], list[Finding]]:
    folder = root / MIGRATIONS_FOLDER
    if not folder.is_dir():
        return [], []
    files: list[_MigrationFile] = []
    findings: list[Finding] = []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or not entry.name.lower().endswith(".sql"):
            continue
        path = f"{MIGRATIONS_FOLDER}/{entry.name}"
        match = _NAME.match(entry.name)
        if match is None:
            findings.append(
                Finding(
                    rule="migration.name", file=path, message=f"{_NAME_RULE}, found {entry.name!r}"
                )
            )
            continue
        files.append(
            _MigrationFile(match["version"], match["slug"], match["dialect"], entry, path)
        )
    return files, findings


def _structure_findings(files: list[_MigrationFile]) -> list[Finding]:
    """Check version numbers: one slug per version, dialect pairs complete, no gaps."""
    findings: list[Finding] = []
    by_version: dict[str, list[_MigrationFile]] = {}
    for item in files:
        by_version.setdefault(item.version, []).append(item)
    for version, group in sorted(by_version.items()):
        slugs = sorted({item.slug for item in group})
        dialects = [item.dialect for item in group]
        paths = ", ".join(item.path for item in group)
        if len(slugs) > 1 or (None in dialects and len(group) > 1):
            findings.append(
                Finding(
                    rule="migration.duplicate",
                    file=group[0].path,
                    message=f"version {version} is used by more than one migration ({paths});"
                    " give each migration its own number",
                )
            )
            continue
        present = {d for d in dialects if d is not None}
        if present and present != set(DIALECTS):
            (missing,) = set(DIALECTS) - present
            (found,) = group
            base = f"{version}_{slugs[0]}"
            findings.append(
                Finding(
                    rule="migration.dialect",
                    file=found.path,
                    message=f"expected {base}.sqlite.sql together with {base}.postgresql.sql,"
                    f" or one portable {base}.sql, found only {found.file.name}; add"
                    f" {MIGRATIONS_FOLDER}/{base}.{missing}.sql, or rename this file to"
                    f" {MIGRATIONS_FOLDER}/{base}.sql if its SQL runs on both SQLite and"
                    " PostgreSQL",
                )
            )
    numbers = sorted(int(v) for v in by_version)
    expected = 1
    for number in numbers:
        if number != expected:
            first_missing = f"{expected:04d}"
            last_missing = f"{number - 1:04d}"
            span = first_missing if number - 1 == expected else f"{first_missing}-{last_missing}"
            findings.append(
                Finding(
                    rule="migration.gap",
                    file=by_version[f"{number:04d}"][0].path,
                    message=f"version {span} is missing before {number:04d};"
                    " versions must run from 0001 without gaps",
                )
            )
        expected = number + 1
    return findings


def _read_file(item: _MigrationFile) -> str:
    return normalize_text(item.file.read_bytes(), item.path)


# -- header marks ------------------------------------------------------------------------------

HEADER_MARKS = ("no-transaction", "rebuild-tables")
_COMMENT_WORDS = re.compile(r"^--\s*(?P<word>[A-Za-z][\w-]*)\s*(?P<colon>:?)\s*(?P<value>.*)$")
# Words at least this similar to `pipeline` or to a mark, by difflib's ratio,
# count as misspellings of them: `pipline` scores 0.93 and `pipe` 0.67.
_SIMILAR = 0.8


def header_problems(text: str, path: str) -> list[Finding]:
    """Check the leading comment block for header marks that do not take effect.

    A line that looks like a mark but is not `-- pipeline: no-transaction` or
    `-- pipeline: rebuild-tables` would leave the migration running in a
    transaction, or with its foreign keys on, without a word. Such lines are
    `-- pipeline: X` with another X, a word close to `pipeline` before a colon,
    and a mark name after another word and a colon, or alone.
    """
    findings = []
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        if _misspelled_mark(stripped):
            findings.append(
                Finding(
                    rule="migration.header",
                    file=path,
                    line=number,
                    message=f"expected '{NO_TRANSACTION_MARK}' or '{REBUILD_TABLES_MARK}',"
                    f" found {stripped!r}; correct the mark, or reword the comment if it is"
                    " no mark",
                )
            )
    return findings


def _misspelled_mark(line: str) -> bool:
    if _NO_TRANSACTION.match(line) or _REBUILD_TABLES.match(line):
        return False
    match = _COMMENT_WORDS.match(line)
    if match is None:
        return False
    word, colon, value = match["word"].lower(), bool(match["colon"]), match["value"]
    if word == "pipeline" or _similar(word, "pipeline"):
        return colon or _names_mark(value)
    if colon:
        return _names_mark(value)
    return not value.strip() and _close_to_mark(word)


def _names_mark(value: str) -> bool:
    """Tell whether the first word of `value` is a mark name or close to one."""
    words = value.split()
    return bool(words) and _close_to_mark(words[0].lower())


def _close_to_mark(word: str) -> bool:
    # The mark comes first, as in difflib.get_close_matches.
    return any(_similar(mark, word) for mark in HEADER_MARKS)


def _similar(word: str, other: str) -> bool:
    """Tell whether difflib's ratio of two words reaches `_SIMILAR`.

    The ratio is at most the shorter length over the mean length, so words of
    distant lengths are turned down without a matcher. The quick ratios are
    the next upper bounds, checked before the full comparison.
    """
    total = len(word) + len(other)
    if total == 0:
        return True
    if 2 * min(len(word), len(other)) < _SIMILAR * total:
        return False
    matcher = difflib.SequenceMatcher(None, word, other)
    return matcher.quick_ratio() >= _SIMILAR and matcher.ratio() >= _SIMILAR


def _content_findings(item: _MigrationFile) -> list[Finding]:
    """Check that a file is UTF-8, splits into statements and leaves foreign keys alone."""
    try:
        text = _read_file(item)
    except MigrationFileError as exc:
        return [Finding(rule="encoding", file=item.path, line=exc.line, message=exc.problem)]
    findings = header_problems(text, item.path)
    for dialect in (item.dialect,) if item.dialect else DIALECTS:
        try:
            statements = split_statements(text, dialect)
        except MigrationError as exc:
            findings.append(
                Finding(rule="migration.split", file=item.path, message=f"{dialect}: {exc}")
            )
            continue
        if not statements:
            findings.append(
                Finding(
                    rule="migration.empty",
                    file=item.path,
                    message="the migration contains no SQL statement",
                    severity="warning",
                )
            )
        transactional = is_transactional(text)
        for statement in statements:
            rejected = rejected_statement(statement, dialect)
            if rejected:
                pragma = statement.sql[:6].upper() == "PRAGMA"
                findings.append(
                    Finding(
                        rule="migration.pragma" if pragma else "migration.statement",
                        file=item.path,
                        line=statement.line,
                        message=rejected,
                    )
                )
            operation = concurrent_operation(statement)
            if transactional and operation:
                findings.append(
                    Finding(
                        rule="migration.concurrently",
                        file=item.path,
                        line=statement.line,
                        message=CONCURRENTLY_MESSAGE.format(operation=operation),
                    )
                )
        if findings:
            break
    return findings


def check_migrations(root: Path) -> list[Finding]:
    """Check migration files: names, numbering, dialect pairs, encoding, splitting and lint.

    Lint runs only when the files themselves are sound, because it needs every
    migration loaded in order.
    """
    # Imported here because migration_lint builds on this module.
    from pipeline.migration_lint import lint_repository

    files, findings = _list_files(root)
    findings.extend(_structure_findings(files))
    for item in files:
        findings.extend(_content_findings(item))
    if not errors_only(findings):
        findings.extend(lint_repository(root))
    return findings


def load_migrations(root: Path, dialect: str) -> list[Migration]:
    """Load the migrations that apply to `dialect`, ordered by version.

    For each version the dialect's own file is taken when there is one, the
    portable file otherwise.

    Raises:
        MigrationError: an unknown dialect, misnamed or misnumbered files, or a
            file that is not UTF-8.
    """
    if dialect not in DIALECTS:
        raise MigrationError(f"unknown dialect {dialect!r}: expected one of {', '.join(DIALECTS)}")
    files, findings = _list_files(root)
    problems = errors_only(findings + _structure_findings(files))
    if problems:
        raise MigrationError(
            f"{root / MIGRATIONS_FOLDER}: invalid migration files: "
            + "; ".join(str(f) for f in problems)
        )
    migrations: list[Migration] = []
    chosen: dict[str, _MigrationFile] = {}
    for item in files:
        if item.dialect in (None, dialect):
            chosen[item.version] = item
    for version in sorted(chosen):
        item = chosen[version]
        text = _read_file(item)
        problems = header_problems(text, item.path)
        if problems:
            raise MigrationError("; ".join(str(problem) for problem in problems))
        migrations.append(
            Migration(
                version=item.version,
                slug=item.slug,
                path=item.path,
                dialect=item.dialect,
                text=text,
                checksum=checksum_text(text),
                transactional=is_transactional(text),
            )
        )
    return migrations


def schema_version(root: Path) -> str | None:
    """Return the highest migration version in `root`, or None when there is none."""
    files, _ = _list_files(root)
    return max((item.version for item in files), default=None)
