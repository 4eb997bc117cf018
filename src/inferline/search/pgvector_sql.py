"""The SQL text the pgvector index writes (`pgvector.py`): tsvector and tsquery literals of our own tokens,
the keyword plan that bounds what a search ranks (from the table's term statistics), vector literals,
declared fields' expressions and filter trees with bound parameters. Every identifier that reaches SQL
text is checked against a closed pattern here; every value is bound or rendered by these functions."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any

from inferline.search.filters import And, FieldType, Filter, Not, Or, Range
from inferline.search.index import HEADING_WEIGHT, Vector

MAX_POSITION = 16383  # tsvector positions stop here
# ts_rank's weights of positions labelled D, C, B, A: the text at PostgreSQL's default for D (0.1), the
# heading path's tokens (A) HEADING_WEIGHT times that, as in the embedded index's BM25F (index.py).
RANK_WEIGHTS = f"'{{0.1, 0.2, 0.4, {0.1 * HEADING_WEIGHT:g}}}'::float4[]"
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def field_sql(name: str, kind: FieldType) -> str:
    """The SQL expression of a declared field; also the expression of its index."""
    if not _NAME.fullmatch(name):  # check_fields allows no other; it is written into SQL
        raise ValueError(f"not a field name: {name!r}")
    text = f"(metadata ->> '{name}')"
    if kind in (FieldType.INT, FieldType.FLOAT):
        return f"({text}::double precision)"
    if kind is FieldType.BOOL:
        return f"({text}::boolean)"
    return text  # keywords, and dates as normalized ISO 8601 UTC text, which sorts in time order


def tsvector(tokens: list[str], heading_tokens: int = 0) -> str:
    """The tsvector literal of a chunk's tokens: the heading path's at weight A, the text's at D
    (PostgreSQL's default, which every position of collections indexed before has)."""
    positions: dict[str, list[str]] = defaultdict(list)
    for position, token in enumerate(tokens, start=1):
        if position > MAX_POSITION:
            break
        positions[token].append(f"{position}A" if position <= heading_tokens else str(position))
    return " ".join(
        "'" + token.replace("\\", "\\\\").replace("'", "''") + "':" + ",".join(spots)
        for token, spots in positions.items()
    )


def lexeme(token: str) -> str:
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def tsquery(tokens: list[str]) -> str:
    return " | ".join(lexeme(t) for t in sorted(set(tokens)))


class TermStats:
    """How many rows of a keyword table hold each of its common lexemes, from `pg_stats` (the planner's own
    estimate); a lexeme not listed is rarer than every listed one."""

    def __init__(self, rows: float, frequencies: dict[str, float]) -> None:
        self.rows = rows
        self.frequencies = frequencies
        self.unlisted = min(frequencies.values(), default=0.0)
        self.read_at = time.monotonic()

    def estimate(self, term: str) -> float:
        return self.rows * self.frequencies.get(term, self.unlisted)


class KeywordPlan:
    """Which query terms are ranked exactly (rare: their rows fit the budget, rarest first) and which are
    common; with no statistics, or when every term fits, all are rare: every match is ranked."""

    def __init__(self, tokens: list[str], stats: TermStats, budget: float) -> None:
        terms = sorted(set(tokens))
        self.rare: list[str] = terms
        self.common: list[str] = []
        if stats.rows <= 0:
            return
        by_rows = sorted(terms, key=lambda term: (stats.estimate(term), term))
        taken = 0.0
        for i, term in enumerate(by_rows):
            taken += stats.estimate(term)
            if taken > budget:
                self.rare, self.common = sorted(by_rows[:i]), sorted(by_rows[i:])
                return

    def pairs(self) -> str:
        """Rows holding two or more of the common terms."""
        return " | ".join(
            f"({lexeme(a)} & {lexeme(b)})" for i, a in enumerate(self.common) for b in self.common[i + 1 :]
        )


def vector_text(vector: Vector) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


class FilterSql:
    """A filter tree as SQL with bound parameters. A condition under a `not` is `COALESCE(…, false)`, so that
    a row without the field is "not X"; elsewhere it is left bare, since a WHERE drops NULL as it drops
    false through AND and OR: bare, it is what an index predicate can match (`lang = 'ko'` lets the planner
    take a partial HNSW index `WHERE (metadata ->> 'lang') = 'ko'`; COALESCE hides it)."""

    def __init__(self, fields: dict[str, FieldType]) -> None:
        self.fields = fields
        self.params: dict[str, Any] = {}

    def _param(self, value: Any) -> str:
        name = f"f{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def build(self, flt: Filter, *, negated: bool = False) -> str:
        if isinstance(flt, And):
            return "(" + " AND ".join(self.build(item, negated=negated) for item in flt.items) + ")"
        if isinstance(flt, Or):
            return "(" + " OR ".join(self.build(item, negated=negated) for item in flt.items) + ")"
        if isinstance(flt, Not):
            return f"(NOT {self.build(flt.item, negated=True)})"
        expression = field_sql(flt.field, self.fields[flt.field])
        if isinstance(flt, Range):
            parts = [
                f"{expression} {op} {self._param(value)}"
                for op, value in ((">=", flt.gte), (">", flt.gt), ("<=", flt.lte), ("<", flt.lt))
                if value is not None
            ]
            condition = " AND ".join(parts)
        else:
            condition = f"{expression} IN ({', '.join(self._param(value) for value in flt.values)})"
        return f"COALESCE({condition}, false)" if negated else f"({condition})"
