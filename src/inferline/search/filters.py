"""Collection fields, metadata checked against them, and search filters parsed into a small tree that
each index adapter translates (Qdrant conditions, SQL).

Filter syntax (JSON): `{"lang": "ko"}`, `{"lang": {"in": ["ko", "en"]}}`, `{"year": {"gte": 2020, "lte":
2024}}`, `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}`; several keys in one object all apply (and).
Only declared fields can be filtered: anything else is an `InvalidInput` naming it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from inferline.errors import InvalidInput
from inferline.jsonvalues import INT64_MAX, INT64_MIN


class FieldType(StrEnum):
    KEYWORD = "keyword"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATE = "date"


MAX_FILTER_DEPTH = 8
MAX_IN_VALUES = 1000
# Keys and values of a whole filter: each becomes a bound parameter on pgvector (at most 65,535 in one
# statement) or a clause Qdrant evaluates per point, and `and`/`or` lists have no length of their own.
MAX_FILTER_TERMS = 2000
RANGE_OPS = ("gte", "gt", "lte", "lt")


@dataclass(frozen=True)
class Match:
    field: str
    values: tuple[Any, ...]  # any of these (one value: equality)


@dataclass(frozen=True)
class Range:
    field: str
    gte: Any = None
    gt: Any = None
    lte: Any = None
    lt: Any = None


@dataclass(frozen=True)
class And:
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    item: Filter


Filter = Match | Range | And | Or | Not


def to_date(value: Any, where: str) -> str:
    """A date or date-time as ISO 8601 UTC text, the form both backends compare correctly."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            # Moving "9999-12-31T23:00-05:00" to UTC leaves the years datetime can hold: OverflowError.
            return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (ValueError, OverflowError) as exc:
            raise InvalidInput(
                f"{where}: {value[:100]!r} is not an ISO 8601 date in years 1-9999", field=where
            ) from exc
    raise InvalidInput(f'{where}: a date must be ISO 8601 text, e.g. "2024-05-01"', field=where)


def coerce(kind: FieldType, value: Any, where: str) -> Any:
    """`value` as the field's type; bools are not ints here, and ints are accepted as floats. Numbers are
    what both backends store: ints of 64 bits, finite floats."""
    if kind is FieldType.KEYWORD and isinstance(value, str) and 0 < len(value) <= 1000:
        return value
    if kind is FieldType.INT and isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInput(f"{where}: integer out of the signed 64-bit range", field=where)
        return value
    if kind is FieldType.FLOAT and isinstance(value, int | float) and not isinstance(value, bool):
        return _finite(value, where)
    if kind is FieldType.BOOL and isinstance(value, bool):
        return value
    if kind is FieldType.DATE:
        return to_date(value, where)
    raise InvalidInput(f"{where}: expected {kind.value}, got {_shown(value)}", field=where)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:100] + "…"


def _finite(value: int | float, where: str) -> float:
    try:
        number = float(value)  # OverflowError for an int past 1.8e308
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidInput(f"{where}: a float must be finite", field=where)
    return number


def check_fields(fields: dict[str, str]) -> dict[str, FieldType]:
    checked: dict[str, FieldType] = {}
    for name, kind in fields.items():
        if not (0 < len(name) <= 64 and name.replace("_", "").isalnum() and name.isascii()):
            raise InvalidInput(f"fields: {name!r} is not a field name (letters, digits, _)", field=f"fields.{name}")
        if name in {"and", "or", "not"}:
            raise InvalidInput(f"fields: {name!r} is reserved for filters", field=f"fields.{name}")
        try:
            checked[name] = FieldType(kind)
        except ValueError as exc:
            allowed = ", ".join(t.value for t in FieldType)
            raise InvalidInput(f"fields.{name}: {kind!r} is not one of {allowed}", field=f"fields.{name}") from exc
    return checked


def check_metadata(fields: dict[str, FieldType], metadata: dict[str, Any]) -> dict[str, Any]:
    """The declared fields present in `metadata`, typed; undeclared keys are kept as they are (returned
    with hits, not filterable)."""
    checked = dict(metadata)
    for name, kind in fields.items():
        if metadata.get(name) is not None:
            checked[name] = coerce(kind, metadata[name], f"metadata.{name}")
    return checked


def parse_filter(fields: dict[str, FieldType], raw: Any) -> Filter | None:
    if _over_terms(raw, MAX_FILTER_TERMS):
        raise InvalidInput(f"filter: over {MAX_FILTER_TERMS} conditions and values in all", field="filter")
    return _parse(fields, raw, 0)


def _parse(fields: dict[str, FieldType], raw: Any, depth: int) -> Filter | None:
    if raw is None or raw == {}:
        return None
    if depth > MAX_FILTER_DEPTH:
        raise InvalidInput(f"filter: nested deeper than {MAX_FILTER_DEPTH}", field="filter")
    if not isinstance(raw, dict):
        raise InvalidInput("filter: must be an object", field="filter")
    parts: list[Filter] = []
    for key, value in raw.items():
        if key in ("and", "or"):
            if not isinstance(value, list) or not value:
                raise InvalidInput(f"filter.{key}: a non-empty list of filters", field=f"filter.{key}")
            items = tuple(item for item in (_parse(fields, v, depth + 1) for v in value) if item is not None)
            parts.append(And(items) if key == "and" else Or(items))
        elif key == "not":
            inner = _parse(fields, value, depth + 1)
            if inner is None:
                raise InvalidInput("filter.not: an empty filter", field="filter.not")
            parts.append(Not(inner))
        elif key in fields:
            parts.append(_condition(key, fields[key], value))
        else:
            declared = ", ".join(sorted(fields)) or "none"
            raise InvalidInput(
                f"filter: {key!r} is not a declared field of this collection (declared: {declared})",
                field=f"filter.{key}",
            )
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _over_terms(raw: Any, limit: int) -> bool:
    """Whether `raw` holds over `limit` keys and values (a walk that stops as soon as it is)."""
    seen, pending = 0, [raw]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            seen += len(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            seen += len(item)
            pending.extend(item)
        if seen > limit:
            return True
    return False


def _condition(name: str, kind: FieldType, value: Any) -> Filter:
    where = f"filter.{name}"
    if not isinstance(value, dict):
        return Match(name, (coerce(kind, value, where),))
    if set(value) == {"in"}:
        values = value["in"]
        if not isinstance(values, list) or not 0 < len(values) <= MAX_IN_VALUES:
            raise InvalidInput(f"{where}.in: a list of 1 to {MAX_IN_VALUES} values", field=where)
        return Match(name, tuple(coerce(kind, v, where) for v in values))
    unknown = set(value) - set(RANGE_OPS)
    if unknown or not value:
        raise InvalidInput(
            f"{where}: use a value, {{'in': [...]}} or gte/gt/lte/lt, not {sorted(unknown)}", field=where
        )
    if kind in (FieldType.KEYWORD, FieldType.BOOL):
        raise InvalidInput(f"{where}: ranges are for int, float and date fields", field=where)
    bounds = {op: coerce(kind, value[op], f"{where}.{op}") for op in RANGE_OPS if op in value}
    return Range(name, **bounds)
