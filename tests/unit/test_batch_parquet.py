"""The batch input reader on Parquet files made here by pyarrow: columns to records, bounded reading, and
files that are not Parquet or not usable."""

from __future__ import annotations

import datetime as dt
import io
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferline.batches.records import BadInput, Limits, Record, input_format, read_records
from inferline.files import sniff


def write(tmp_path: Path, columns: dict[str, Any], *, row_group_size: int | None = None) -> Path:
    path = tmp_path / "input.parquet"
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def read(path: Path, template: str | None = None, id_field: str = "custom_id", **limits: int) -> list[Record]:
    return list(read_records(path, "parquet", template=template, id_field=id_field, limits=Limits(**limits)))


def test_a_parquet_file_is_told_by_its_magic_bytes_whatever_its_name(tmp_path: Path) -> None:
    head = write(tmp_path, {"custom_id": ["a"], "text": ["x"]}).read_bytes()[:64]
    assert sniff.sniff(head) == sniff.PARQUET
    assert input_format("upload.csv", head) == "parquet"
    with pytest.raises(BadInput, match=r"named \.parquet but is not a Parquet file"):
        input_format("rows.parquet", b"custom_id,text\na,x\n")


def test_rows_become_records_with_the_other_columns_as_metadata_over_several_row_groups(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "custom_id": ["a", "b", None, "d", "e"],
            "text": ["one", "two", "three", None, "five"],
            "years": [1, None, 3, 4, 5],
            "level": pa.array(["B2", "C1", "B2", "A1", "C1"]).dictionary_encode(),
            "posted": [dt.datetime(2026, 1, i + 1, 2, 0) for i in range(5)],
            "score": [0.5, float("nan"), 1.5, 2.0, 2.5],
        },
        row_group_size=2,
    )
    records = read(path)
    assert [(r.line, r.custom_id, r.text, r.error) for r in records] == [
        (1, "a", "one", None),
        (2, "b", "two", None),
        (3, None, "three", None),
        (4, "d", None, "text: missing (a null cell)"),
        (5, "e", "five", None),
    ]
    assert records[0].metadata == {"years": 1, "level": "B2", "posted": "2026-01-01T02:00:00", "score": 0.5}
    assert records[1].metadata == {"level": "C1", "posted": "2026-01-02T02:00:00"}  # nulls and NaN left out
    assert all(record.typed for record in records)


def test_a_template_renders_columns_and_integer_ids_become_text(tmp_path: Path) -> None:
    path = write(tmp_path, {"id": [7, 8], "title": ["Welder", "Cook"], "years": [3, None]})
    records = read(path, template="{title} ({years} years)", id_field="id")
    assert [(r.custom_id, r.text, r.metadata) for r in records] == [
        ("7", "Welder (3 years)", {"title": "Welder", "years": 3}),
        ("8", "Cook ( years)", {"title": "Cook"}),
    ]


def test_a_cell_over_the_record_limit_is_that_records_failure(tmp_path: Path) -> None:
    path = write(tmp_path, {"custom_id": ["a", "b"], "text": ["short", "é" * 20], "note": ["n", "n"]})
    records = read(path, max_record_bytes=30)
    failed = "the row's string cells take 42 bytes, over 30"
    assert [(r.custom_id, r.error) for r in records] == [("a", None), ("b", failed)]


def test_a_small_file_repeating_one_huge_value_is_not_expanded_row_by_row(tmp_path: Path) -> None:
    # One 1 MiB value in a dictionary page, 2,000 rows naming it: a few KB on disk, 2 GB as Python strings.
    huge = "x" * 2**20
    path = tmp_path / "bomb.parquet"
    text = pa.DictionaryArray.from_arrays(pa.array([0] * 2000, pa.int32()), pa.array([huge]))
    table = pa.table({"custom_id": [f"r{i}" for i in range(2000)], "text": text})
    pq.write_table(table, path, use_dictionary=True, compression="zstd")
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:  # the declared row group size is the decoded one (2 GB): lifted here to reach the rows
        records = read(path, max_record_bytes=1000, max_row_group_bytes=2**40)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(records) == 2000 and all(r.error and "over 1000" in r.error for r in records)
    assert [r.custom_id for r in records[:2]] == ["r0", "r1"]
    assert peak < 64 * 2**20, peak  # Python's allocations; Arrow's own buffers hold the one value


@pytest.mark.parametrize(
    ("columns", "limits", "reason"),
    [
        ({"custom_id": ["a"], "text": ["x"], "tags": [["a", "b"]]}, {}, "column 'tags' is list<element: string>"),
        ({"custom_id": ["a"], "text": ["x"], "meta": [{"k": 1}]}, {}, "column 'meta' is struct"),
        ({"custom_id": ["a"], "text": [b"\x00\x01"]}, {}, "column 'text' is binary"),
        ({"custom_id": ["a"], "text": [1]}, {}, "column 'text' is int64, not a string column"),
        ({"custom_id": ["a"], "body": ["x"]}, {}, "no column 'text'"),
        ({"id": ["a"], "text": ["x"]}, {}, "no 'custom_id' column"),
        ({"custom_id": ["a", "b", "c"], "text": ["x", "y", "z"]}, {"max_records": 2}, "over 2 records"),
        ({"custom_id": ["a"], "text": ["x"], "c": [1], "d": [2]}, {"max_columns": 3}, "4 columns, over 3"),
        ({"custom_id": ["a"] * 500, "text": [f"{i}" * 40 for i in range(500)]}, {"max_row_group_bytes": 999}, "group"),
        ({"custom_id": ["a"], "text": ["x"]}, {"max_parquet_footer_bytes": 64}, "footer is"),
    ],
)
def test_a_file_the_reader_cannot_use_fails_the_batch_naming_why(
    tmp_path: Path, columns: dict[str, Any], limits: dict[str, int], reason: str
) -> None:
    with pytest.raises(BadInput, match=re.escape(reason)):
        read(write(tmp_path, columns), **limits)


def test_row_groups_each_under_their_limit_are_held_to_a_total_for_the_file(tmp_path: Path) -> None:
    # Forty 50 MB groups fit in a 71 kB file: each group passes its own limit, the file's sum does not.
    columns = {"custom_id": [f"r{i}" for i in range(400)], "text": ["posting " * 50] * 400}
    path = write(tmp_path, columns, row_group_size=40)
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_row_groups == 10
    one_group = max(metadata.row_group(i).total_byte_size for i in range(10))
    assert len(read(path, max_row_group_bytes=one_group * 2, max_parquet_data_bytes=one_group * 20)) == 400
    with pytest.raises(BadInput, match=r"row groups take over \d+ bytes uncompressed \(at row group [1-9]\)"):
        read(path, max_row_group_bytes=one_group * 2, max_parquet_data_bytes=one_group * 5)


def understated(path: Path, declared: int) -> None:
    """The file's footer rewritten so that every size in it of over 100 kB reads `declared`: each varint
    replaced by one of the same length (zigzag, padded with continuation bytes), so offsets stay right."""
    raw = bytearray(path.read_bytes())
    length = int.from_bytes(raw[-8:-4], "little")
    start = len(raw) - 8 - length
    footer = bytes(raw[start:-8])

    def varint(value: int, width: int = 0) -> bytes:
        out = bytearray()
        while True:
            out.append(value & 0x7F | (0x80 if value >> 7 else 0))
            value >>= 7
            if not value:
                break
        while len(out) < width:
            out[-1] |= 0x80
            out.append(0)
        return bytes(out)

    group = pq.ParquetFile(path).metadata.row_group(0)
    sizes = {group.total_byte_size} | {group.column(i).total_uncompressed_size for i in range(group.num_columns)}
    for size in sorted(value for value in sizes if value > 100_000):
        true = varint(size << 1)  # zigzag of a positive number
        footer = footer.replace(true, varint(declared << 1, len(true)))
    raw[start:-8] = footer
    path.write_bytes(bytes(raw))


def test_pages_are_held_to_the_limits_whatever_the_footer_declares(tmp_path: Path) -> None:
    """pyarrow decompresses a page into what the page's own header declares: a footer saying 1,000 bytes
    let a 3 kB file of zstd pages decode 50 MB past a 1 MB limit. The page headers are read first."""
    path = tmp_path / "input.parquet"
    table = pa.table({"custom_id": [f"r{i}" for i in range(20)], "text": ["x" * 2_500_000] * 20})
    pq.write_table(table, path, compression="zstd", use_dictionary=False, data_page_size=1 << 30)
    understated(path, 1000)
    group = pq.ParquetFile(path).metadata.row_group(0)
    assert group.total_byte_size == 1000 and path.stat().st_size < 10_000  # the footer's word, now
    with pytest.raises(BadInput, match=r"row group 0's pages take 5000\d{4} bytes uncompressed, over 1000000"):
        read(path, max_row_group_bytes=1_000_000, max_parquet_data_bytes=2_000_000, max_record_bytes=10**8)


@pytest.mark.parametrize("compression", ["none", "snappy", "zstd", "gzip"])
@pytest.mark.parametrize("page_version", ["1.0", "2.0"])
def test_the_pages_of_files_pyarrow_writes_add_up_to_what_their_footers_declare(
    tmp_path: Path, compression: str, page_version: str
) -> None:
    """Dictionaries, statistics, page indexes, small pages and several row groups: the walk reads each
    header and lands on each chunk's end, and what the pages declare is what the footer does."""
    from inferline.batches.parquet_pages import check_pages

    rows = 3000
    table = pa.table(
        {
            "custom_id": [f"r{i}" for i in range(rows)],
            "text": [f"row {i} " * (i % 7 + 1) for i in range(rows)],
            "score": [i / 3 for i in range(rows)],
            "kind": [["a", "b", None][i % 3] for i in range(rows)],
        }
    )
    path = tmp_path / "input.parquet"
    pq.write_table(
        table,
        path,
        compression=compression,
        data_page_version=page_version,
        data_page_size=4096,
        row_group_size=1000,
        write_page_index=True,
    )
    metadata = pq.ParquetFile(path).metadata
    declared = sum(metadata.row_group(i).column(c).total_uncompressed_size for i in range(3) for c in range(4))
    with path.open("rb") as source:
        check_pages(source, metadata, Limits(max_parquet_data_bytes=declared))
        with pytest.raises(BadInput, match="pages take over"):
            check_pages(source, metadata, Limits(max_parquet_data_bytes=declared - 1))
    assert len(read(path)) == rows


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        # type 0, sizes 1 and 1, then field 7 a map of 2**31 boolean pairs: a byte each, so it runs out.
        ("15 00 15 02 15 02 7b ff ff ff ff 0f 11 00", "truncated"),
        # size 1, then field id 65538 in the long form: Thrift's C++ reads it as field 2 again.
        ("15 00 15 02 15 02 05 84 80 08 80 80 02 00", "states its sizes twice"),
        ("15 00 15 02 00", "lacks its sizes"),
        ("15 00 16 02 15 02 00", "states its sizes twice or in the wrong type"),  # field 2 as an i64
        ("15 00 15 02 15 03 00", "lacks its sizes"),  # a compressed size of -2
    ],
)
def test_page_headers_read_as_pyarrow_reads_them_or_refused(header: str, reason: str) -> None:
    from inferline.batches.parquet_pages import _page_header

    with pytest.raises(BadInput, match=reason):
        _page_header(io.BytesIO(bytes.fromhex(header)), 0)


def test_a_file_cut_short_or_with_a_broken_footer_is_not_readable(tmp_path: Path) -> None:
    whole = write(tmp_path, {"custom_id": ["a"], "text": ["x"]}).read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadInput, match="does not end with PAR1"):
        read(cut)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(whole[:4] + b"\xff" * (len(whole) - 12) + (len(whole) - 12).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(BadInput, match="not a readable Parquet file"):
        read(broken)
