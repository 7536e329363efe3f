"""Checks of the Kazakh (`kk`) and Russian (`ru`) texts of a definition.

Each check returns findings that name the file, the JSON path of the text and
the offending word or character:

1. both texts present and non-empty after stripping whitespace;
2. `kk` identical to `ru` (a warning, and only when the text has letters);
3. control characters and invisible formatting characters; a line feed is
   allowed only in a description, because a title, caption or column title
   is one line (a line feed in a title would start a new Markdown block in
   the release notes);
4. a word that mixes Latin and Cyrillic letters, such as a Latin `i` typed
   for the Kazakh `і`, or a Latin `o`, `c`, `a`, `e`, `p`, `x` inside a Cyrillic word,
   and a lowercase Latin letter of those standing as a word next to a
   Cyrillic word, such as the `c` of "(c НДС)";
5. mojibake: KZ-1048 bytes read as CP1251 ("Ќазаќстан" for "Қазақстан"), and
   UTF-8 bytes read as CP1251 ("РџР»Р°С‚РµР¶", "в„–"), CP1252 or Latin-1
   ("ÐŸÐ»Ð°Ñ‚"), with the whole text repaired (`pipeline.mojibake`); a word
   in Ukrainian spelling ("Київ", "Сєров") is not taken for KZ-1048 mojibake;
6. unbalanced «» quotes;
7. a kk text and its ru text with different placeholders (`{name}`, `{0}`,
   `{}`, `%s`, `%(name)s`), and, reported apart, the same placeholder with
   different format specs (`{amount:.2f}` beside `{amount}`);
8. an editor's placeholder left in the text (`TODO`, `FIXME`, `TBD`, `XXX`);
9. a text of two or more Latin words and no Cyrillic letter, such as an
   English title typed where the Kazakh or Russian one belongs;
10. marks of a lossy conversion: U+FFFD, `???`, or a `?` inside a word.

`check_catalog_texts` runs the same checks on a catalog's titles and on the
values of its kk and ru columns (`name_kk` beside `name_ru`, or beside `name`).

The checks run on every title and caption of every definition on each CI run,
so each one starts with a precompiled regular expression that rejects clean
text in one scan, and only suspicious words get the slower per-word work.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pipeline.catalog_model import load_description
from pipeline.catalogs import read_rows
from pipeline.errors import CatalogError, ValidationError
from pipeline.findings import Finding, errors_only
from pipeline.mojibake import detect_mojibake, find_kz1048_evidence
from pipeline.mojibake import repair_kz1048_mojibake as repair_kz1048_mojibake

Language = Literal["kk", "ru"]
LANGUAGES: tuple[Language, ...] = ("kk", "ru")

RUSSIAN_LETTERS = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
KAZAKH_ONLY_LETTERS = "әғқңөұүһі"
KAZAKH_LETTERS = RUSSIAN_LETTERS + KAZAKH_ONLY_LETTERS

_LETTER = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"[^\W\d_]+")
_LATIN = re.compile(r"[A-Za-z]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")

# C0 and C1 controls except the line feed, then the soft hyphen, zero-width
# characters, line and paragraph separators, bidirectional controls, word
# joiners and the byte order mark. All of them are invisible in a title.
_CONTROL = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)

# Latin letters that look like Cyrillic ones, and the reverse map.
_LATIN_TO_CYRILLIC = dict(zip("aceopxyiACEHKMOPTXBI", "асеорхуіАСЕНКМОРТХВІ", strict=True))
_CYRILLIC_TO_LATIN = {c: latin for latin, c in _LATIN_TO_CYRILLIC.items()}
# Lowercase Latin letters that look like a one-letter Cyrillic word (с, о, у,
# а, и) or are typed for one, such as "c" in "(c НДС)".
_LATIN_WORD_LETTERS = frozenset("aceopxyi")
# The same repair for Russian words, where a Latin i stands for и.
_LATIN_TO_RUSSIAN = {**_LATIN_TO_CYRILLIC, "i": "и", "I": "И"}

# Words are split at ASCII whitespace only, as for mojibake.
_TOKEN = re.compile(r"[^ \t\n\r\f\v]+")
# JSON paths of texts that may span lines: a description and its parts.
_MULTILINE_PATH = re.compile(r"\.description(?:[.\[]|$)")
_LINE_BREAK = re.compile("\n")
# `{name}`, `{0}`, `{}` with an optional conversion and format spec, such as
# `{amount:.2f}`; then printf-style `%s`, `%d`, `%(name)s` (but not `%%`).
# The space flag of printf is left out, so "10% of" is not read as `%o`.
_BRACE_PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*|\d*)(![rsa])?(?::([^{}]*))?\}")
_PERCENT_PLACEHOLDER = re.compile(
    r"(?<!%)%(?:\(([A-Za-z_][A-Za-z0-9_]*)\))?[-+#0]*\d*(?:\.\d+)?([sdifFeEgGxXoc])"
)
# Marks of a lossy conversion: the replacement character, a run of question
# marks, or a question mark inside a word (a letter the target code page lacked).
_LOSSY = re.compile(r"\ufffd|\?{3,}|(?<=[^\W\d_])\?(?=[^\W\d_])")

_EDITOR_PLACEHOLDER = re.compile(r"\b(TODO|FIXME|TBD|XXX)\b")
_LATIN_WORD = re.compile(r"\b[A-Za-z]{2,}\b")


def check_bilingual(value: object, file: str, json_path: str) -> list[Finding]:
    """Check a `{kk, ru}` object found at `json_path`; see `check_pair`."""
    if not isinstance(value, Mapping):
        return [
            Finding(
                rule="text.missing",
                file=file,
                json_path=json_path,
                message=f"expected an object with kk and ru texts, found {type(value).__name__}",
            )
        ]
    return check_pair(value.get("kk"), value.get("ru"), file, f"{json_path}.kk", f"{json_path}.ru")


def check_pair(
    kk: object,
    ru: object,
    file: str,
    kk_path: str,
    ru_path: str,
    *,
    kz1048_elsewhere: str | None = None,
) -> list[Finding]:
    """Check a Kazakh text and its Russian counterpart, each at its own JSON path.

    A missing text is None. Each text is checked alone (`check_text`, which
    also explains `kz1048_elsewhere`), then the two are compared.
    """
    findings: list[Finding] = []
    texts: dict[Language, tuple[object, str]] = {"kk": (kk, kk_path), "ru": (ru, ru_path)}
    for language, (text, path) in texts.items():
        findings.extend(_check_present(text, language, file, path))
        if isinstance(text, str) and text.strip():
            findings.extend(
                check_text(text, language, file, path, kz1048_elsewhere=kz1048_elsewhere)
            )
    if isinstance(kk, str) and isinstance(ru, str):
        findings.extend(_check_placeholders(kk, ru, file, kk_path, ru_path))
        same = kk.strip()
        if same and same == ru.strip() and _LETTER.search(same):
            findings.append(
                Finding(
                    rule="text.identical",
                    file=file,
                    json_path=kk_path,
                    severity="warning",
                    message=f"kk text is identical to the ru text at {ru_path}: {same!r};"
                    " expected a Kazakh translation",
                )
            )
    return findings


def _placeholders(text: str) -> tuple[Counter[str], dict[str, set[str]]]:
    """Return the placeholders of `text` by name, and the format specs used with each name.

    A positional `{}` is numbered in order, as str.format numbers it, so
    "{} {}" and "{0} {1}" have the same placeholders.
    """
    found: Counter[str] = Counter()
    specs: dict[str, set[str]] = {}
    automatic = 0
    for match in _BRACE_PLACEHOLDER.finditer(text):
        name = match.group(1)
        if name == "":
            name, automatic = str(automatic), automatic + 1
        key = "{" + name + "}"
        found[key] += 1
        specs.setdefault(key, set()).add((match.group(2) or "") + (match.group(3) or ""))
    for match in _PERCENT_PLACEHOLDER.finditer(text):
        name = match.group(1)
        key = f"%({name})" if name else "%" + match.group(2)
        found[key] += 1
        if name:
            specs.setdefault(key, set()).add(match.group(0))
    return found, specs


def _check_placeholders(kk: str, ru: str, file: str, kk_path: str, ru_path: str) -> list[Finding]:
    kk_found, kk_specs = _placeholders(kk)
    ru_found, ru_specs = _placeholders(ru)
    findings = []
    if kk_found != ru_found:
        missing = sorted((ru_found - kk_found).elements())
        extra = sorted((kk_found - ru_found).elements())
        parts = []
        if missing:
            parts.append(f"lacks {', '.join(missing)}")
        if extra:
            parts.append(f"has {', '.join(extra)} that the ru text lacks")
        findings.append(
            Finding(
                rule="text.placeholders",
                file=file,
                json_path=kk_path,
                message=f"kk text {' and '.join(parts)}; expected the same placeholders as the"
                f" ru text at {ru_path}",
            )
        )
    for key in sorted(set(kk_specs) & set(ru_specs)):
        if kk_specs[key] != ru_specs[key]:
            findings.append(
                Finding(
                    rule="text.placeholder-format",
                    file=file,
                    json_path=kk_path,
                    message=f"placeholder {key} is formatted as {sorted(kk_specs[key])} in the"
                    f" kk text and as {sorted(ru_specs[key])} in the ru text at {ru_path};"
                    " expected the same format spec in both",
                )
            )
    return findings


def _check_present(text: object, language: Language, file: str, path: str) -> list[Finding]:
    if text is None:
        message = f"{language} text is missing; expected a non-empty string"
    elif not isinstance(text, str):
        message = f"{language} text: expected a string, found {type(text).__name__}"
    elif not text.strip():
        message = f"{language} text is empty; expected a non-empty string, found {text!r}"
    else:
        return []
    return [Finding(rule="text.missing", file=file, json_path=path, message=message)]


def check_text(
    text: str,
    language: Language,
    file: str,
    json_path: str,
    *,
    kz1048_elsewhere: str | None = None,
) -> list[Finding]:
    """Check one text in `language` for control characters, mixed scripts, mojibake and quotes.

    `kz1048_elsewhere` names KZ-1048 mojibake in another text of the same
    file, which makes words with є, ї and ґ mojibake too (see
    `pipeline.mojibake.detect_mojibake`).
    """
    findings: list[Finding] = []
    findings.extend(_check_control(text, file, json_path))
    findings.extend(_check_newline(text, file, json_path))
    findings.extend(_check_lossy(text, file, json_path))
    findings.extend(_check_editor_placeholder(text, file, json_path))
    findings.extend(_check_script(text, language, file, json_path))
    mojibake = find_mojibake(text, file, json_path, kz1048_elsewhere=kz1048_elsewhere)
    findings.extend(mojibake)
    if errors_only(mojibake):
        # Stray quotes and mixed scripts in mojibake are artefacts of the
        # wrong decoding and go away with the repair.
        return findings
    findings.extend(_check_mixed_scripts(text, language, file, json_path))
    findings.extend(_check_quotes(text, file, json_path))
    return findings


def _check_editor_placeholder(text: str, file: str, json_path: str) -> list[Finding]:
    match = _EDITOR_PLACEHOLDER.search(text)
    if match is None:
        return []
    return [
        Finding(
            rule="text.placeholder",
            file=file,
            json_path=json_path,
            message=f"placeholder {match.group()!r} in {_excerpt(text, match.start())!r};"
            " expected the final text, which customers read in the release notes",
        )
    ]


def _check_script(text: str, language: Language, file: str, json_path: str) -> list[Finding]:
    if _CYRILLIC.search(text) or len(_LATIN_WORD.findall(text)) < 2:
        return []
    return [
        Finding(
            rule="text.script",
            file=file,
            json_path=json_path,
            message=f"{language} text {_excerpt(text, 0, 40)!r} has no Cyrillic letter;"
            f" expected the text in {'Kazakh' if language == 'kk' else 'Russian'}",
        )
    ]


def _check_control(text: str, file: str, json_path: str) -> list[Finding]:
    match = _CONTROL.search(text)
    if match is None:
        return []
    found = sorted({f"U+{ord(m.group()):04X}" for m in _CONTROL.finditer(text)})
    return [
        Finding(
            rule="text.control",
            file=file,
            json_path=json_path,
            message=f"control or invisible character {', '.join(found)} at offset {match.start()}"
            f" in {_excerpt(text, match.start())!r}; expected printable text only",
        )
    ]


def _check_newline(text: str, file: str, json_path: str) -> list[Finding]:
    if _MULTILINE_PATH.search(json_path):
        return []
    match = _LINE_BREAK.search(text)
    if match is None:
        return []
    return [
        Finding(
            rule="text.newline",
            file=file,
            json_path=json_path,
            message=f"line break at offset {match.start()} in {_excerpt(text, match.start())!r};"
            " expected a title, caption or column title on one line (only a description may"
            " span lines)",
        )
    ]


def _check_lossy(text: str, file: str, json_path: str) -> list[Finding]:
    match = _LOSSY.search(text)
    if match is None:
        return []
    mark = "U+FFFD" if match.group() == "\ufffd" else repr(match.group())
    return [
        Finding(
            rule="text.lossy",
            file=file,
            json_path=json_path,
            message=f"{mark} at offset {match.start()} in {_excerpt(text, match.start())!r}"
            " marks letters lost in a conversion to a code page that lacks them; retype the"
            " text from its source",
        )
    ]


def _check_mixed_scripts(
    text: str, language: Language, file: str, json_path: str
) -> list[Finding]:
    if not (_LATIN.search(text) and _CYRILLIC.search(text)):
        return []
    findings = _check_latin_letter_words(text, language, file, json_path)
    for match in _WORD.finditer(text):
        word = match.group()
        if not (_LATIN.search(word) and _CYRILLIC.search(word)):
            continue
        findings.append(
            Finding(
                rule="text.mixed-script",
                file=file,
                json_path=json_path,
                message=_describe_mixed_word(word, language),
            )
        )
    return findings


def _check_latin_letter_words(
    text: str, language: Language, file: str, json_path: str
) -> list[Finding]:
    """Find a lowercase Latin letter standing as a word next to a Cyrillic word, as in "(c НДС)".

    Only lowercase letters with a Cyrillic look-alike count, because an
    uppercase one is usually a label such as "Приложение A".
    """
    tokens = list(_TOKEN.finditer(text))
    findings = []
    for position, token in enumerate(tokens):
        letters = _LETTER.findall(token.group())
        if len(letters) != 1 or letters[0] not in _LATIN_WORD_LETTERS:
            continue
        neighbours = tokens[max(position - 1, 0) : position] + tokens[position + 1 : position + 2]
        if not any(_CYRILLIC.search(n.group()) for n in neighbours):
            continue
        letter = letters[0]
        if letter == "i" and language == "kk":
            expected = "the Kazakh 'і'"
        elif letter == "i":
            expected = "the Cyrillic 'и'"
        else:
            expected = f"the Cyrillic {_LATIN_TO_CYRILLIC[letter]!r}"
        findings.append(
            Finding(
                rule="text.mixed-script",
                file=file,
                json_path=json_path,
                message=f"Latin letter {letter!r} used as a word in"
                f" {_excerpt(text, token.start(), 40)!r}; expected {expected}",
            )
        )
    return findings


def _describe_mixed_word(word: str, language: Language) -> str:
    latin = [c for c in word if "a" <= c.lower() <= "z"]
    cyrillic = len(word) - len(latin)
    if cyrillic >= len(latin):
        letters = ", ".join(dict.fromkeys(latin))
        repaired = "".join(_LATIN_TO_CYRILLIC.get(c, c) for c in word)
        if language == "kk" and set(latin) <= {"i", "I"}:
            problem = f"Latin i in the Kazakh word {word!r}, where Kazakh uses і (U+0456)"
        elif language == "ru" and set(latin) & {"i", "I"}:
            # Russian has no і, so the look-alike repair would make a Kazakh
            # word. A Latin i in Russian is most often a mistyped и.
            guess = "".join(_LATIN_TO_RUSSIAN.get(c, c) for c in word)
            return (
                f"Latin letter {letters} in the Russian word {word!r}; Russian has no і,"
                f" so the word is mistyped: retype it, probably as {guess!r}"
            )
        else:
            problem = f"Latin letter {letters} in the Cyrillic word {word!r}"
    else:
        letters = ", ".join(dict.fromkeys(c for c in word if _CYRILLIC.match(c)))
        repaired = "".join(_CYRILLIC_TO_LATIN.get(c, c) for c in word)
        problem = f"Cyrillic letter {letters} in the Latin word {word!r}"
    if _LATIN.search(repaired) and _CYRILLIC.search(repaired):
        return f"{problem}; retype the word in one script"
    return f"{problem}; expected {repaired!r}"


def find_mojibake(
    text: str, file: str, json_path: str, *, kz1048_elsewhere: str | None = None
) -> list[Finding]:
    """Return a `text.mojibake` finding per misreading found in `text`, with the repair.

    A misreading that is only a guess (Kazakh words that may be Ukrainian) is a warning.
    """
    return [
        Finding(
            rule="text.mojibake",
            file=file,
            json_path=json_path,
            message=found.describe(),
            severity=found.severity,
        )
        for found in detect_mojibake(text, kz1048_elsewhere=kz1048_elsewhere)
    ]


def _check_quotes(text: str, file: str, json_path: str) -> list[Finding]:
    if "«" not in text and "»" not in text:
        return []
    depth = 0
    for index, char in enumerate(text):
        if char == "«":
            depth += 1
        elif char == "»":
            depth -= 1
            if depth < 0:
                return [_unbalanced(file, json_path, text, index, "» without an opening «")]
    if depth > 0:
        index = text.rindex("«")
        return [_unbalanced(file, json_path, text, index, f"{depth} « without a closing »")]
    return []


def _unbalanced(file: str, json_path: str, text: str, index: int, problem: str) -> Finding:
    return Finding(
        rule="text.quotes",
        file=file,
        json_path=json_path,
        message=f"unbalanced quotes: {problem} at offset {index} in {_excerpt(text, index)!r}",
    )


def _excerpt(text: str, index: int, width: int = 20) -> str:
    start = max(0, index - width)
    return text[start : index + width]


def check_catalog_texts(root: Path, catalog_id: str) -> list[Finding]:
    """Check a catalog's kk and ru titles and the values of its kk and ru columns.

    A column `X_kk` pairs with `X_ru`, or with `X` when there is no `X_ru`
    (the Russian name is then the plain column). Row findings carry the line of
    `rows.csv` and name the column.
    """
    description_file = f"catalogs/{catalog_id}/catalog.json"
    try:
        description = load_description(root, catalog_id)
    except (CatalogError, ValidationError):
        # check_catalog reports an unreadable description.
        return []
    findings = check_pair(
        description.title.kk, description.title.ru, description_file, "$.title.kk", "$.title.ru"
    )
    findings += check_pair(
        description.description.kk,
        description.description.ru,
        description_file,
        "$.description.kk",
        "$.description.ru",
    )
    names = description.column_names
    for index, column in enumerate(description.columns):
        findings += check_pair(
            column.title.kk,
            column.title.ru,
            description_file,
            f"$.columns[{index}].title.kk",
            f"$.columns[{index}].title.ru",
        )
    pairs = []
    for name in names:
        if not name.endswith("_kk"):
            continue
        base = name.removesuffix("_kk")
        partner = base + "_ru" if base + "_ru" in names else base
        if partner in names:
            pairs.append((name, partner))
    if not pairs:
        return findings
    try:
        return findings + _check_catalog_rows(root, catalog_id, pairs)
    except CatalogError:
        # check_catalog reports an unreadable rows file.
        return findings


def _check_catalog_rows(
    root: Path, catalog_id: str, pairs: list[tuple[str, str]]
) -> list[Finding]:
    """Check the kk and ru columns `pairs` of each row; see `check_catalog_texts`.

    Raises:
        CatalogError: rows.csv cannot be read.
    """
    rows_file = f"catalogs/{catalog_id}/rows.csv"
    # Line 1 is the header, so the first row is on line 2.
    # NOTE: a quoted value with a line break shifts the lines of later rows.
    # A KZ-1048 word misread beyond doubt in one row makes the doubtful words
    # of every row mojibake too, so the rows are read twice.
    evidence = find_kz1048_evidence(
        (row[name], f"on line {line} (column {name})")
        for line, row in enumerate(read_rows(root, catalog_id), start=2)
        for pair in pairs
        for name in pair
        if row.get(name)
    )
    findings = []
    for line, row in enumerate(read_rows(root, catalog_id), start=2):
        for kk_name, ru_name in pairs:
            for finding in check_pair(
                row.get(kk_name) or None,
                row.get(ru_name) or None,
                rows_file,
                kk_name,
                ru_name,
                kz1048_elsewhere=evidence,
            ):
                findings.append(
                    dataclasses.replace(
                        finding,
                        line=line,
                        json_path=None,
                        message=f"column {finding.json_path}: {finding.message}",
                    )
                )
    return findings
