"""Settings of a content repository read from `[tool.pipeline]` in its pyproject.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError


@pytest.mark.parametrize("key", ["lock_timeout_ms", "statement_timeout_ms"])
@pytest.mark.parametrize(("value", "shown"), [("-5", "-5"), ("0", "0"), ('"5s"', "'5s'")])
def test_timeout_must_be_positive(tmp_path: Path, key: str, value: str, shown: str) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f"[tool.pipeline]\n{key} = {value}\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)

    assert str(caught.value) == (
        f"{pyproject}: [tool.pipeline] {key}: expected a positive integer, found {shown}"
    )


def test_timeouts_read_from_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.pipeline]\nlock_timeout_ms = 700\nstatement_timeout_ms = 9000\n", encoding="utf-8"
    )

    config = load_config(tmp_path)

    assert config.lock_timeout_ms == 700
    assert config.statement_timeout_ms == 9000
