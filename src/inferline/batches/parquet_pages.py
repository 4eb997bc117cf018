"""The page headers of a Parquet file's column chunks, read before pyarrow decodes any page.

pyarrow decompresses each page into a buffer of the size the page's own header declares: not the size
the footer declares for its column chunk, which is what `parquet._check_row_groups` holds to the limits.
A footer can understate its chunks (a 2.6 kB file whose footer says 1,000 bytes decoded 50 MB, and a
page may declare up to 2 GiB, which zstd fills from a few kB). So each column chunk's pages are walked
here, header by header (Thrift's compact protocol: the few fields needed read, the rest stepped over),
and what they declare is summed against the same limits. The walk reads only headers and is capped in
pages, so it is linear in a real file's page count and bounded for any file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import pyarrow.parquet as pq

from inferline.batches.records import BadInput, Limits

MAX_PAGES = 200_000  # in the file; at pyarrow's default 1 MB pages a real file of 200 GB
MAX_HEADER_BYTES = 1024 * 1024  # a page header (statistics included): a few hundred bytes in real files
MAX_HEADER_BYTES_IN_ALL = 64 * 1024 * 1024  # walked over the file (~0.5 µs a byte)
MAX_NESTING = 16
# parquet-mr before 1.2.9 wrote column chunk sizes short of their pages (PARQUET-816): readers let the
# last page run this far past the chunk's declared end for files it wrote.
OLD_PARQUET_MR_SLACK = 100

# Thrift compact protocol's field types.
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)


class _Truncated(Exception):
    pass


class _Reader:
    """A page header's bytes, read by the compact protocol."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Truncated
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            value = self.byte()
            result |= (value & 0x7F) << shift
            if not value & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise BadInput("a Parquet page header holds a malformed number")

    def zigzag(self, bits: int = 64) -> int:
        """A signed number as Thrift's C++ reads it into `bits` bits (pyarrow's reader: it wraps)."""
        value = self.varint()
        value = (value >> 1) ^ -(value & 1)
        half = 1 << (bits - 1)
        return ((value + half) & ((1 << bits) - 1)) - half

    def skip(self, kind: int, depth: int) -> None:
        """Step over a value of `kind`."""
        if depth > MAX_NESTING:
            raise BadInput("a Parquet page header nests too deep")
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.byte()
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind in (_DOUBLE, _BINARY):
            length = 8 if kind == _DOUBLE else self.varint()  # read before `pos` is: the varint moves it
            self.pos += length
        elif kind in (_LIST, _SET, _MAP):
            self._skip_container(kind, depth)
        elif kind == _STRUCT:
            for _field, field_kind in self.fields():
                self.skip(field_kind, depth + 1)
        else:
            raise BadInput("a Parquet page header is malformed")
        if self.pos > len(self.data):
            raise _Truncated

    def _skip_container(self, kind: int, depth: int) -> None:
        """A map's or a list's elements; a boolean in either is a byte (a field's is in its type), so every
        element moves the position and a declared size past the bytes there ends in `_Truncated`."""
        if kind == _MAP:
            size = self.varint()
            types = self.byte() if size else 0
            key, value = _element(types >> 4), _element(types & 0x0F)
            for _ in range(size):
                self.skip(key, depth + 1)
                self.skip(value, depth + 1)
            return
        header = self.byte()
        size = header >> 4 if header >> 4 != 15 else self.varint()
        element = _element(header & 0x0F)
        for _ in range(size):
            self.skip(element, depth + 1)

    def fields(self) -> Iterator[tuple[int, int]]:
        """(field id, type) of each field of the struct at the position, up to its stop. Ids wrap to 16
        bits as Thrift's C++ reads them: id 65538 is field 2 to pyarrow, so it is here."""
        last = 0
        while True:
            header = self.byte()
            kind = header & 0x0F
            if kind == _STOP:
                return
            delta = header >> 4
            last = ((last + delta + 0x8000) & 0xFFFF) - 0x8000 if delta else self.zigzag(16)
            yield last, kind


def _element(kind: int) -> int:
    return _BYTE if kind in (_TRUE, _FALSE) else kind


def _page_header(source: BinaryIO, at: int) -> tuple[int, int, int]:
    """(header bytes, uncompressed page bytes, compressed page bytes) of the page header at `at`."""
    size = 256
    while True:
        source.seek(at)
        reader = _Reader(source.read(size))
        try:
            sizes: dict[int, int] = {}
            for field, kind in reader.fields():
                if field in (2, 3):
                    if kind != _I32 or field in sizes:  # a reader taking the last one would see another size
                        raise BadInput("a Parquet page header states its sizes twice or in the wrong type")
                    sizes[field] = reader.zigzag(32)
                else:
                    reader.skip(kind, 1)
            uncompressed, compressed = sizes.get(2, -1), sizes.get(3, -1)
            if uncompressed < 0 or compressed < 0:
                raise BadInput("a Parquet page header lacks its sizes")
            return reader.pos, uncompressed, compressed
        except _Truncated:
            if size >= MAX_HEADER_BYTES or len(reader.data) < size:
                raise BadInput("a Parquet page header is truncated or over 64 KB") from None
            size *= 4


def check_pages(source: BinaryIO, metadata: pq.FileMetaData, limits: Limits) -> None:
    """BadInput when the pages of a row group declare more bytes than `max_row_group_bytes` (or the file's
    more than `max_parquet_data_bytes`), when a column chunk's pages do not fill it as its footer says, or
    past MAX_PAGES pages."""
    pages = total = header_total = 0
    slack = OLD_PARQUET_MR_SLACK if _old_parquet_mr(metadata.created_by or "") else 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        group_bytes = 0
        for column in range(group.num_columns):
            chunk = group.column(column)
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
                start = chunk.dictionary_page_offset
            at, end = start, start + chunk.total_compressed_size
            while at < end:
                pages += 1
                if pages > MAX_PAGES:
                    raise BadInput(f"the Parquet file has over {MAX_PAGES} pages: write it with larger pages")
                header_bytes, uncompressed, compressed = _page_header(source, at)
                header_total += header_bytes
                if header_total > MAX_HEADER_BYTES_IN_ALL:
                    raise BadInput(f"the Parquet file's page headers take over {MAX_HEADER_BYTES_IN_ALL} bytes")
                group_bytes += header_bytes + uncompressed
                at += header_bytes + compressed
            if not end <= at <= end + slack:
                raise BadInput(f"row group {index}, column {column}: its pages do not fill it as its footer says")
        total += group_bytes
        held_to_limits(index, group_bytes, total, limits, group=f"row group {index}'s pages take", file="pages take")


def held_to_limits(index: int, group_bytes: int, total_bytes: int, limits: Limits, *, group: str, file: str) -> None:
    """BadInput when row group `index` takes over `max_row_group_bytes` uncompressed, or the file's row
    groups up to it over `max_parquet_data_bytes`; `group` and `file` say by whose word."""
    if group_bytes > limits.max_row_group_bytes:
        raise BadInput(
            f"{group} {group_bytes} bytes uncompressed, over {limits.max_row_group_bytes}: "
            "write the file with smaller row groups"
        )
    if total_bytes > limits.max_parquet_data_bytes:
        raise BadInput(
            f"the Parquet file's {file} over {limits.max_parquet_data_bytes} bytes uncompressed "
            f"(at row group {index}): split it into smaller files"
        )


def _old_parquet_mr(created_by: str) -> bool:
    """Whether the writer is parquet-mr before 1.2.9 (`parquet-mr version 1.2.8 (build ...)`)."""
    words = created_by.split()
    if len(words) < 3 or words[0] != "parquet-mr" or words[1] != "version":
        return False
    numbers = []
    for part in words[2].split("-")[0].split(".")[:3]:
        if not part.isdigit():
            return False
        numbers.append(int(part))
    return tuple(numbers) < (1, 2, 9)
