"""Checks that what a request asks to store can be stored alike on both engines."""

from __future__ import annotations

from typing import Any

from inferline.errors import InvalidInput

NUL = "\x00"

# Where an item sits: (its parent's place, its key or index); the root is (None, field).
_Place = tuple["_Place | None", object]


def refuse_nul(value: Any, field: str) -> None:
    """A 422 naming where `value` (JSON-like: dicts, lists, strings, in keys too) holds U+0000. PostgreSQL
    stores no NUL in text or jsonb: let through, it failed the whole group commit of a batch of jobs, every
    tenant's. Walked with a stack, not recursion, and the path built only for the item found, so the work
    is linear at any depth of nesting."""
    stack: list[tuple[_Place, Any]] = [((None, field), value)]
    while stack:
        place, item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                _refuse(place, "holds the character U+0000 (NUL)")
        elif isinstance(item, dict):
            for key, child in item.items():
                if NUL in str(key):
                    _refuse(place, "has a key with the character U+0000 (NUL)")
                stack.append(((place, key), child))
        elif isinstance(item, list):
            stack.extend(((place, index), child) for index, child in enumerate(item))


def _refuse(place: _Place, problem: str) -> None:
    parts: list[str] = []
    node: _Place | None = place
    while node is not None:
        node, key = node
        parts.append(str(key))
    where = ".".join(reversed(parts))
    raise InvalidInput(f"{where}: {problem}, which is not accepted", field=where)
