"""Reading a batch's Parquet input: a `text` column (or `text_template` over columns), the records' ids in
the `id_field` column, every other column the record's metadata (a null cell is left out, as an empty CSV
cell is). A record's `line` is its row, from 1.

Bounded like the other formats: the footer is checked for size before pyarrow parses it, the columns are
capped, and rows are read a record batch at a time from one row group at a time (`iter_batches`), never the
whole file; a row group whose columns take over `max_row_group_bytes` uncompressed fails the batch, since
pyarrow decodes a row group's column chunks whole. Only scalar columns are read (strings, numbers,
booleans, dates and times, decimals, dictionary-encoded strings): a nested (list, struct, map) or binary
column fails the batch naming it, because its type is the file's and every record would fail the same way.
A row whose string cells add up to more than the record size limit is that record's failure, decided from
the cells' byte lengths before any of them becomes a Python string: string columns are read as dictionary
arrays (`read_dictionary`), so a file that repeats one huge value (a few KB on disk, a dictionary page) is
never expanded row by row, and the rows converted at once hold at most ROWS_PER_READ x the record limit.

These bounds hold for what pyarrow decodes into Python. What a file's pages decompress to inside pyarrow
is what each page's own header declares, whatever the footer says: those headers are walked before any
page is decoded (`parquet_pages`) and held to `max_row_group_bytes` and `max_parquet_data_bytes` as the
footer's sizes are.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from inferline.batches.parquet_pages import check_pages, held_to_limits
from inferline.batches.records import BadInput, Limits, Record, TooLong, check_columns, render

MAGIC = b"PAR1"
ROWS_PER_READ = 256
_TAIL_BYTES = 8  # the footer's length (4 bytes, little-endian) and the magic


def parquet_records(path: Path, template: str | None, id_field: str, limits: Limits) -> Iterator[Record]:
    """The file's rows as records, in order; BadInput for a file that is not Parquet or not usable."""
    _check_footer(path, limits)
    try:
        with pq.ParquetFile(path, memory_map=False, pre_buffer=False) as probe:
            strings = [field.name for field in probe.schema_arrow if _stringish(field.type)]
        with pq.ParquetFile(path, memory_map=False, pre_buffer=False, read_dictionary=strings) as source:
            columns = _columns(source, template, id_field, limits)
            with path.open("rb") as raw:  # what the pages declare, not only the footer (parquet_pages)
                check_pages(raw, source.metadata, limits)
            line = 0
            for batch in source.iter_batches(batch_size=ROWS_PER_READ, columns=columns, use_threads=False):
                start = line
                sizes = _row_bytes(batch, columns)
                fits = pa.array([size <= limits.max_record_bytes for size in sizes])
                values = {name: batch.column(name).filter(fits).to_pylist() for name in columns}
                kept = 0
                for size in sizes:
                    line += 1
                    if size > limits.max_record_bytes:
                        error = f"the row's string cells take {size} bytes, over {limits.max_record_bytes}"
                        yield Record(line, _short_id(batch.column(id_field), line - start - 1), None, None, error)
                        continue
                    cells = {name: _plain(values[name][kept]) for name in columns}
                    kept += 1
                    yield _record(line, cells, template, id_field, limits)
    except (pa.ArrowException, OSError, ValueError, OverflowError) as exc:
        raise BadInput(f"not a readable Parquet file: {str(exc)[:300]}") from exc


def _row_bytes(batch: pa.RecordBatch, columns: list[str]) -> list[int]:
    """Each row's string cells' UTF-8 bytes together, computed on the Arrow arrays (a dictionary column
    from its dictionary's lengths by index), without making Python strings."""
    total: Any = None
    for name in columns:
        column = batch.column(name)
        if pa.types.is_dictionary(column.type):
            if not _stringish(column.type.value_type):
                continue
            lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
        elif _stringish(column.type):
            lengths = pc.binary_length(column)
        else:
            continue
        lengths = pc.fill_null(lengths.cast(pa.int64()), 0)
        total = lengths if total is None else pc.add(total, lengths)
    return [0] * batch.num_rows if total is None else [int(size) for size in total.to_pylist()]


MAX_SHOWN_ID_BYTES = 1024


def _short_id(column: pa.Array, row: int) -> Any:
    """The row's id for its error line, unless it is itself oversized (then None)."""
    cell = column.slice(row, 1)
    if pa.types.is_dictionary(cell.type):
        index = cell.indices[0].as_py()
        if index is None:
            return None
        cell = cell.dictionary.slice(index, 1)
    if _stringish(cell.type) and (pc.binary_length(cell)[0].as_py() or 0) > MAX_SHOWN_ID_BYTES:
        return None
    value = cell[0].as_py()
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _check_footer(path: Path, limits: Limits) -> None:
    """PAR1 at both ends and a footer of a bounded size: pyarrow would read and parse any footer whole."""
    with path.open("rb") as stream:
        head = stream.read(len(MAGIC))
        size = stream.seek(0, 2)
        if head != MAGIC or size < len(MAGIC) + _TAIL_BYTES:
            raise BadInput("not a Parquet file: it does not start with PAR1")
        stream.seek(size - _TAIL_BYTES)
        tail = stream.read(_TAIL_BYTES)
    if tail[4:] != MAGIC:
        raise BadInput("not a Parquet file: it does not end with PAR1 (cut short?)")
    footer_bytes = int.from_bytes(tail[:4], "little")
    if footer_bytes > limits.max_parquet_footer_bytes:
        raise BadInput(f"the Parquet footer is {footer_bytes} bytes, over {limits.max_parquet_footer_bytes}")


def _columns(source: pq.ParquetFile, template: str | None, id_field: str, limits: Limits) -> list[str]:
    """The columns to read, checked: the ones the records need present, every type a scalar."""
    names = list(source.schema_arrow.names)
    if len(names) > limits.max_columns:
        raise BadInput(f"the Parquet file has {len(names)} columns, over {limits.max_columns}")
    if source.metadata.num_rows > limits.max_records:
        raise BadInput(f"over {limits.max_records} records (setting batch_max_records)")
    check_columns(names, template, id_field, source="the Parquet file")
    _check_types(source.schema_arrow, template)
    _check_row_groups(source.metadata, limits)
    return names


def _check_types(schema: pa.Schema, template: str | None) -> None:
    for field in schema:
        if not _scalar(field.type):
            raise BadInput(
                f"column {field.name!r} is {field.type}: only scalar columns (strings, numbers, booleans, dates) "
                "are read; drop or cast it"
            )
    if template is None and not _stringish(schema.field("text").type):
        raise BadInput(f"column 'text' is {schema.field('text').type}, not a string column")


def _check_row_groups(metadata: pq.FileMetaData, limits: Limits) -> None:
    """A row group's declared sizes: decoded, and each column chunk's compressed and uncompressed bytes
    (pyarrow reads a column chunk whole); the largest of them is what is held to the limit, and their sum
    over the file to `max_parquet_data_bytes`."""
    total_bytes = 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        chunks = [group.column(i) for i in range(group.num_columns)]
        group_bytes = max(
            group.total_byte_size,
            sum(chunk.total_compressed_size for chunk in chunks),
            sum(chunk.total_uncompressed_size for chunk in chunks),
        )
        total_bytes += group_bytes
        by_footer = {"group": f"row group {index} takes", "file": "row groups take"}
        held_to_limits(index, group_bytes, total_bytes, limits, **by_footer)


def _stringish(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _stringish(kind.value_type)
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


def _scalar(kind: pa.DataType) -> bool:
    checks = (
        pa.types.is_integer,
        pa.types.is_floating,
        pa.types.is_boolean,
        pa.types.is_null,
        pa.types.is_temporal,  # timestamps, dates, times, durations
        pa.types.is_decimal,
    )
    return _stringish(kind) or any(check(kind) for check in checks)


def _plain(value: Any) -> Any:
    """A JSON value: dates and times as ISO text, decimals as floats, NaN and infinities as missing."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _record(line: int, cells: dict[str, Any], template: str | None, id_field: str, limits: Limits) -> Record:
    raw_id = cells[id_field]
    custom_id = str(raw_id) if isinstance(raw_id, int) and not isinstance(raw_id, bool) else raw_id
    size = sum(len(value) for value in cells.values() if isinstance(value, str))
    for name, value in cells.items():
        if isinstance(value, str) and _over(value, limits.max_record_bytes):
            return Record(line, custom_id, None, None, f"column {name!r}: a cell over {limits.max_record_bytes} bytes")
    text_column = "text" if template is None else None
    metadata = {k: v for k, v in cells.items() if k not in (id_field, text_column) and v is not None}
    if template is None:
        text = cells["text"]
        error = None if isinstance(text, str) else "text: missing (a null cell)"
        return Record(line, custom_id, text, metadata, error, size=size)
    try:
        text = render(template, cells, limits.max_record_bytes)
    except TooLong as exc:
        return Record(line, custom_id, None, None, str(exc))
    return Record(line, custom_id, text, metadata, size=size + len(text))


def _over(value: str, max_bytes: int) -> bool:
    # Characters are at most 4 bytes: most cells are decided without encoding them.
    if len(value) > max_bytes:
        return True
    return len(value) * 4 > max_bytes and len(value.encode()) > max_bytes
