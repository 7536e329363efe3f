"""Time the check of the 1,000,000-row catalog against csv.reader and jsonschema.

    .venv/bin/python benchmarks/scale_catalog.py /tmp/scale [--rounds 3] [--jsonschema-rows 50000]

The repository comes from `benchmarks/scale_content.py`. Three measurements on
`catalogs/organizations/rows.csv`:

1. `pipeline.catalogs.check_catalog`: every rule (types, patterns, required
   values, unique keys, order, references to kato and knp);
2. `csv.reader` over the same file opened as UTF-8 text, doing nothing with
   the rows (target: the check takes at most 3 times as long);
3. a jsonschema Draft 2020-12 validator, reused, on each row as a dict, with
   the same types and patterns and a format checker for dates (target: the
   check is at least 10 times faster per row). jsonschema validates about
   19,000 rows/s, so it runs on the first `--jsonschema-rows` rows and its
   rate is compared with the check's rate over the whole file.
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path
from typing import Any

import jsonschema
from timing import Timing, measure, print_comparison, print_machine

from pipeline.catalog_model import CatalogDescription, load_description
from pipeline.catalog_rows import TYPE_CHECKS
from pipeline.catalogs import check_catalog

CATALOG = "organizations"
# Patterns of the built-in column types, as jsonschema patterns.
TYPE_PATTERNS = {
    "integer": "^-?(0|[1-9][0-9]*)$",
    "decimal": "^-?[0-9]+(\\.[0-9]+)?$",
    "date": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
}


def row_schema(description: CatalogDescription) -> dict[str, Any]:
    """Return a JSON Schema that checks one row (a dict of text values) like the column rules."""
    properties: dict[str, Any] = {}
    required = []
    for column in description.columns:
        assert column.type in TYPE_CHECKS or column.type == "text"
        variants: list[dict[str, Any]] = []
        checks: dict[str, Any] = {"type": "string", "minLength": 1}
        if column.type in TYPE_PATTERNS:
            checks["pattern"] = TYPE_PATTERNS[column.type]
        if column.type == "date":
            checks["format"] = "date"
        if column.type == "boolean":
            checks["enum"] = ["true", "false"]
        if column.pattern:
            checks = {"allOf": [checks, {"pattern": column.pattern}]}
        variants.append(checks)
        if column.required or column.name in description.key:
            required.append(column.name)
        else:
            empty = ["", column.null_value] if column.null_value else [""]
            variants.append({"enum": empty})
        properties[column.name] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def read_with_csv(path: Path) -> None:
    with path.open(encoding="utf-8", newline="") as handle:
        for _row in csv.reader(handle):
            pass


def validate_with_jsonschema(path: Path, schema: dict[str, Any], rows: int) -> int:
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = 0
    with path.open(encoding="utf-8", newline="") as handle:
        for row in itertools.islice(csv.DictReader(handle), rows):
            if not validator.is_valid(row):
                errors += 1
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="content repository from scale_content.py")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each (best counts)")
    parser.add_argument(
        "--jsonschema-rows", type=int, default=50_000, help="rows validated with jsonschema"
    )
    args = parser.parse_args()
    root = args.repo.resolve()
    rows_path = root / "catalogs" / CATALOG / "rows.csv"
    with rows_path.open(encoding="utf-8") as handle:
        total_rows = sum(1 for _ in handle) - 1
    print_machine()
    print(f"jsonschema {jsonschema.__version__}; {rows_path}: {total_rows} rows")

    findings = check_catalog(root, CATALOG)
    assert findings == [], findings[:3]
    ours = measure(lambda: check_catalog(root, CATALOG), args.rounds)
    parsing = measure(lambda: read_with_csv(rows_path), args.rounds)
    print_comparison("check_catalog", ours, "csv.reader", parsing)

    schema = row_schema(load_description(root, CATALOG))
    sampled = min(args.jsonschema_rows, total_rows)
    assert validate_with_jsonschema(rows_path, schema, 1000) == 0
    per_row = measure(lambda: validate_with_jsonschema(rows_path, schema, sampled), 1)
    scaled = Timing(per_row.wall * total_rows / sampled, per_row.cpu * total_rows / sampled)
    print(f"jsonschema on {sampled} rows: wall {per_row.wall:.3f} s, cpu {per_row.cpu:.3f} s")
    print(
        f"check_catalog rows/s: {total_rows / ours.wall:,.0f};"
        f" jsonschema rows/s: {sampled / per_row.wall:,.0f}"
    )
    print(
        f"jsonschema / check_catalog per row: wall {scaled.wall / ours.wall:.1f},"
        f" cpu {scaled.cpu / ours.cpu:.1f} times faster"
    )


if __name__ == "__main__":
    main()
