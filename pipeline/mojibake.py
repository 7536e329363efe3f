"""Mojibake in Kazakh and Russian text: what was misread, and the text repaired.

Two misreadings are recognized. Each finding carries the whole text with
every misread part repaired, never a part of it.

1. UTF-8 bytes read as CP1251 ("РћРїР»Р°С‚Р°" for "Оплата", "в„–" for "№"),
   or as CP1252 or Latin-1 ("ÐžÐ¿Ð»Ð°Ñ‚Ð°"). These are found by spans, not
   by words, because a misread "№" or "—" often sits between correct words
   (`_utf8_spans`).
2. KZ-1048 bytes read as CP1251 ("Ќазаќстан" for "Қазақстан"). These are
   found by words, because the misread letters look like real Cyrillic
   letters and only the other letters of their word show the misreading
   (`_kz1048_words`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Literal

Severity = Literal["error", "warning"]

_CODEC_NAMES = {"kz1048": "KZ-1048", "utf-8": "UTF-8"}

# Characters a misread UTF-8 span may stand for: the basic Cyrillic letters,
# Ё and ё, the Kazakh and Ukrainian letters, and the punctuation of kk and ru
# texts, the no-break space included.
_PLAUSIBLE = frozenset(
    [chr(code) for code in range(0x0410, 0x0450)]
    + list("ЁёӘәҒғҚқҢңӨөҰұҮүҺһІіЄєЇїҐґ")
    + list("№—–«»“”’…\u00a0")
)


def _byte_map(codec: str) -> dict[str, int]:
    """Return the byte of each character that the single-byte `codec` decodes a byte to."""
    table = {}
    for byte in range(256):
        try:
            table[bytes([byte]).decode(codec)] = byte
        except UnicodeDecodeError:
            continue
    return table


_CP1251_BYTES = _byte_map("cp1251")
# A Latin-1 reader shows the bytes 0x80-0x9F as C1 controls. A web browser
# reads CP1252 the same way for the five bytes CP1252 leaves undefined, so
# one map serves both readings.
_WESTERN_BYTES = {chr(byte): byte for byte in range(256)} | _byte_map("cp1252")
_CP1252_CHARS = frozenset(_byte_map("cp1252"))


def _lead_pattern(byte_of: dict[str, int]) -> re.Pattern[str]:
    """Return a pattern of a UTF-8 lead byte and a continuation byte as `byte_of` shows them.

    A misread multi-byte character starts only where the pattern matches, so
    the check skips the rest of the text.
    """
    leads = "".join(char for char, byte in byte_of.items() if 0xC2 <= byte <= 0xF4)
    continuations = "".join(char for char, byte in byte_of.items() if 0x80 <= byte <= 0xBF)
    return re.compile(f"[{re.escape(leads)}][{re.escape(continuations)}]")


_READERS = (
    (_CP1251_BYTES, _lead_pattern(_CP1251_BYTES)),
    (_WESTERN_BYTES, _lead_pattern(_WESTERN_BYTES)),
)

# KZ-1048 and CP1251 differ in 16 bytes, all of them Kazakh letters in KZ-1048.
_KZ1048_REPAIR = {
    shown: written
    for byte in range(0x80, 0x100)
    if (shown := bytes([byte]).decode("cp1251", errors="ignore"))
    != (written := bytes([byte]).decode("kz1048", errors="ignore"))
}
# The CP1251 forms of KZ-1048 ә қ ң һ ұ (ј ќ ѕ ћ ў and capitals). No Russian,
# Ukrainian or Kazakh word has them, and only Belarusian has ў.
_STRONG_MARKERS = frozenset("јќѕћўЈЌЅЋЎ")
# The CP1251 forms of KZ-1048 ғ ү ө (є ї ґ and capitals), which are Ukrainian letters.
_WEAK_MARKERS = frozenset("єїґЄЇҐ")
_NOT_UKRAINIAN = frozenset("ыэъёЫЭЪЁ")
# Serbian and Macedonian letters that KZ-1048 has at the same bytes as CP1251.
# A text with one of them was not written as Kazakh ("Ђорђевић").
_NOT_KAZAKH = frozenset("ђљњџѓЂЉЊЏЃ")
_MARKER = re.compile("[" + "".join(sorted(_STRONG_MARKERS | _WEAK_MARKERS)) + "]")
_VOWELS = frozenset("аеєиіїоуюяыэё")
# Consonants that follow ґ in Ukrainian words and names ("ґрунт", "Ґданськ").
_AFTER_GHE = frozenset("рлвдж")

# Words are split at ASCII whitespace only: UTF-8 "Р" is the bytes 0xD0 0xA0,
# which CP1251 shows as "Р" and a no-break space.
_TOKEN = re.compile(r"[^ \t\n\r\f\v]+")
_WORD = re.compile(r"[^\W\d_]+")


@dataclasses.dataclass(frozen=True)
class Mojibake:
    """The words of a text that one misreading explains, and the text repaired.

    `written_as` is the codec the text was written in (`kz1048`, `utf-8`).
    `codec` is the Python codec it was read as (`cp1251`, `cp1252`,
    `latin-1`), or `windows-1252` for the browsers' reading of CP1252, which
    Python lacks. `expected` is the whole text with every misread part repaired.
    A `warning` is a guess: words that may be Ukrainian. `evidence` names
    the misread word elsewhere in the document that shows the misreading.
    """

    words: tuple[str, ...]
    written_as: str
    shown_as: str
    codec: str
    expected: str
    severity: Severity = "error"
    evidence: str | None = None

    def describe(self) -> str:
        """Return the finding's message: the words, the misreading and the repair."""
        words = ", ".join(repr(word) for word in self.words)
        misreading = f"{_CODEC_NAMES[self.written_as]} text read as {self.shown_as}"
        if self.codec == "windows-1252":
            repair = (
                "repair it by mapping each character to its CP1252 byte (a C1 control to"
                " its own code) and decoding the bytes as UTF-8"
            )
        else:
            repair = f"repair each word with s.encode('{self.codec}').decode('{self.written_as}')"
        if self.severity == "warning":
            return (
                f"possible mojibake: {words} may be {misreading}, because Ukrainian"
                f" spelling has no є, ї or ґ in such a place; if so, expected"
                f" {self.expected!r}; {repair}"
            )
        evidence = f", as {self.evidence} shows" if self.evidence else ""
        return f"mojibake: {words} is {misreading}{evidence}; expected {self.expected!r}; {repair}"


@dataclasses.dataclass(frozen=True)
class _Part:
    """A misread part of a text: its characters `start:end` stand for `repaired`."""

    start: int
    end: int
    repaired: str


def detect_mojibake(text: str, *, kz1048_elsewhere: str | None = None) -> list[Mojibake]:
    """Return the misreadings found in `text`: UTF-8 as CP1251, as CP1252, then KZ-1048.

    `kz1048_elsewhere` names a KZ-1048 misreading found in another value of
    the same document or file, such as "'Ќазаќстан' on line 3". With it, the
    words with є, ї and ґ are misread as well (see `_kz1048_words`).
    """
    found: list[tuple[Mojibake, list[_Part]]] = []
    covered: list[_Part] = []
    for byte_of, lead in _READERS:
        parts = _utf8_spans(text, byte_of, lead)
        if parts:
            shown_as, codec = _reader(text, parts, byte_of)
            words = _words_of(text, parts)
            found.append((Mojibake(words, "utf-8", shown_as, codec, ""), parts))
            covered += parts
    kz1048 = _kz1048_words(text, covered, kz1048_elsewhere)
    if kz1048 is not None:
        found.append(kz1048)
    expected = _apply(text, [part for _, parts in found for part in parts])
    return [dataclasses.replace(mojibake, expected=expected) for mojibake, _ in found]


def find_kz1048_evidence(texts: Iterable[tuple[str, str]]) -> str | None:
    """Return the first word misread beyond doubt as KZ-1048 among (text, place) pairs.

    The result names the word and its place, such as "'Ќазаќстан' on line
    14" for the place "on line 14". It is the `kz1048_elsewhere` of
    `detect_mojibake` for every text of the same document or file.
    """
    for text, place in texts:
        word = find_kz1048_word(text)
        if word is not None:
            return f"{word!r} {place}"
    return None


def find_kz1048_word(text: str) -> str | None:
    """Return the first word of `text` that is KZ-1048 mojibake beyond doubt, or None."""
    if not _MARKER.search(text) or set(text) & _NOT_KAZAKH:
        return None
    covered = [part for byte_of, lead in _READERS for part in _utf8_spans(text, byte_of, lead)]
    for match in _TOKEN.finditer(text):
        if not _overlaps(match, covered) and _is_kz1048_beyond_doubt(match.group()):
            return match.group()
    return None


def repair_kz1048_mojibake(text: str) -> str:
    """Return `text` with KZ-1048 bytes that were read as CP1251 decoded properly."""
    return text.encode("cp1251").decode("kz1048")


def _utf8_spans(text: str, byte_of: dict[str, int], lead: re.Pattern[str]) -> list[_Part]:
    """Return the parts of `text` that are UTF-8 bytes shown through the byte map `byte_of`.

    A candidate span is a run of characters whose bytes decode strictly as
    UTF-8 into multi-byte characters, one of them in `_PLAUSIBLE`. A span
    that touches a letter outside it is part of a real word ("Рё" of
    "Рёрих") and never counts. The remaining candidates count only when one
    of them is conclusive: it shows a character outside `_PLAUSIBLE` ("„" of "в„–" for №,
    "Ћ" of "РћРїР»Р°С‚Р°"), or two misread characters. A single misread
    character shown as text a kk or ru writer types, such as "В«" for « or
    "Р»" for л, is left alone, because "В«Законе»" and "«Группа Р»" are
    real text.
    """
    spans: list[list[_Part]] = []
    index = 0
    while (match := lead.search(text, index)) is not None:
        unit = _utf8_character(text, match.start(), byte_of)
        if unit is None:
            index = match.start() + 1
            continue
        if spans and spans[-1][-1].end == unit.start:
            spans[-1].append(unit)
        else:
            spans.append([unit])
        index = unit.end
    candidates = []
    conclusive = False
    for units in spans:
        start, end = units[0].start, units[-1].end
        if not any(unit.repaired in _PLAUSIBLE for unit in units):
            continue
        if (start > 0 and text[start - 1].isalpha()) or (end < len(text) and text[end].isalpha()):
            continue
        candidates.append(_Part(start, end, "".join(unit.repaired for unit in units)))
        conclusive = conclusive or len(units) > 1 or not set(text[start:end]) <= _PLAUSIBLE
    return candidates if conclusive else []


def _utf8_character(text: str, index: int, byte_of: dict[str, int]) -> _Part | None:
    """Return the multi-byte UTF-8 character whose bytes start at `text[index]`, or None."""
    lead = byte_of.get(text[index], 0)
    if 0xC2 <= lead <= 0xDF:
        size = 2
    elif 0xE0 <= lead <= 0xEF:
        size = 3
    elif 0xF0 <= lead <= 0xF4:
        size = 4
    else:
        return None
    chunk = text[index : index + size]
    data = bytes(byte_of.get(char, 0) for char in chunk)
    if len(chunk) < size or not all(0x80 <= byte <= 0xBF for byte in data[1:]):
        return None
    try:
        # A strict decode rejects overlong forms and surrogates as well.
        return _Part(index, index + size, data.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _reader(text: str, parts: list[_Part], byte_of: dict[str, int]) -> tuple[str, str]:
    """Return the name and codec of the reader that showed the UTF-8 `parts`."""
    if byte_of is _CP1251_BYTES:
        return "CP1251", "cp1251"
    characters = set("".join(text[part.start : part.end] for part in parts))
    if characters <= _CP1252_CHARS:
        return "CP1252", "cp1252"
    if all(ord(char) < 0x100 for char in characters):
        return "Latin-1", "latin-1"
    return "CP1252", "windows-1252"


def _kz1048_words(
    text: str, covered: list[_Part], elsewhere: str | None
) -> tuple[Mojibake, list[_Part]] | None:
    """Return the KZ-1048 misreading of `text` and its words, or None.

    A word with ј ќ ѕ ћ ў (or a capital) is misread, and so is a word with
    є ї ґ that also has ы э ъ ё, which Ukrainian lacks. Then every word of
    the text with є ї ґ is misread too, since KZ-1048 has no such letters:
    its bytes are ғ ү ө. The same holds when `elsewhere` names such a word in
    another value of the document or file. Otherwise є ї ґ are taken for
    Ukrainian ("Київ", "Сєров", "Ґданськ"), and only words whose є ї ґ
    stand where Ukrainian spelling never puts them give a warning
    (`_breaks_ukrainian_spelling`). Words in UTF-8 mojibake are left out, and
    so is a text with a Serbian or Macedonian letter that Kazakh lacks.

    NOTE: a Kazakh value whose only misread letters are ғ ү ө, in places
    Ukrainian also puts є ї ґ ("Їкімет їйі" for "Үкімет үйі"), is taken for
    Ukrainian unless its document or file has a word misread beyond doubt.
    A Belarusian word with ў and a Macedonian word with ќ are reported.
    """
    if not _MARKER.search(text) or set(text) & _NOT_KAZAKH:
        return None
    certain: list[re.Match[str]] = []
    doubtful: list[re.Match[str]] = []
    for match in _TOKEN.finditer(text):
        word = match.group()
        if _overlaps(match, covered) or not set(word) & (_STRONG_MARKERS | _WEAK_MARKERS):
            continue
        (certain if _is_kz1048_beyond_doubt(word) else doubtful).append(match)
    severity: Severity = "error"
    if certain or elsewhere:
        words = sorted(certain + doubtful, key=lambda m: m.start())
    else:
        words = [m for m in doubtful if _breaks_ukrainian_spelling(m.group())]
        severity = "warning"
    if not words:
        return None
    parts = [
        _Part(m.start(), m.end(), "".join(_KZ1048_REPAIR.get(c, c) for c in m.group()))
        for m in words
    ]
    mojibake = Mojibake(
        tuple(m.group() for m in words),
        "kz1048",
        "CP1251",
        "cp1251",
        "",
        severity=severity,
        evidence=None if certain else elsewhere,
    )
    return mojibake, parts


def _is_kz1048_beyond_doubt(word: str) -> bool:
    letters = set(word)
    return bool(letters & _STRONG_MARKERS) or bool(
        letters & _WEAK_MARKERS and letters & _NOT_UKRAINIAN
    )


def _breaks_ukrainian_spelling(word: str) -> bool:
    """Return whether `word` has an є, ї or ґ in a place where Ukrainian spelling has none.

    Ukrainian writes ї only at the start of a word or after a vowel, an
    apostrophe or ь ("Київ", "з'їзд", "Ільїн"). It writes є never before a
    vowel. It writes ґ never after a consonant, nor before one other than
    р л в д ж ("ґрунт", "Ґданськ", "Ґжицький"). The KZ-1048 ө and ү stand between
    consonants in most Kazakh words, so their CP1251 forms break these rules
    ("Тґлем" for "Төлем", "Тїркістан" for "Түркістан").
    """
    for run in _WORD.finditer(word):
        letters = run.group().lower()
        for index, letter in enumerate(letters):
            before = letters[index - 1] if index else ""
            after = letters[index + 1] if index + 1 < len(letters) else ""
            starts = index == 0
            if letter == "ї" and not (starts or before in _VOWELS or before == "ь"):
                return True
            if letter == "є" and after in _VOWELS:
                return True
            if letter == "ґ" and (
                (before and before not in _VOWELS)
                or (after and after not in _VOWELS and after not in _AFTER_GHE)
            ):
                return True
    return False


def _overlaps(match: re.Match[str], parts: list[_Part]) -> bool:
    return any(part.start < match.end() and match.start() < part.end for part in parts)


def _words_of(text: str, parts: list[_Part]) -> tuple[str, ...]:
    """Return each word of `text` that misread `parts` fall in, cut to those parts.

    Words are split at ASCII whitespace, so "В«РљРёС—РІ-РЎРµСЂРІС–СЃВ»" is one word
    although its hyphen splits it into two parts.
    """
    words = []
    for match in _TOKEN.finditer(text):
        inside = [p for p in parts if p.start < match.end() and match.start() < p.end]
        if inside:
            words.append(text[inside[0].start : inside[-1].end])
    return tuple(words)


def _apply(text: str, parts: list[_Part]) -> str:
    """Return `text` with each part replaced by its repair."""
    pieces = []
    position = 0
    for part in sorted(parts, key=lambda part: part.start):
        pieces.append(text[position : part.start])
        pieces.append(part.repaired)
        position = part.end
    pieces.append(text[position:])
    return "".join(pieces)
