"""Reading a batch's input file: JSONL (`{"custom_id", "text", "metadata"}` per line), CSV with a header
(a `text` column, or `text_template` over its columns), or Parquet (`parquet.py`). Streaming and bounded:
a line is read up to `max_line_bytes`, the file up to `max_records` records; nothing holds more than one
record at a time.
Runs on a thread (the kind calls it through `ctx.to_thread`).

A record that cannot be used carries its `error` (it goes to the error file); input that is not what its
type says raises `BadInput` (the batch fails with that reason).
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

Format = Literal["jsonl", "csv", "parquet"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]{0,63})\}|[{}]")
MAX_TEMPLATE_CHARS = 2000


class BadInput(Exception):
    """The input file is not what its type says: the whole batch fails with this reason."""


@dataclass(frozen=True)
class Limits:
    max_records: int = 1_000_000
    max_line_bytes: int = 2**20
    max_record_bytes: int = 256 * 2**10
    # Parquet only: pyarrow parses the footer whole and decodes a row group's column chunks whole.
    max_columns: int = 1000
    max_row_group_bytes: int = 512 * 2**20
    # All row groups together, as declared: a 71 kB file of forty 50 MB groups is 2 GB to decode, and within
    # the upload and footer limits such a file could hold terabytes (hours of one uncancellable thread).
    # 64 GiB decodes in about a minute, while a real file of that much text takes days to embed.
    max_parquet_data_bytes: int = 64 * 2**30
    max_parquet_footer_bytes: int = 16 * 2**20


@dataclass(frozen=True)
class Record:
    line: int  # where the record starts in the file, from 1
    custom_id: str | None
    text: str | None
    metadata: Any
    error: str | None = None
    # CSV cells are strings: a declared int field's "3" is converted once the collection is known.
    typed: bool = True
    size: int = 0  # bytes of the input it was read from: chunks are held to a budget of them


def template_fields(template: str) -> list[str]:
    """The names `template` substitutes (`{title}`; `{{` and `}}` are braces); ValueError if malformed."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"over {MAX_TEMPLATE_CHARS} characters")
    names: list[str] = []
    for match in _PLACEHOLDER.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise ValueError(f"a lone {token!r} at {match.start()} (write {token * 2} for a brace)")
        names.append(match.group(1))
    if not names:
        raise ValueError("names no field: write e.g. '{title}\\n{body}'")
    return names


class TooLong(ValueError):
    """A rendered text past the record size limit."""


def render(template: str, values: dict[str, Any], max_chars: int | None = None) -> str:
    """`template` with each `{name}` replaced by `values[name]` (KeyError names a missing one). Plain
    substitution, never `str.format`: a template is the tenant's, and format strings reach attributes.
    Past `max_chars` it stops (TooLong): a template repeating a large field must not build a huge text."""
    built = 0

    def one(match: re.Match[str]) -> str:
        nonlocal built
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        value = values[match.group(1)]
        text = "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        built += len(text)
        if max_chars is not None and built > max_chars:
            raise TooLong(f"text: the template makes over {max_chars} characters of this record")
        return text

    return _PLACEHOLDER.sub(one, template)


def input_format(filename: str | None, head: bytes) -> Format:
    """Parquet by its magic bytes; else by the name's extension, else by the content: JSONL starts with `{`.
    BadInput for a file named .parquet that is not one."""
    name = (filename or "").lower()
    if head.startswith(b"PAR1"):
        return "parquet"
    if name.endswith((".parquet", ".pq")):
        raise BadInput("the input file is named .parquet but is not a Parquet file (it does not start with PAR1)")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    return "jsonl" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "csv"


def read_records(path: Path, fmt: Format, *, template: str | None, id_field: str, limits: Limits) -> Generator[Record]:
    """The file's records in order; BadInput past `limits.max_records` or for input not of type `fmt`."""
    if fmt == "parquet":
        from inferline.batches.parquet import parquet_records  # pyarrow is slow to import: only when needed

        yield from _counted(parquet_records(path, template, id_field, limits), limits)
        return
    with path.open("rb") as stream:
        reader = (
            _jsonl(stream, template, id_field, limits) if fmt == "jsonl" else _csv(stream, template, id_field, limits)
        )
        yield from _counted(reader, limits)


def _counted(records: Iterator[Record], limits: Limits) -> Iterator[Record]:
    for count, record in enumerate(records, start=1):
        if count > limits.max_records:
            raise BadInput(f"over {limits.max_records} records (setting batch_max_records)")
        yield record


def _lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line; None for a line over `max_line_bytes`, whose rest is skipped
    in bounded reads."""
    number = 0
    while raw := stream.readline(max_line_bytes + 1):
        number += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while (more := stream.readline(65536)) and not more.endswith(b"\n"):
                pass
            yield number, None
        else:
            yield number, raw


def _jsonl(stream: BinaryIO, template: str | None, id_field: str, limits: Limits) -> Iterator[Record]:
    for line, raw in _lines(stream, limits.max_line_bytes):
        if raw is None:
            yield Record(line, None, None, None, f"line over {limits.max_line_bytes} bytes")
            continue
        if line == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if not raw.strip():
            continue  # blank lines are no records
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            yield Record(line, None, None, None, f"not JSON: {str(exc)[:200]}")
            continue
        if not isinstance(value, dict):
            yield Record(line, None, None, None, "not a JSON object")
            continue
        custom_id = value.get(id_field)
        metadata = value.get("metadata")
        if template is None:
            text = value.get("text")
            error = None if isinstance(text, str) else "text: missing or not a string"
            yield Record(line, custom_id, text, metadata, error, size=len(raw))
            continue
        fields = (metadata if isinstance(metadata, dict) else {}) | value
        try:
            text = render(template, fields, limits.max_record_bytes)
            yield Record(line, custom_id, text, metadata, size=len(raw) + len(text))
        except KeyError as exc:
            yield Record(line, custom_id, None, metadata, f"text_template: the record has no field {exc.args[0]!r}")
        except TooLong as exc:
            yield Record(line, custom_id, None, None, str(exc))


def _text_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    for line, raw in _lines(stream, max_line_bytes):
        if raw is None:
            raise BadInput(f"CSV line {line} is over {max_line_bytes} bytes (setting batch_max_line_bytes)")
        if b"\x00" in raw:
            raise BadInput(f"CSV line {line} holds a NUL byte: not a CSV text file")
        try:
            yield decoder.decode(raw)
        except UnicodeDecodeError as exc:
            raise BadInput(f"CSV line {line} is not UTF-8: {exc.reason}") from exc


def _row_lines(lines: Iterator[str], max_row_chars: int) -> Iterator[str]:
    """Lines, refused once the row they belong to (quoted newlines join lines) passes `max_row_chars`.
    A line ending outside quotes ends the row: an even count of quote characters so far."""
    row_chars, quotes = 0, 0
    for text in lines:
        row_chars += len(text)
        quotes += text.count('"')
        if row_chars > max_row_chars:
            raise BadInput(f"a CSV row is over {max_row_chars} characters (setting batch_max_line_bytes)")
        if quotes % 2 == 0:
            row_chars, quotes = 0, 0
        yield text


def _csv(stream: BinaryIO, template: str | None, id_field: str, limits: Limits) -> Iterator[Record]:
    # A cell may be as large as a record (csv's own default, 128 KiB, is below the setting's); a row as a
    # whole is held to a line's limit by `_row_lines`, since csv caps cells, not how many a quote opens.
    csv.field_size_limit(max(csv.field_size_limit(), limits.max_record_bytes))
    reader = csv.reader(_row_lines(_text_lines(stream, limits.max_line_bytes), limits.max_line_bytes), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise BadInput("the CSV file is empty: a header row is needed")
        names = [name.strip() for name in header]
        check_columns(names, template, id_field, source="the CSV header")
        text_column = None if template is not None else "text"
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                yield Record(line, None, None, None, f"{len(row)} cells where the header has {len(names)}")
                continue
            cells = dict(zip(names, row, strict=True))
            custom_id = cells.get(id_field) or None
            metadata = {k: v for k, v in cells.items() if k not in (id_field, text_column) and v != ""}
            try:
                text = cells["text"] if template is None else render(template, cells, limits.max_record_bytes)
            except TooLong as exc:
                yield Record(line, custom_id, None, None, str(exc))
                continue
            yield Record(line, custom_id, text, metadata, typed=False, size=sum(map(len, row)) + len(text))
    except csv.Error as exc:
        raise BadInput(f"not a valid CSV file at line {reader.line_num}: {exc}") from exc


def check_columns(names: list[str], template: str | None, id_field: str, *, source: str) -> None:
    """The columns of a tabular input (CSV, Parquet) name each column once and hold what the records need:
    the id column and `text` or the template's fields. `source` names the input in the message."""
    if len(set(names)) != len(names):
        raise BadInput(f"{source} names a column twice: {names[:50]}")
    if id_field not in names:
        raise BadInput(f"{source} has no {id_field!r} column (the records' ids; see id_field)")
    wanted = ["text"] if template is None else template_fields(template)
    missing = [name for name in wanted if name not in names]
    if missing:
        how = "a 'text' column, or text_template over its columns" if template is None else "text_template"
        raise BadInput(f"{source} has no column {missing[0]!r} ({how}); it has {names[:50]}")
