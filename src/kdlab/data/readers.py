"""Reading labelled rows from TSV, CSV and JSONL files.

Everything is returned as strings: the task layer decides how a value is interpreted (label name, float
target, text). Keeping the readers type-free means a label ``1`` reads the same from a TSV file and from a
JSONL file (where it may be stored as the number ``1``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from kdlab.errors import UserError

FORMATS = ("tsv", "csv", "jsonl")
"""Formats :func:`read_rows` understands."""

# `.json` is accepted as a suffix for JSON-lines files (one object per line), the usual form of data dumps.
_SUFFIX_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}

Rows = list[dict[str, str]] | list[list[str]]


def detect_format(path: str | Path, fmt: str | None = None, *, key: str | None = None) -> str:
    """Return the format of ``path``: ``fmt`` when given, else the one its suffix names."""
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt == "json":
            fmt = "jsonl"
        if fmt not in FORMATS:
            raise UserError(
                f"unknown data format {fmt!r}",
                key="task.format",
                fix=f"use one of {', '.join(FORMATS)}, or leave it out to go by the file suffix",
            )
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise UserError(
            f"cannot tell the format of {str(path)!r} from its suffix {suffix or '(none)'!r}",
            key=key,
            fix="name the file .tsv, .csv or .jsonl, or set task.format to tsv, csv or jsonl",
        )
    return _SUFFIX_FORMATS[suffix]


def read_rows(path: str | Path, fmt: str | None = None, header: bool = True, *, key: str | None = None) -> Rows:
    """Read every data row of a TSV, CSV or JSONL file.

    * TSV / CSV with ``header=True``: a list of dicts keyed by the header names (in header order).
    * TSV / CSV with ``header=False``: a list of lists, addressed by 0-based column index.
    * JSONL: a list of dicts (``header`` is ignored); non-string values are turned into their JSON text, so
      the number ``1`` becomes ``"1"`` and ``0.5`` becomes ``"0.5"``.

    TSV is read without quote processing (``csv.QUOTE_NONE``): GLUE's TSV files contain unbalanced ``"``
    characters inside sentences, and a quoting reader would silently merge lines. CSV uses standard quoting.
    Every row must have as many fields as the first row (or header): a ragged file almost always means a
    wrong delimiter, and guessing would shift columns. ``key`` names the config key blamed in errors.
    """
    path = Path(path)
    fmt = detect_format(path, fmt, key=key)
    if not path.is_file():
        raise UserError(
            f"data file {str(path)!r} does not exist" + (" (it is a folder)" if path.is_dir() else ""),
            key=key,
            fix="check the path; relative paths count from the current directory "
            "(ready tasks resolve against KDLAB_DATA_ROOT or ../shared/data)",
        )
    if fmt == "jsonl":
        return _read_jsonl(path, key)
    return _read_delimited(path, "\t" if fmt == "tsv" else ",", fmt == "tsv", header, key)


def _read_delimited(path: Path, delimiter: str, no_quotes: bool, header: bool, key: str | None) -> Rows:
    quoting = csv.QUOTE_NONE if no_quotes else csv.QUOTE_MINIMAL
    # utf-8-sig swallows a byte-order mark, which spreadsheet exports put before the first header name.
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
            # csv yields [] for a blank line; line_num (after the read) is the file line the record ended on,
            # which is what a user sees in an editor.
            numbered = [(reader.line_num, record) for record in reader if record]
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc, key) from exc
    except csv.Error as exc:
        raise UserError(f"cannot parse {str(path)!r}: {exc}", key=key, fix="check the file format") from exc

    if not numbered:
        return []
    records = [record for _, record in numbered]
    width = len(records[0])
    for number, record in numbered:
        if len(record) != width:
            what = "the header" if header else "the first row"
            raise UserError(
                f"{str(path)!r} line {number} has {len(record)} fields but {what} has {width}",
                key=key,
                fix="check the delimiter (TSV = tab, CSV = comma) and that no text contains a stray tab or line break",
            )
    if not header:
        return records
    names = records[0]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(
            f"{str(path)!r} has duplicate header names {duplicates}",
            key=key,
            fix="rename the columns, or set task.header to false and address columns by index",
        )
    return [dict(zip(names, record, strict=True)) for record in records[1:]]


def _json_text(value: object) -> str:
    """String form of a JSON value, matching how the same value would look in a TSV file."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        # 1.0 is the label "1" a user would have written in a TSV file, not "1.0".
        return str(int(value))
    return json.dumps(value, ensure_ascii=False)


def _read_jsonl(path: Path, key: str | None) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    try:
        with path.open("r", encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(
                        f"{str(path)!r} line {number} is not valid JSON: {exc.msg}",
                        key=key,
                        fix="write one JSON object per line (JSON lines)",
                    ) from exc
                if not isinstance(obj, dict):
                    raise UserError(
                        f"{str(path)!r} line {number} is a JSON {type(obj).__name__}, not an object",
                        key=key,
                        fix='write one object per line, e.g. {"sentence": "...", "label": 1}',
                    )
                # null stays missing so that the task layer reports it like an absent key.
                rows.append({name: _json_text(value) for name, value in obj.items() if value is not None})
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc, key) from exc
    return rows


def _not_utf8(path: Path, exc: UnicodeDecodeError, key: str | None) -> UserError:
    return UserError(
        f"{str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})", key=key, fix="re-save the file as UTF-8"
    )
