"""Checks that what is stored can be stored alike on both engines: what a request asks to store
(`refuse_nul`), and what a job's code hands back (`unstorable`, `shown_text`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from inferline.errors import InvalidInput

NUL = "\x00"
REPLACEMENT = "\ufffd"
# The longest stage a job's row holds (`jobs.stage` is VARCHAR(200)), and the longest detail or error text
# kept: `jobs.detail` is a TEXT, at most 65,535 bytes on MariaDB (4 a character at worst).
STAGE_MAX_CHARS = 200
TEXT_MAX_CHARS = 10_000
# U+0000 as `json.dumps` writes it: `\u0000` after an even number of backslashes (`\\u0000` is a
# backslash followed by the text "u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

# Where an item sits: (its parent's place, its key or index); the root is (None, field).
_Place = tuple["_Place | None", object]


def refuse_nul(value: Any, field: str) -> None:
    """A 422 naming where `value` (JSON-like: dicts, lists, strings, in keys too) holds U+0000. PostgreSQL
    stores no NUL in text or jsonb: let through, it failed the whole group commit of a batch of jobs, every
    tenant's."""
    problem = nul_problem(value, field)
    if problem is not None:
        raise InvalidInput(f"{problem[0]}: {problem[1]}, which is not accepted", field=problem[0])


def nul_problem(value: Any, field: str) -> tuple[str, str] | None:
    """(where, what) of the first U+0000 in `value`, or None. Walked with a stack, not recursion, and the
    path built only for the item found, so the work is linear at any depth of nesting."""
    stack: list[tuple[_Place, Any]] = [((None, field), value)]
    while stack:
        place, item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return _where(place), "holds the character U+0000 (NUL)"
        elif isinstance(item, dict):
            for key, child in item.items():
                if NUL in str(key):
                    return _where(place), "has a key with the character U+0000 (NUL)"
                stack.append(((place, key), child))
        elif isinstance(item, list):
            stack.extend(((place, index), child) for index, child in enumerate(item))
    return None


def _where(place: _Place) -> str:
    parts: list[str] = []
    node: _Place | None = place
    while node is not None:
        node, key = node
        parts.append(str(key))
    return ".".join(reversed(parts))


# One encoder: `json.dumps` with any argument of its own builds an encoder per call, which cost a no-op
# job's result check ~5 µs of its worker's ~100.
_STRICT_JSON = json.JSONEncoder(allow_nan=False)


def _strict_json_encoder() -> Callable[[Any], str]:
    """`_STRICT_JSON.encode` with its C encoder made once (`encode` makes one per call, ~1 µs of a no-op job's
    result check), where the C accelerator is there. It keeps no record of the containers it is inside:
    a circular value recurses until RecursionError, as a value nested too deeply does."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _STRICT_JSON.encode
    iterencode = make(
        None, _STRICT_JSON.default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, False
    )
    return lambda value: "".join(iterencode(value, 0))


_strict_json = _strict_json_encoder()


def unstorable(value: Any, field: str, *, max_bytes: int | None = None) -> str | None:
    """Why a job's `value` (its result, a checkpoint) cannot be stored as JSON on both engines, naming
    where; None if it can. Serialized once (C speed) to find NaN, infinities, what is not JSON, U+0000,
    which PostgreSQL's jsonb refuses, and (with `max_bytes`, the database's bound: `JobStore.json_limit_bytes`)
    a size over it: written as they are, they fail the batched write of every job's outcome, and the job
    stays `running`. Walked again only to name the place of a NUL."""
    try:
        text = _strict_json(value)
    except RecursionError:
        return f"{field}: nested too deeply to store"
    except ValueError:
        return f"{field}: holds NaN or Infinity, which JSON cannot store"
    except TypeError as exc:
        return f"{field}: not JSON ({exc})"
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        where, what = nul_problem(value, field) or (field, "holds the character U+0000 (NUL)")
        return f"{where}: {what}, which cannot be stored"
    if max_bytes is not None and (size := quoted_size(text)) > max_bytes:
        return f"{field}: {size:,} bytes of JSON, over the {max_bytes:,} bytes the database stores in one job"
    return None


def quoted_size(text: str) -> int:
    """The bytes of JSON `text` (ASCII, as `json.dumps` writes it) as a quoted SQL string: MariaDB's driver
    sends it so, each quote and backslash escaped (it can double the size), and the server refuses a
    statement over its `max_allowed_packet`. Never less than the text's own size, which the other engines
    bound."""
    return len(text) + text.count("\\") + text.count('"') + text.count("'")


def shown_text(text: str, max_chars: int = TEXT_MAX_CHARS) -> str:
    """A text a job reports (a stage, a detail, an error's message) as it can be stored: U+0000 shown as
    U+FFFD, and cut to `max_chars` (ending in "…"). Longer, PostgreSQL and MariaDB refuse a stage, MariaDB a
    detail, and the refused write held every job's progress and outcomes written with it."""
    if NUL in text:
        text = text.replace(NUL, REPLACEMENT)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
