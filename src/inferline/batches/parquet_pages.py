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
MAX_HEADER_BYTES = 64 * 1024  # a page header (statistics included): a few hundred bytes in real files
MAX_NESTING = 16

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

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

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
        if kind == _MAP:
            size = self.varint()
            types = self.byte() if size else 0
            for _ in range(size):
                self.skip(types >> 4, depth + 1)
                self.skip(types & 0x0F, depth + 1)
            return
        header = self.byte()
        size = header >> 4 if header >> 4 != 15 else self.varint()
        element = header & 0x0F
        for _ in range(size):  # a list's booleans are a byte each
            self.skip(_BYTE if element in (_TRUE, _FALSE) else element, depth + 1)

    def fields(self) -> Iterator[tuple[int, int]]:
        """(field id, type) of each field of the struct at the position, up to its stop."""
        last = 0
        while True:
            header = self.byte()
            kind = header & 0x0F
            if kind == _STOP:
                return
            delta = header >> 4
            last = last + delta if delta else self.zigzag()
            yield last, kind


def _page_header(source: BinaryIO, at: int) -> tuple[int, int, int]:
    """(header bytes, uncompressed page bytes, compressed page bytes) of the page header at `at`."""
    size = 256
    while True:
        source.seek(at)
        reader = _Reader(source.read(size))
        try:
            uncompressed = compressed = -1
            for field, kind in reader.fields():
                if field in (2, 3) and kind == _I32:
                    value = reader.zigzag()
                    if field == 2:
                        uncompressed = value
                    else:
                        compressed = value
                else:
                    reader.skip(kind, 1)
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
    pages = total = 0
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
                group_bytes += header_bytes + uncompressed
                at += header_bytes + compressed
            if at != end:
                raise BadInput(f"row group {index}, column {column}: its pages do not fill it as its footer says")
        if group_bytes > limits.max_row_group_bytes:
            raise BadInput(
                f"row group {index}'s pages take {group_bytes} bytes uncompressed, over {limits.max_row_group_bytes}: "
                "write the file with smaller row groups"
            )
        total += group_bytes
        if total > limits.max_parquet_data_bytes:
            raise BadInput(
                f"the Parquet file's pages take over {limits.max_parquet_data_bytes} bytes uncompressed "
                f"(at row group {index}): split it into smaller files"
            )
