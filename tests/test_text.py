"""Checks of Kazakh and Russian texts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest

from pipeline.findings import Finding, errors_only
from pipeline.text import (
    check_bilingual,
    check_catalog_texts,
    check_pair,
    check_text,
    detect_mojibake,
    find_mojibake,
    repair_kz1048_mojibake,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

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
    # CP1252 cannot encode, so the text is named as read in Latin-1.
    misread = "Төлем тапсырмасы".encode().decode("latin-1")
    findings = check_text(misread, "kk", FILE, "$.title.kk")
    assert rules(findings) == ["text.control", "text.mojibake"]
    assert "read as Latin-1" in findings[1].message
    assert "expected 'Төлем тапсырмасы'" in findings[1].message
    assert "s.encode('latin-1').decode('utf-8')" in findings[1].message


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


def test_placeholders_must_match() -> None:
    findings = pair("{period} кезеңіне есеп", "Отчёт за {period}, {organization}")
    assert rules(findings) == ["text.placeholders"]
    assert findings[0].json_path == "$.title.kk"
    assert "lacks {organization}" in findings[0].message
    assert "$.title.ru" in findings[0].message


def test_extra_kk_placeholder() -> None:
    findings = pair("{date} күнгі {period} есебі", "Отчёт за {period}")
    assert rules(findings) == ["text.placeholders"]
    assert "has {date} that the ru text lacks" in findings[0].message


def test_same_placeholders_pass() -> None:
    assert pair("{period} кезеңіне есеп", "Отчёт за {period}") == []


def test_positional_placeholders_compared() -> None:
    findings = pair("{0} бойынша есеп", "Отчёт по {0} за {1}")
    assert rules(findings) == ["text.placeholders"]
    assert "lacks {1}" in findings[0].message
    assert pair("{} бойынша {} есеп", "Отчёт по {0} за {1}") == []


def test_percent_placeholders_compared() -> None:
    findings = pair("%s бойынша есеп", "Отчёт по %s за %d")
    assert rules(findings) == ["text.placeholders"]
    assert "lacks %d" in findings[0].message
    assert pair("Сома %(amount)s, 10% артық", "Сумма %(amount)s, на 10% больше") == []


def test_format_spec_compared_separately() -> None:
    findings = pair("Сома: {amount:.2f}", "Сумма: {amount}")
    assert rules(findings) == ["text.placeholder-format"]
    assert "placeholder {amount} is formatted as ['.2f'] in the kk text" in findings[0].message
    assert "as [''] in the ru text at $.title.ru" in findings[0].message
    assert pair("Сома: {amount:.2f}", "Сумма: {amount:.2f}") == []


@pytest.mark.parametrize(
    ("text", "mark"),
    [
        ("Отчёт \ufffd по КНП", "U+FFFD at offset 6"),
        ("Отчёт ??? по КНП", "'???' at offset 6"),
        ("Ќаза?стан", "'?' at offset 4"),
    ],
)
def test_lossy_conversion_marks(text: str, mark: str) -> None:
    findings = check_text(text, "ru", FILE, "$.title.ru")
    lossy = [f for f in findings if f.rule == "text.lossy"]
    assert len(lossy) == 1
    assert lossy[0].message.startswith(mark)
    assert "retype the text from its source" in lossy[0].message


def test_question_at_sentence_end_passes() -> None:
    assert check_text("Отчёт готов?", "ru", FILE, "$.title.ru") == []


def test_latin_i_in_russian_word() -> None:
    findings = check_text("Прiказ министра", "ru", FILE, "$.title.ru")
    assert rules(findings) == ["text.mixed-script"]
    message = findings[0].message
    assert "Latin letter i in the Russian word 'Прiказ'; Russian has no і" in message
    assert "probably as 'Приказ'" in message
    assert "і (U+0456)" not in message


# -- catalogs ----------------------------------------------------------------------------------

CATALOG_DESCRIPTION = {
    "id": "knp",
    "title": {"kk": "Төлем мақсатының кодтары", "ru": "Коды назначения платежа"},
    "description": {
        "kk": "Төлем мақсатының кодтары анықтамалығы",
        "ru": "Справочник кодов назначения платежа",
    },
    "key": ["code"],
    "columns": [
        {
            "name": "code",
            "type": "text",
            "title": {"kk": "Коды", "ru": "Код"},
            "required": True,
            "pattern": "^[0-9]{3}$",
        },
        {"name": "name_kk", "type": "text", "title": {"kk": "Атауы (kk)", "ru": "Название (kk)"}},
        {"name": "name_ru", "type": "text", "title": {"kk": "Атауы (ru)", "ru": "Название (ru)"}},
    ],
    "source": {
        "name": "Национальный Банк Республики Казахстан",
        "document": "Правила применения кодов назначения платежей",
        "date": "2026-11-01",
    },
    "effective_date": "2026-12-01",
}


def write_catalog(root: Path, description: dict[str, Any], rows: str) -> None:
    folder = root / "catalogs" / "knp"
    folder.mkdir(parents=True)
    text = json.dumps(description, ensure_ascii=False, indent=2)
    (folder / "catalog.json").write_text(text, encoding="utf-8")
    (folder / "rows.csv").write_text(rows, encoding="utf-8")


def test_catalog_title_linted(tmp_path: Path) -> None:
    description = json.loads(json.dumps(CATALOG_DESCRIPTION))
    description["title"]["kk"] = "Тoлем кодтары"  # Latin o
    write_catalog(tmp_path, description, "code,name_kk,name_ru\n010,Зейнетақы,Пенсия\n")
    findings = check_catalog_texts(tmp_path, "knp")
    assert rules(findings) == ["text.mixed-script"]
    assert findings[0].file == "catalogs/knp/catalog.json"
    assert findings[0].json_path == "$.title.kk"
    assert "'Тoлем'" in findings[0].message


def test_catalog_rows_linted(tmp_path: Path) -> None:
    rows = (
        "code,name_kk,name_ru\n"
        "010,Мiндетті жарналар,Обязательные взносы\n"
        "012,,Социальные отчисления\n"
        "017,Ќазаќстан,Казахстан\n"
    )
    write_catalog(tmp_path, CATALOG_DESCRIPTION, rows)
    findings = check_catalog_texts(tmp_path, "knp")
    assert rules(findings) == ["text.mixed-script", "text.missing", "text.mojibake"]
    assert [f.line for f in findings] == [2, 3, 4]
    assert all(f.file == "catalogs/knp/rows.csv" for f in findings)
    assert findings[0].message.startswith("column name_kk: Latin i in the Kazakh word 'Мiндетті'")
    assert findings[1].message.startswith("column name_kk: kk text is missing")
    assert "'Қазақстан'" in findings[2].message


def test_catalog_rows_kz1048_evidence_elsewhere(tmp_path: Path) -> None:
    # Row 3 settles that rows.csv was KZ-1048 read as CP1251, so row 2 is misread too.
    rows = "code,name_kk,name_ru\n010,Їкімет їйі,Дом правительства\n017,Ќазаќстан,Казахстан\n"
    write_catalog(tmp_path, CATALOG_DESCRIPTION, rows)
    findings = check_catalog_texts(tmp_path, "knp")
    assert [(f.rule, f.line, f.severity) for f in findings] == [
        ("text.mojibake", 2, "error"),
        ("text.mojibake", 3, "error"),
    ]
    assert findings[0].message.startswith(
        "column name_kk: mojibake: 'Їкімет', 'їйі' is KZ-1048 text read as CP1251, as"
        " 'Ќазаќстан' on line 3 (column name_kk) shows; expected 'Үкімет үйі';"
    )


def test_catalog_kk_column_beside_plain_name(tmp_path: Path) -> None:
    description = json.loads(json.dumps(CATALOG_DESCRIPTION))
    description["columns"][2]["name"] = "name"
    write_catalog(tmp_path, description, "code,name_kk,name\n010,Пенсия «взносы,Пенсия\n")
    findings = check_catalog_texts(tmp_path, "knp")
    assert rules(findings) == ["text.quotes"]
    assert findings[0].line == 2


def test_demo_catalogs_have_no_text_errors() -> None:
    for catalog_id in ("kato", "kbe", "knp"):
        findings = check_catalog_texts(REPO_ROOT, catalog_id)
        assert errors_only(findings) == [], catalog_id


def test_editor_placeholder_is_an_error() -> None:
    findings = check_text("TODO: replace with the ru title", "ru", "catalog.json", "$.title.ru")
    placeholder = [f for f in findings if f.rule == "text.placeholder"]
    assert len(placeholder) == 1
    assert "'TODO'" in placeholder[0].message
    assert placeholder[0].json_path == "$.title.ru"


def test_english_title_in_ru_is_an_error() -> None:
    findings = check_text("Fixed rounding", "ru", "fix.json", "$.title.ru")
    assert [f.rule for f in findings] == ["text.script"]
    assert "expected the text in Russian" in findings[0].message
    assert "'Fixed rounding'" in findings[0].message


def test_single_latin_code_in_title_is_accepted() -> None:
    assert check_text("MT940", "kk", "format.json", "$.title.kk") == []
    assert check_text("Импорт MT940", "ru", "format.json", "$.title.ru") == []


def test_line_feed_in_title_rejected() -> None:
    findings = pair("Есеп\n# Тақырып", "Отчёт")
    assert rules(findings) == ["text.newline"]
    assert findings[0].json_path == "$.title.kk"
    assert "line break at offset 4 in 'Есеп\\n# Тақырып'" in findings[0].message


@pytest.mark.parametrize(
    "path", ["$.layout.columns[0].title.ru", "$.parameters[1].caption.ru", "$.captions.ru.sum"]
)
def test_line_feed_in_caption_rejected(path: str) -> None:
    assert rules(check_text("Сумма\nитого", "ru", FILE, path)) == ["text.newline"]


def test_line_feed_in_description_allowed() -> None:
    assert check_text("Первая строка.\nВторая строка.", "ru", FILE, "$.description.ru") == []


# Real words and their language. Each must pass the lint as it is, and each
# misreading of it must give one mojibake finding that repairs it.
REAL_WORDS = [
    ("Оплата", "ru"),
    ("Отчёт", "ru"),
    ("ОТЧЁТ", "ru"),
    ("Организация", "ru"),
    ("Сумма", "ru"),
    ("Республика", "ru"),
    ("Платёжное", "ru"),
    ("Казначейство", "ru"),
    ("Получатель", "ru"),
    ("Назначение", "ru"),
    ("Төлем", "kk"),
    ("Қазақстан", "kk"),
    ("Қазынашылық", "kk"),
    ("Әкімдік", "kk"),
    ("Ұйым", "kk"),
    ("Өнім", "kk"),
    ("мөлшері", "kk"),
    ("бүгін", "kk"),
    ("Түбіртек", "kk"),
    ("Ғылым", "kk"),
    ("көшірме", "kk"),
    ("жоғары", "kk"),
    ("Үкіметінің", "kk"),
    ("әкімінің", "kk"),
    ("Халық", "kk"),
    ("Жалақы", "kk"),
    ("Есеп", "kk"),
]


@pytest.mark.parametrize(("word", "language"), REAL_WORDS)
def test_real_word_passes(word: str, language: Literal["kk", "ru"]) -> None:
    assert check_text(word, language, FILE, f"$.title.{language}") == []
    assert check_text(f"{word} {word.lower()}", language, FILE, f"$.title.{language}") == []


# CP1251 has no character for the byte 0x98, the second UTF-8 byte of И and Ә,
# so a reader cannot show a word with those letters in CP1251 at all.
UTF8_MISREADABLE = [(word, language) for word, language in REAL_WORDS if not set(word) & set("ИӘ")]


@pytest.mark.parametrize(("word", "language"), UTF8_MISREADABLE)
def test_utf8_misreading_of_real_word(word: str, language: Literal["kk", "ru"]) -> None:
    misread = word.encode("utf-8").decode("cp1251")
    findings = check_text(misread, language, FILE, f"$.title.{language}")
    assert rules(findings) == ["text.mojibake"]
    assert f"{misread!r} is UTF-8 text read as CP1251; expected {word!r};" in findings[0].message


KAZAKH_WORDS = [word for word, language in REAL_WORDS if language == "kk" and word != "Есеп"]


@pytest.mark.parametrize("word", KAZAKH_WORDS)
def test_kz1048_misreading_of_real_word(word: str) -> None:
    misread = word.encode("kz1048").decode("cp1251")
    assert misread != word
    findings = check_text(misread, "kk", FILE, "$.title.kk")
    assert rules(findings) == ["text.mojibake"]
    letters = set(word.lower())
    # CP1251 shows ә қ ң ұ һ as letters no Ukrainian word has, and ғ ү ө as є ї ґ,
    # which are mojibake beyond doubt only beside ы э ъ ё.
    if letters & set("әқңұһ") or letters & set("ыэъё"):
        assert findings[0].severity == "error"
        assert f"{misread!r} is KZ-1048 text read as CP1251; expected {word!r};" in (
            findings[0].message
        )
    else:
        assert findings[0].severity == "warning"
        assert f"{misread!r} may be KZ-1048 text read as CP1251" in findings[0].message
        assert f"expected {word!r};" in findings[0].message


@pytest.mark.parametrize(
    "text",
    [
        "ТОВ «Київ-Сервіс»",
        "Україна",
        "Євразія",
        "з'їзд",
        "Ґрунт",
        "її",
        "своє синє",
        "ВІДДІЛЕННЯ «ЄВРОПА»",
    ],
)
def test_ukrainian_spelling_not_mojibake(text: str) -> None:
    assert find_mojibake(text, FILE, "$.title.ru") == []


def test_utf8_and_kz1048_misreadings_in_one_text() -> None:
    text = "Ќазаќстан " + "Оплата".encode().decode("cp1251")
    findings = find_mojibake(text, FILE, "$.title.kk")
    assert rules(findings) == ["text.mojibake", "text.mojibake"]
    assert "'РћРїР»Р°С‚Р°' is UTF-8 text read as CP1251" in findings[0].message
    assert "'Ќазаќстан' is KZ-1048 text read as CP1251" in findings[1].message
    for finding in findings:
        assert "expected 'Қазақстан Оплата'" in finding.message


@pytest.mark.parametrize(
    ("text", "language", "message"),
    [
        (
            "Количество документов (c НДС)",
            "ru",
            "Latin letter 'c' used as a word in 'Количество документов (c НДС)'; expected the"
            " Cyrillic 'с'",
        ),
        ("Есеп i", "kk", "Latin letter 'i' used as a word in 'Есеп i'; expected the Kazakh 'і'"),
        (
            "Отчёт i анализ",
            "ru",
            "Latin letter 'i' used as a word in 'Отчёт i анализ'; expected the Cyrillic 'и'",
        ),
        (
            "o платежах",
            "ru",
            "Latin letter 'o' used as a word in 'o платежах'; expected the Cyrillic 'о'",
        ),
    ],
)
def test_latin_letter_as_word(text: str, language: Literal["kk", "ru"], message: str) -> None:
    findings = check_text(text, language, FILE, f"$.title.{language}")
    assert rules(findings) == ["text.mixed-script"]
    assert findings[0].json_path == f"$.title.{language}"
    assert findings[0].message == message


@pytest.mark.parametrize(
    "text",
    ["Приложение A", "Размер 3 x 4", "Импорт MT940 и MT942", "Группа B", "с НДС", "Есеп і"],
)
def test_latin_letter_label_passes(text: str) -> None:
    assert check_text(text, "ru", FILE, "$.title.ru") == []


def misread_utf8(text: str, reader: str = "cp1251") -> str:
    """Return `text` encoded in UTF-8 and decoded as `reader` would show it.

    `windows-1252` is the web browsers' reading of CP1252, which shows the
    five bytes CP1252 leaves undefined as C1 controls.
    """
    data = text.encode("utf-8")
    if reader != "windows-1252":
        return data.decode(reader)
    return "".join(bytes([byte]).decode("cp1252", errors="ignore") or chr(byte) for byte in data)


# Values with punctuation, Ukrainian names and Kazakh letters, and none of И
# and Ә, whose second UTF-8 byte 0x98 CP1251 cannot show. Each one misread as
# CP1251 must repair to the whole value, with its №, dashes and quotes.
UTF8_VALUES = [
    "Оплата по договору № 6292 от 24.05.2026",
    "Сумма — 100",
    "ТОВ «Київ-Сервіс»",
    "Оплата ТОВ «Київ-Сервіс» за договором № 5",
    "Платёж за период 01.12.2026 – 31.12.2026",
    "Ответ: «Да» … “нет” и ’",
    "Счёт № 41\u00a0от 1 декабря",
    "ФОП Ільїн Олег",
    "Бюджеттік бағдарлама үшін",
    "Қазақстан Республикасы «Ұлттық банкі»",
    "Үкімет үйі",
    "№",
    "—",
]


@pytest.mark.parametrize("value", UTF8_VALUES)
def test_utf8_misreading_repairs_whole_value(value: str) -> None:
    assert detect_mojibake(value) == []
    misread = misread_utf8(value)
    found = detect_mojibake(misread)
    assert [(m.written_as, m.shown_as) for m in found] == [("utf-8", "CP1251")]
    assert found[0].expected == value
    assert found[0].severity == "error"


@pytest.mark.parametrize("value", UTF8_VALUES)
def test_utf8_misreading_in_browser_cp1252(value: str) -> None:
    found = detect_mojibake(misread_utf8(value, "windows-1252"))
    assert [(m.written_as, m.shown_as) for m in found] == [("utf-8", "CP1252")]
    assert found[0].expected == value


@pytest.mark.parametrize(
    ("text", "language", "word", "expected"),
    [
        ("Форма в„– 2", "ru", "в„–", "Форма № 2"),
        ("Сумма вЂ” тенге", "ru", "вЂ”", "Сумма — тенге"),
        ("Есеп в„– 5", "kk", "в„–", "Есеп № 5"),
        ("ТОВ В«РљРёС—РІ-РЎРµСЂРІС–СЃВ»", "ru", "В«РљРёС—РІ-РЎРµСЂРІС–СЃВ»", "ТОВ «Київ-Сервіс»"),
        ("Период 2026 вЂ“ 2027", "ru", "вЂ“", "Период 2026 – 2027"),
    ],
)
def test_utf8_misreading_in_part_of_value(
    text: str, language: Literal["kk", "ru"], word: str, expected: str
) -> None:
    findings = check_text(text, language, FILE, f"$.title.{language}")
    assert rules(findings) == ["text.mojibake"]
    assert f"{word!r} is UTF-8 text read as CP1251; expected {expected!r};" in findings[0].message


@pytest.mark.parametrize(
    "text",
    [
        "ВСЁ",
        "ВСЁ ГОТОВО",
        "ОТЧЁТ ЗА ВСЁ ВРЕМЯ",
        "Рёрих",
        "В\u00a02026 году",
        "«Группа Р»",
        "Р«Проект»",
        "Рєпін",
        "Подъём",
        "№ 5 — «Ромашка»",
        "Сіз СІЗ Сізге «Сәлем»",
        "Сєвєродонецьк",
    ],
)
def test_utf8_like_text_not_mojibake(text: str) -> None:
    assert detect_mojibake(text) == []


# Correct Ukrainian spellings: є after a consonant, ї after ь, ґ before a
# consonant. None of them is KZ-1048 mojibake on its own.
UKRAINIAN_TEXTS = [
    "Ільїн",
    "Ільїч",
    "Ільїнська",
    "Сєров",
    "Пєсков",
    "Пєтухов",
    "Бєлгород",
    "Сєвєродонецьк",
    "Мєдвєдєв",
    "Ільєнко",
    "Свєта",
    "Ґжицький",
    "Ґданськ",
    "Київ",
    "Гаєвський",
    "Прокоф'єв",
    "Їжакевич",
    "Ґалаґан",
    "Дзиґа",
    "ФОП Ільїн Олег",
    "ТОВ «Сєвєродонецьк-Агро»",
]


@pytest.mark.parametrize("text", UKRAINIAN_TEXTS)
def test_ukrainian_text_not_mojibake(text: str) -> None:
    assert detect_mojibake(text) == []
    assert check_text(text, "ru", FILE, "$.title.ru") == []


# Kazakh values in KZ-1048 read as CP1251. Each has a letter whose CP1251
# form is never Ukrainian (қ ң ә ұ һ), so every word of the value is
# repaired, also a word such as "баєдарлама" that could pass for Ukrainian.
KAZAKH_VALUES = [
    "Білім беру ұйымдарына арналған бағдарлама",
    "Қазақстан Республикасы Қаржы министрлігі",
    "Төлем тапсырмасы бойынша қаржы",
    "Нұр-Сұлтан қаласы әкімдігі",
    "Жалақы төлеу үшін",
    "Ақтөбе облысы бойынша бюджеттік бағдарлама",
    "Үкімет қаулысы",
    "Өскемен қаласының кірістері",
]


@pytest.mark.parametrize("value", KAZAKH_VALUES)
def test_kz1048_misreading_repairs_whole_value(value: str) -> None:
    misread = value.encode("kz1048").decode("cp1251")
    found = detect_mojibake(misread)
    assert [(m.written_as, m.shown_as, m.severity) for m in found] == [
        ("kz1048", "CP1251", "error")
    ]
    assert found[0].expected == value


@pytest.mark.parametrize("value", ["Бюджеттік бағдарлама үшін", "Үкімет үйі", "Жағдай"])
def test_kz1048_words_repaired_with_evidence_elsewhere(value: str) -> None:
    misread = value.encode("kz1048").decode("cp1251")
    assert detect_mojibake(misread) == []
    found = detect_mojibake(misread, kz1048_elsewhere="'Ќазаќстан' on line 3")
    assert [(m.written_as, m.severity) for m in found] == [("kz1048", "error")]
    assert found[0].expected == value
    assert "KZ-1048 text read as CP1251, as 'Ќазаќстан' on line 3 shows;" in found[0].describe()


@pytest.mark.parametrize("text", ["Ђорђевић", "Љубица Ђурић", "Ѓорѓи Јанков"])
def test_serbian_and_macedonian_not_kz1048(text: str) -> None:
    # KZ-1048 shows ђ, љ and ѓ as CP1251 does, and no Kazakh word has them.
    assert detect_mojibake(text) == []


def test_ukrainian_name_beside_kz1048_mojibake_repaired() -> None:
    # In KZ-1048 the bytes CP1251 shows as є, ї and ґ are ғ, ү and ө, so a
    # value with Kazakh mojibake has no Ukrainian letters at all.
    found = detect_mojibake("Ќазаќстан Київ")
    assert [m.expected for m in found] == ["Қазақстан Киүв"]


@pytest.mark.parametrize(
    ("misread", "repaired"),
    [
        ("Тїркістан", "Түркістан"),
        ("бїгін", "бүгін"),
        ("Кґкшетау", "Көкшетау"),
        ("Ґнім", "Өнім"),
        ("аєаш", "ағаш"),
        ("кїні", "күні"),
    ],
)
def test_kz1048_non_ukrainian_spelling_warns(misread: str, repaired: str) -> None:
    findings = find_mojibake(misread, FILE, "$.title.kk")
    assert [(f.rule, f.severity) for f in findings] == [("text.mojibake", "warning")]
    assert f"{misread!r} may be KZ-1048 text read as CP1251" in findings[0].message
    assert f"expected {repaired!r}" in findings[0].message


@pytest.mark.parametrize(
    ("misread", "repaired"), [("Єылым", "Ғылым"), ("жаєдайы", "жағдайы"), ("жоєары", "жоғары")]
)
def test_kz1048_weak_marker_with_russian_letter(misread: str, repaired: str) -> None:
    findings = find_mojibake(misread, FILE, "$.title.kk")
    assert [(f.rule, f.severity) for f in findings] == [("text.mojibake", "error")]
    assert f"{misread!r} is KZ-1048 text read as CP1251; expected {repaired!r}" in (
        findings[0].message
    )
