"""Settings of a content repository, read from `[tool.pipeline]` in its `pyproject.toml`.

A repository without that table gets the defaults below, so any folder with
the content layout can be released.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

DEFAULT_PRODUCT = "parus-kaz-budget"
SAMPLE_SIZES = ("small", "medium", "large")

# Default limit on a bundle's unpacked size divided by its archive size, which verification
# enforces before it decodes anything. NOTE: a judgment, not a measured bound. A full bundle
# of this repository's demo content unpacks 3.9 times its size, but a bundle that carries a
# 12 MB fixed-width file padded with spaces unpacked about 1000 times its size.
DEFAULT_MAX_RATIO = 100.0

# Environment variables that name the signing key and its passphrase.
SIGNING_KEY_ENV = "PIPELINE_SIGNING_KEY"
SIGNING_PASSPHRASE_ENV = "PIPELINE_SIGNING_PASSPHRASE"


@dataclass(frozen=True)
class SampleDatabase:
    """A sample database the dry-run migrates: its URL and, optionally, a size to generate."""

    url: str
    generate: str | None = None

    @property
    def engine(self) -> str:
        return self.url.split(":", 1)[0].split("+", 1)[0]

    def sqlite_path(self, root: Path) -> Path:
        """Return the file of an `sqlite:///path` URL, relative paths taken from `root`."""
        if self.engine != "sqlite" or not self.url.startswith("sqlite:///"):
            raise ConfigError(f"expected an sqlite:///PATH URL, found {self.url!r}")
        path = Path(self.url.removeprefix("sqlite:///"))
        return path if path.is_absolute() else root / path


@dataclass(frozen=True)
class Config:
    """Pipeline settings of one content repository."""

    root: Path
    product: str = DEFAULT_PRODUCT
    sample_databases: tuple[SampleDatabase, ...] = ()
    lock_timeout_ms: int = 5000
    statement_timeout_ms: int = 600_000
    max_ratio: float = DEFAULT_MAX_RATIO
    extra: dict[str, Any] = field(default_factory=dict)


def load_config(root: Path) -> Config:
    """Read `[tool.pipeline]` from `root/pyproject.toml`; a missing file or table gives defaults.

    Raises:
        ConfigError: the file is not valid TOML or a setting has the wrong type.
    """
    pyproject = root / "pyproject.toml"
    table: dict[str, Any] = {}
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{pyproject}: invalid TOML: {exc}") from exc
        table = data.get("tool", {}).get("pipeline", {})
    known = {"product", "sample_databases", "lock_timeout_ms", "statement_timeout_ms", "max_ratio"}
    product = table.get("product", DEFAULT_PRODUCT)
    if not isinstance(product, str) or not product:
        raise ConfigError(
            f"{pyproject}: [tool.pipeline] product: expected a name, found {product!r}"
        )
    return Config(
        root=root,
        product=product,
        sample_databases=tuple(_samples(pyproject, table.get("sample_databases", []))),
        lock_timeout_ms=_positive_int(pyproject, table, "lock_timeout_ms", 5000),
        statement_timeout_ms=_positive_int(pyproject, table, "statement_timeout_ms", 600_000),
        max_ratio=_max_ratio_setting(pyproject, table.get("max_ratio", DEFAULT_MAX_RATIO)),
        extra={k: v for k, v in table.items() if k not in known},
    )


def _samples(pyproject: Path, entries: object) -> list[SampleDatabase]:
    where = f"{pyproject}: [tool.pipeline] sample_databases"
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected a list, found {type(entries).__name__}")
    samples = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ConfigError(
                f"{where}[{index}]: expected a URL or {{ url = ... }}, found {entry!r}"
            )
        generate = entry.get("generate")
        if generate is not None and generate not in SAMPLE_SIZES:
            raise ConfigError(
                f"{where}[{index}].generate: expected one of {', '.join(SAMPLE_SIZES)},"
                f" found {generate!r}"
            )
        samples.append(SampleDatabase(url=entry["url"], generate=generate))
    return samples


def chosen_samples(config: Config, urls: Sequence[str]) -> list[SampleDatabase]:
    """Return the sample databases of `urls`, or every configured one when there are none.

    A URL that `[tool.pipeline] sample_databases` lists keeps its settings
    there, so `--database` of a configured sample still generates it.
    """
    if not urls:
        return list(config.sample_databases)
    configured = {sample.url: sample for sample in config.sample_databases}
    return [configured.get(url, SampleDatabase(url=url)) for url in urls]


def _positive_int(pyproject: Path, table: dict[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(
            f"{pyproject}: [tool.pipeline] {key}: expected a positive integer, found {value!r}"
        )
    return value


def _max_ratio_setting(pyproject: Path, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(
            f"{pyproject}: [tool.pipeline] max_ratio: expected a number above 0, found {value!r}"
        )
    return float(value)


def parse_max_ratio(text: str, option: str = "--max-ratio") -> float:
    """Parse a compression-ratio limit given on the command line.

    Raises:
        ConfigError: the text is not a finite number above 0.
    """
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{option} {text!r}: expected a number above 0, such as 100 or 250.5")
    return value


def signing_key_from_env() -> tuple[Path | None, str | None]:
    """Return the signing key file and passphrase named by the environment, if any."""
    key = os.environ.get(SIGNING_KEY_ENV)
    return (Path(key) if key else None, os.environ.get(SIGNING_PASSPHRASE_ENV))
