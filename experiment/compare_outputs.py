# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Compare two results folders number by number; exit 1 on any difference.

    uv run experiment/compare_outputs.py outputs-before outputs-after               # exact
    uv run experiment/compare_outputs.py A B --rtol 1e-6                            # numbers within 1e-6, relative
    uv run experiment/compare_outputs.py A B --ignore-field '*seconds*' --ignore-field timings

Every CSV, JSON and JSONL file under either folder is compared with the file at the same relative path in
the other: a file on one side only is a difference; CSVs must have the same columns and rows; JSON values
are compared recursively. Two values that both read as numbers are equal when |a - b| <= max(rtol * max(|a|,
|b|), atol) (NaN equals NaN); anything else must match exactly. `--ignore-field` drops CSV columns and JSON
keys whose name matches a shell pattern (timings, dates), `--ignore` whole files by relative path.

Prints one line per difference (the first `--max-report`), then a summary line. Exit status: 0 identical,
1 different, 2 a usage error (a folder that does not exist).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brittle.cli import UserError, run_cli

COMPARED_SUFFIXES = (".csv", ".json", ".jsonl")


@dataclass(frozen=True)
class Tolerance:
    """When two numbers count as equal: |a - b| <= max(relative * max(|a|, |b|), absolute)."""

    relative: float = 0.0
    absolute: float = 0.0

    def equal(self, a: float, b: float) -> bool:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= max(self.relative * max(abs(a), abs(b)), self.absolute)


def as_number(value: Any) -> float | None:
    """`value` as a float when it is a number or a string that reads as one (not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def compare_values(a: Any, b: Any, where: str, tolerance: Tolerance, ignored: Sequence[str]) -> Iterator[str]:
    """The differences between two JSON values (or CSV cells), each as one line naming `where`."""
    number_a, number_b = as_number(a), as_number(b)
    if number_a is not None and number_b is not None:
        if not tolerance.equal(number_a, number_b):
            yield f"{where}: {a} != {b}"
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if any(fnmatch.fnmatchcase(str(key), pattern) for pattern in ignored):
                continue
            if key not in a or key not in b:
                yield f"{where}.{key}: only in {'the second' if key not in a else 'the first'} folder"
            else:
                yield from compare_values(a[key], b[key], f"{where}.{key}", tolerance, ignored)
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{where}: {len(a)} != {len(b)} items"
        for index, (item_a, item_b) in enumerate(zip(a, b, strict=False)):
            yield from compare_values(item_a, item_b, f"{where}[{index}]", tolerance, ignored)
        return
    if a != b:
        yield f"{where}: {a!r} != {b!r}"


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV's columns and rows."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def read_structured(path: Path) -> Any:
    """A JSON file's value, or a JSONL file's records as a list; a `UserError` for a file that does not parse."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); compare only finished results folders") from None


def compare_files(a: Path, b: Path, name: str, tolerance: Tolerance, ignored: Sequence[str]) -> Iterator[str]:
    """The differences between two files of the same relative path `name`."""
    if a.suffix == ".csv":
        (columns_a, rows_a), (columns_b, rows_b) = read_rows(a), read_rows(b)
        columns_a = [column for column in columns_a if not any(fnmatch.fnmatchcase(column, p) for p in ignored)]
        columns_b = [column for column in columns_b if not any(fnmatch.fnmatchcase(column, p) for p in ignored)]
        if columns_a != columns_b:
            yield f"{name}: columns differ: {columns_a} != {columns_b}"
            return
        if len(rows_a) != len(rows_b):
            yield f"{name}: {len(rows_a)} != {len(rows_b)} rows"
        for number, (row_a, row_b) in enumerate(zip(rows_a, rows_b, strict=False), start=1):
            for column in columns_a:
                yield from compare_values(row_a[column], row_b[column], f"{name} row {number} {column}", tolerance,
                                          ignored)
        return
    yield from compare_values(read_structured(a), read_structured(b), name, tolerance, ignored)


def result_files(folder: Path, ignored_files: Sequence[str]) -> set[str]:
    """Relative paths of the compared files under `folder` (hidden folders, e.g. unfinished staging, skipped)."""
    files = set()
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if (path.is_file() and path.suffix in COMPARED_SUFFIXES
                and not any(part.startswith(".") for part in relative.parts)
                and not any(fnmatch.fnmatchcase(relative.as_posix(), pattern) for pattern in ignored_files)):
            files.add(relative.as_posix())
    return files


def compare_folders(first: Path, second: Path, tolerance: Tolerance = Tolerance(), ignored_fields: Sequence[str] = (),
                    ignored_files: Sequence[str] = ()) -> tuple[list[str], int]:
    """Every difference between the results in two folders, and how many files were compared."""
    for folder in (first, second):
        if not folder.is_dir():
            raise UserError(f"results folder {folder} does not exist; pass two existing folders")
    files_a, files_b = result_files(first, ignored_files), result_files(second, ignored_files)
    differences = [f"{name}: only in {first}" for name in sorted(files_a - files_b)]
    differences += [f"{name}: only in {second}" for name in sorted(files_b - files_a)]
    common = sorted(files_a & files_b)
    for name in common:
        differences += compare_files(first / name, second / name, name, tolerance, ignored_fields)
    return differences, len(common)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="a results folder (e.g. outputs/ before a change)")
    parser.add_argument("second", type=Path, help="the folder to compare it with")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance on numbers (default 0: exact)")
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance on numbers (default 0)")
    parser.add_argument("--ignore-field", action="append", default=[], metavar="PATTERN",
                        help="skip CSV columns and JSON keys matching this shell pattern (repeatable)")
    parser.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                        help="skip files whose relative path matches this shell pattern (repeatable)")
    parser.add_argument("--max-report", type=int, default=50, help="differences printed at most (default 50)")
    args = parser.parse_args()
    if args.rtol < 0 or args.atol < 0:
        raise UserError(f"--rtol and --atol must not be negative, got {args.rtol} and {args.atol}")
    differences, compared = compare_folders(args.first, args.second, Tolerance(args.rtol, args.atol),
                                            args.ignore_field, args.ignore)
    for line in differences[:args.max_report]:
        print(line)
    if len(differences) > args.max_report:
        print(f"... and {len(differences) - args.max_report} more")
    verdict = "identical" if not differences else f"{len(differences)} difference(s)"
    print(f"{verdict}: {compared} file(s) compared in both {args.first} and {args.second} (rtol {args.rtol:g}, "
          f"atol {args.atol:g})")
    if differences:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
