"""The batch input reader: JSONL and CSV records, bounded lines, templates, and input that is not what
its type says."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferline.batches.records import (
    BadInput,
    Format,
    Limits,
    Record,
    input_format,
    read_records,
    render,
    template_fields,
)


def read(tmp_path: Path, content: bytes, fmt: Format, template: str | None = None, **limits: int) -> list[Record]:
    path = tmp_path / "input"
    path.write_bytes(content)
    return list(read_records(path, fmt, template=template, id_field="custom_id", limits=Limits(**limits)))


def test_templates_substitute_fields_only_and_refuse_what_is_malformed() -> None:
    assert template_fields("{title}\n{body} {{literal}}") == ["title", "body"]
    assert render("{title}: {{x}} {years}", {"title": "Welder", "years": 3}) == "Welder: {x} 3"
    for bad in ("{title", "title}", "{0}", "{a.__class__}", "no fields"):
        with pytest.raises(ValueError):
            template_fields(bad)
    with pytest.raises(KeyError):
        render("{missing}", {})


def test_the_format_is_told_by_the_name_else_by_the_content() -> None:
    assert input_format("a.JSONL", b"id,text") == "jsonl"
    assert input_format("a.csv", b"{") == "csv"
    assert input_format(None, b'\xef\xbb\xbf  {"a": 1}') == "jsonl"
    assert input_format("upload", b"custom_id,text") == "csv"


def test_jsonl_lines_over_the_limit_are_failed_records_and_reading_goes_on(tmp_path: Path) -> None:
    content = (
        b'\xef\xbb\xbf{"custom_id": "a", "text": "one", "metadata": {"k": 1}}\n'
        + b'{"custom_id": "b", "text": "'
        + b"x" * 500
        + b'"}\n'
        + b"\n"
        + b"[1, 2]\n"
        + b'{"custom_id": "c", "title": "T", "body": "B"}'  # the last line, without its newline
    )
    records = read(tmp_path, content, "jsonl", max_line_bytes=100)
    assert [(r.line, r.custom_id, r.error) for r in records] == [
        (1, "a", None),
        (2, None, "line over 100 bytes"),
        (4, None, "not a JSON object"),
        (5, "c", "text: missing or not a string"),
    ]
    assert records[0].text == "one" and records[0].metadata == {"k": 1}
    templated = read(tmp_path, content, "jsonl", max_line_bytes=100, template="{title}/{body}")
    assert templated[-1].text == "T/B" and templated[0].error == "text_template: the record has no field 'title'"


def test_csv_rows_with_quoted_newlines_keep_their_starting_line(tmp_path: Path) -> None:
    content = b'custom_id,text,years\n1,"two\nlines",3\n\n2,plain,\n3,short\n'
    records = read(tmp_path, content, "csv")
    assert [(r.line, r.custom_id, r.text, r.metadata, r.error) for r in records] == [
        (2, "1", "two\nlines", {"years": "3"}, None),
        (5, "2", "plain", {}, None),
        (6, None, None, None, "2 cells where the header has 3"),
    ]
    assert not records[0].typed


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"id,text\n1,a\n", "no 'custom_id' column"),
        (b"custom_id,title\n1,a\n", "no column 'text'"),
        (b"custom_id,text,text\n1,a,b\n", "a column twice"),
        (b"custom_id,text\n1,\xff\xfe\n", "not UTF-8"),
        (b"custom_id,text\n1,a\x00b\n", "NUL"),
        (b'custom_id,text\n1,"open quote\n', "not a valid CSV"),
        (b"custom_id,text\n1," + b"a" * 200 + b"\n", "over 100 bytes"),
        # Quoted newlines: each line is short, the row never ends (csv caps cells, not rows).
        (b'custom_id,text\n1,"' + b'aaaaaaaaaa\n","' * 50, "row is over 100 characters"),
    ],
)
def test_csv_that_is_not_csv_fails_with_the_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    with pytest.raises(BadInput, match=reason):
        read(tmp_path, content, "csv", max_line_bytes=100)


def test_more_records_than_the_limit_fail_the_input(tmp_path: Path) -> None:
    content = b"".join(b'{"custom_id": "%d", "text": "t"}\n' % i for i in range(4))
    assert len(read(tmp_path, content, "jsonl", max_records=4)) == 4
    with pytest.raises(BadInput, match="over 3 records"):
        read(tmp_path, content, "jsonl", max_records=3)


def test_a_template_repeating_a_large_field_stops_at_the_record_limit(tmp_path: Path) -> None:
    content = b'{"custom_id": "a", "title": "' + b"t" * 60 + b'"}\n{"custom_id": "b", "title": "ok"}\n'
    first, second = read(tmp_path, content, "jsonl", "{title}" * 20, max_record_bytes=500)
    assert first.text is None and first.error == "text: the template makes over 500 characters of this record"
    assert second.text == "ok" * 20 and second.error is None


def test_a_chunk_is_cut_short_by_the_bytes_of_its_records() -> None:
    from inferline.batches import kind

    big = [Record(i, str(i), "t", None, size=kind.CHUNK_MAX_BYTES // 3 + 1) for i in range(10)]
    records = iter(big)
    assert [r.line for r in kind._take(records, 100)] == [0, 1, 2]  # the third reaches the budget
    assert [r.line for r in kind._take(records, 2)] == [3, 4]  # the count, where it comes first
