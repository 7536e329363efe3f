"""Checks of Kazakh and Russian texts."""

# The cases mix Latin and Cyrillic look-alike letters on purpose.
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import pytest

from pipeline.findings import Finding
from pipeline.text import check_bilingual, check_pair, check_text, repair_kz1048_mojibake

FILE = "packages/fixes/example/fix.json"


def pair(kk: object, ru: object) -> list[Finding]:
    return check_pair(kk, ru, FILE, "$.title.kk", "$.title.ru")


def rules(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


def test_clean_pair_has_no_findings() -> None:
    kk = "Қазақстан Республикасы Қаржы министрлігінің «Бюджетті атқару» бұйрығы"
    ru = "Приказ Министерства финансов Республики Казахстан «Об исполнении бюджета»"
    assert pair(kk, ru) == []


def test_missing_kk_text() -> None:
    findings = pair(None, "Заголовок")
    assert rules(findings) == ["text.missing"]
    assert findings[0].json_path == "$.title.kk"
    assert findings[0].file == FILE
    assert "kk text is missing" in findings[0].message


def test_blank_ru_text() -> None:
    findings = pair("Тақырып", " \n ")
    assert rules(findings) == ["text.missing"]
    assert findings[0].json_path == "$.title.ru"
    assert "ru text is empty" in findings[0].message


def test_non_string_text() -> None:
    findings = pair("Тақырып", 12)
    assert rules(findings) == ["text.missing"]
    assert "expected a string, found int" in findings[0].message


def test_identical_texts_warn() -> None:
    findings = pair("КБК", "КБК ")
    assert rules(findings) == ["text.identical"]
    assert findings[0].severity == "warning"
    assert "'КБК'" in findings[0].message
    assert "$.title.ru" in findings[0].message


def test_identical_texts_without_letters_pass() -> None:
    assert pair("2026-12", "2026-12") == []


def test_control_character() -> None:
    findings = check_text("Төлем\x07 тапсырмасы", "kk", FILE, "$.title.kk")
    assert rules(findings) == ["text.control"]
    assert "U+0007" in findings[0].message
    assert "offset 5" in findings[0].message


@pytest.mark.parametrize("char", ["\u200b", "\ufeff", "\u202e", "\r", "\t"])
def test_invisible_characters_rejected(char: str) -> None:
    findings = check_text(f"Платёжное{char}поручение", "ru", FILE, "$.title.ru")
    assert rules(findings) == ["text.control"]
    assert f"U+{ord(char):04X}" in findings[0].message


def test_line_feed_allowed() -> None:
    assert check_text("Бірінші жол.\nЕкінші жол.", "kk", FILE, "$.description.kk") == []


def test_latin_i_in_kazakh_word() -> None:
    findings = check_text("Бюджеттiк бағдарлама", "kk", FILE, "$.title.kk")
    assert rules(findings) == ["text.mixed-script"]
    message = findings[0].message
    assert "Latin i in the Kazakh word 'Бюджеттiк'" in message
    assert "U+0456" in message
    assert "expected 'Бюджеттік'" in message


@pytest.mark.parametrize(
    ("text", "word", "repaired"),
    [
        ("Платёжное пoручение", "пoручение", "поручение"),  # Latin o
        ("Сумма пo КНП", "пo", "по"),
        ("Код бюджетнoй классификации", "бюджетнoй", "бюджетной"),
        ("Назначение плaтежa", "плaтежa", "платежа"),  # Latin a twice
        ("Организация", "", ""),
    ],
)
def test_latin_letter_in_russian_word(text: str, word: str, repaired: str) -> None:
    findings = check_text(text, "ru", FILE, "$.title.ru")
    if not word:
        assert findings == []
        return
    assert rules(findings) == ["text.mixed-script"]
    assert f"Cyrillic word {word!r}" in findings[0].message
    assert f"expected {repaired!r}" in findings[0].message


def test_cyrillic_letter_in_latin_word() -> None:
    findings = check_text("Система Pаrus", "ru", FILE, "$.title.ru")  # Cyrillic а
    assert rules(findings) == ["text.mixed-script"]
    assert "Cyrillic letter а in the Latin word 'Pаrus'" in findings[0].message
    assert "expected 'Parus'" in findings[0].message


def test_mixed_word_without_look_alike() -> None:
    findings = check_text("Пlатёж", "ru", FILE, "$.title.ru")
    assert rules(findings) == ["text.mixed-script"]
    assert "retype the word in one script" in findings[0].message


def test_kz1048_read_as_cp1251() -> None:
    findings = check_text("Ќазаќстан Республикасы", "kk", FILE, "$.title.kk")
    assert rules(findings) == ["text.mojibake"]
    message = findings[0].message
    assert "'Ќазаќстан' is KZ-1048 text read as CP1251" in message
    assert "expected 'Қазақстан Республикасы'" in message
    assert "s.encode('cp1251').decode('kz1048')" in message


def test_repair_kz1048_mojibake() -> None:
    text = "Қазынашылықтың үзінді-көшірмесі"
    assert repair_kz1048_mojibake(text.encode("kz1048").decode("cp1251")) == text


def test_utf8_read_as_cp1251() -> None:
    misread = "Платёжное поручение".encode().decode("cp1251")
    findings = check_text(misread, "ru", FILE, "$.title.ru")
    assert rules(findings) == ["text.mojibake"]
    message = findings[0].message
    assert (
        f"{misread.split()[0]!r}, {misread.split()[1]!r} is UTF-8 text read as CP1251" in message
    )
    assert "expected 'Платёжное поручение'" in message
    assert "s.encode('cp1251').decode('utf-8')" in message


def test_utf8_read_as_cp1252() -> None:
    misread = "Платёжное поручение".encode().decode("cp1252")
    findings = check_text(misread, "ru", FILE, "$.title.ru")
    assert rules(findings) == ["text.mojibake"]
    assert "expected 'Платёжное поручение'" in findings[0].message
    assert "read as CP1252" in findings[0].message
    assert "s.encode('cp1252').decode('utf-8')" in findings[0].message


def test_utf8_read_as_latin1() -> None:
    # Latin-1 turns the byte 0x81 of "с" into a C1 control character, which
    # CP1252 cannot encode, so only the second word needs Latin-1.
    misread = "Төлем тапсырмасы".encode().decode("latin-1")
    findings = check_text(misread, "kk", FILE, "$.title.kk")
    assert rules(findings) == ["text.control", "text.mojibake", "text.mojibake"]
    assert "read as CP1252" in findings[1].message
    assert "expected 'Төлем тапсырмасы'" in findings[1].message
    assert "read as Latin-1" in findings[2].message
    assert "expected 'Төлем тапсырмасы'" in findings[2].message
    assert "s.encode('latin-1').decode('utf-8')" in findings[2].message


def test_kazakh_words_not_taken_for_mojibake() -> None:
    # С followed by і is also how UTF-8 "ѳ" looks in CP1251, so the check
    # must confirm a repair before it reports one.
    assert check_text("Сіз СІЗ Сізге «Сәлем»", "kk", FILE, "$.title.kk") == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Приказ «Об утверждении правил", "1 « without a closing »"),
        ("Приказ Об утверждении» правил", "» without an opening «"),
        ("«Правила» и «формы»»", "» without an opening «"),
    ],
)
def test_unbalanced_quotes(text: str, problem: str) -> None:
    findings = check_text(text, "ru", FILE, "$.legal_basis.issuer.ru")
    assert rules(findings) == ["text.quotes"]
    assert problem in findings[0].message
    assert findings[0].json_path == "$.legal_basis.issuer.ru"


def test_nested_quotes_balanced() -> None:
    assert check_text("Приказ «О форме «Сводный отчёт»»", "ru", FILE, "$.title.ru") == []


def test_check_bilingual_paths() -> None:
    findings = check_bilingual({"ru": "Заголовок"}, FILE, "$.parameters[0].title")
    assert [f.json_path for f in findings] == ["$.parameters[0].title.kk"]


def test_check_bilingual_not_an_object() -> None:
    findings = check_bilingual("Заголовок", FILE, "$.title")
    assert rules(findings) == ["text.missing"]
    assert "found str" in findings[0].message
