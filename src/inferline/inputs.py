"""Checks that what is stored can be stored alike on both engines: what a request asks to store
(`refuse_unstorable_text`), and what a job's code hands back (`unstorable`, `shown_text`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from inferline.errors import InvalidInput, has_lone_surrogate, sendable

NUL = "\x00"
REPLACEMENT = "\ufffd"
# The longest stage a job's row holds (`jobs.stage` is VARCHAR(200)), and the longest detail or error text
# kept: `jobs.detail` is a TEXT, at most 65,535 bytes on MariaDB (4 a character at worst).
STAGE_MAX_CHARS = 200
TEXT_MAX_CHARS = 10_000
# U+0000 as `json.dumps` writes it: `\u0000` after an even number of backslashes (`\\u0000` is a
# backslash followed by the text "u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# A surrogate as `json.dumps` escapes it, not in a pair (an emoji is a high one then a low one): found, the
# value is walked for the exact place (an escaped backslash before "ud800" makes a false find, no false miss).
_LONE_ESCAPE = re.compile(r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}")

# Where an item sits: (its parent's place, its key or index); the root is (None, field).
_Place = tuple["_Place | None", object]


def refuse_unstorable_text(value: Any, field: str) -> None:
    """A 422 naming where `value` (JSON-like: dicts, lists, strings, in keys too) holds U+0000 or a lone
    UTF-16 surrogate. PostgreSQL stores neither in text or jsonb: let through, one failed the whole group
    commit of a batch of jobs, every tenant's."""
    problem = nul_problem(value, field) or surrogate_problem(value, field)
    if problem is not None:
        raise InvalidInput(f"{problem[0]}: {problem[1]}, which is not accepted", field=problem[0])


def nul_problem(value: Any, field: str) -> tuple[str, str] | None:
    """(where, what) of the first U+0000 in `value`, or None."""
    return _text_problem(value, field, lambda text: NUL in text, "the character U+0000 (NUL)")


def surrogate_problem(value: Any, field: str) -> tuple[str, str] | None:
    """(where, what) of the first lone UTF-16 surrogate in `value`'s text, or None: Python keeps one in a str
    (from a JSON escape), but UTF-8, PostgreSQL's jsonb and the vector index refuse it."""
    return _text_problem(value, field, has_lone_surrogate, "a lone UTF-16 surrogate")


def _text_problem(value: Any, field: str, bad: Callable[[str], bool], what: str) -> tuple[str, str] | None:
    """(where, what) of the first text (a string, or a key) of `value` that is `bad`. Walked with a stack, not
    recursion, and the path built only for the item found, so the work is linear at any depth of nesting."""
    stack: list[tuple[_Place, Any]] = [((None, field), value)]
    while stack:
        place, item = stack.pop()
        if isinstance(item, str):
            if bad(item):
                return _where(place), f"holds {what}"
        elif isinstance(item, dict):
            for key, child in item.items():
                if bad(str(key)):
                    return _where(place), f"has a key with {what}"
                stack.append(((place, key), child))
        elif isinstance(item, list | tuple):
            stack.extend(((place, index), child) for index, child in enumerate(item))
    return None


def _where(place: _Place) -> str:
    parts: list[str] = []
    node: _Place | None = place
    while node is not None:
        node, key = node
        parts.append(sendable(str(key)))  # the error itself must be sendable
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
    if "\\ud" in text and _LONE_ESCAPE.search(text) and (found := surrogate_problem(value, field)) is not None:
        return f"{found[0]}: {found[1]}, which cannot be stored"
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
    """A text a job reports (a stage, a detail, an error's message) as it can be stored: U+0000 and lone
    UTF-16 surrogates shown as U+FFFD, and cut to `max_chars` (ending in "…"). Either, or a text longer,
    PostgreSQL refuses (MariaDB a longer detail too), and the refused write held every job's progress and
    outcomes written with it."""
    if NUL in text:
        text = text.replace(NUL, REPLACEMENT)
    text = sendable(text)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
