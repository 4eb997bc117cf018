"""Keyset pagination over time-ordered ids: stable under inserts, pages never repeat or skip."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.errors import InvalidInput

T = TypeVar("T")
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    padded = (cursor + "=" * (-len(cursor) % 4)).replace("-", "+").replace("_", "/")
    try:
        value = base64.b64decode(padded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if not _ID.fullmatch(value):
        raise InvalidInput("cursor is not one this API returned", field="cursor")
    return value


async def newest_first(
    conn: AsyncConnection,
    query: sa.Select[Any],
    id_column: sa.ColumnElement[str],
    *,
    limit: int,
    cursor: str | None,
    to_item: Callable[[Any], T],
    id_of: Callable[[T], str],
) -> tuple[list[T], str | None]:
    """One page of `query`, newest first, and the cursor of the next page (None on the last)."""
    if cursor is not None:
        query = query.where(id_column < decode_cursor(cursor))
    rows = (await conn.execute(query.order_by(id_column.desc()).limit(limit + 1))).mappings()
    items = [to_item(row) for row in rows]
    next_cursor = encode_cursor(id_of(items[limit - 1])) if len(items) > limit else None
    return items[:limit], next_cursor
