"""The scale-out index: PostgreSQL with pgvector (0.8+), one table of chunks per collection.

- Dense vectors in a `vector(dim)` column with an HNSW index (cosine). Filtered queries run with
  `hnsw.iterative_scan = relaxed_order`: without it the index hands back its `ef_search` nearest rows
  and the filter then drops most of them (a filtered top-10 returned ~4 rows in the issue's
  measurement); with it the scan continues until enough rows pass. Results are re-sorted by distance,
  since relaxed order may be slightly out of order.
- Keywords: a `tsvector` built from *our* tokens (Kiwi for Korean; `tokens.py`), written as a tsvector
  literal so PostgreSQL's own parser never splits them again, with a GIN index; ranked by `ts_rank`,
  which reads every matching row. So the tsvectors live in a narrow table of their own (id, document,
  metadata, tokens) beside the chunks: at 100k chunks a keyword top-200 read ~2 KB chunk rows (text and
  vector) for its ~11k matches, p50 38 / p95 102 ms; from the narrow table 14 / 39 ms.
  What is ranked is bounded (`pgvector_sql.KeywordPlan`): a query with common words ("in", "the", "파일") would read
  and rank every row holding one of them. The table's own statistics (`pg_stats`, which ANALYZE and
  autovacuum keep) say how many rows each query term matches; terms are taken rarest first while their
  rows fit `KEYWORD_BUDGET`, and every row with one of those is ranked. Of the rows matching only the
  other (common) terms, those with two or more of them (which outrank a row with one rare term: ts_rank
  has no IDF) are ranked up to the budget, and those with one only fill the list up to the limit.
  Below the budget (small collections, rare words, a table not yet analyzed) the ranking is exact.
- Metadata in JSONB; each declared field gets an expression index matching the filter expressions
  below. Conditions under a `not` are `COALESCE(…, false)` so that `not` matches rows without the field,
  as in Qdrant; the others are bare, so that a partial index's predicate can match them (`pgvector_sql.FilterSql`).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from inferline.errors import NotFound
from inferline.search import pgvector_sql as sql
from inferline.search.filters import Filter
from inferline.search.index import Candidate, ChunkRecord, IndexSpec, StoredChunk, Vector

UNDEFINED_TABLE = "42P01"
EF_SEARCH = 100
# Rows of the keyword table a search ranks in full (estimated from the table's statistics): at 100k bench
# chunks, 2,000 took the keyword p95 from ~100 to ~33 ms with 99% of the top-10 ranks unchanged
# (docs/benchmarks.md, session 15).
KEYWORD_BUDGET = 2000
STATS_TTL_S = 60.0  # how long a collection's term statistics (or their absence) are reused: one read a minute
_ID = re.compile(r"^[0-9a-f-]{36}$")


def _table(collection_id: str) -> str:
    if not _ID.fullmatch(collection_id):  # it becomes part of an identifier: nothing else gets through
        raise ValueError(f"not a collection id: {collection_id!r}")
    return "search_chunks_" + collection_id.replace("-", "")


def _keyword_table(collection_id: str) -> str:
    return "search_keywords_" + _table(collection_id).removeprefix("search_chunks_")


class PgVectorIndex:
    def __init__(self, url: str) -> None:
        if url.startswith("postgresql://"):
            url = "postgresql+asyncpg://" + url.removeprefix("postgresql://")
        self.engine: AsyncEngine = create_async_engine(url, pool_size=5, max_overflow=5)
        self._ready = False
        self._current: set[str] = set()  # collections known to have the current layout
        self._term_stats: dict[str, sql.TermStats] = {}  # collection id -> its keyword statistics

    async def _connect_ready(self) -> None:
        if not self._ready:
            async with self.engine.begin() as conn:
                await conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
            self._ready = True

    @asynccontextmanager
    async def _tables(self, *, begin: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection for a collection's tables; a table dropped with its collection (a search that read
        the collection just before the delete) is NotFound, as in the embedded index."""
        try:
            async with self.engine.begin() if begin else self.engine.connect() as conn:
                yield conn
        except sa.exc.ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) == UNDEFINED_TABLE:
                raise NotFound("the collection was deleted") from exc
            raise

    async def create(self, spec: IndexSpec) -> None:
        await self._connect_ready()
        table = _table(spec.collection_id)
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    f"CREATE TABLE IF NOT EXISTS {table} ("
                    "id uuid PRIMARY KEY, document_id text NOT NULL, idx integer NOT NULL, text text NOT NULL, "
                    "heading text NOT NULL, page integer, metadata jsonb NOT NULL, "
                    f"embedding vector({int(spec.dim)}) NOT NULL)"
                )
            )
            await conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {table}_doc ON {table} (document_id)"))
            await conn.execute(
                sa.text(f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops)")
            )
            for i, (name, kind) in enumerate(sorted(spec.fields.items())):
                await conn.execute(
                    sa.text(f"CREATE INDEX IF NOT EXISTS {table}_f{i} ON {table} ({sql.field_sql(name, kind)})")
                )
            await _create_keyword_table(conn, spec.collection_id)
        self._current.add(spec.collection_id)

    async def _upgraded(self, collection_id: str) -> None:
        """Collections made before the keyword table existed (their chunk rows carried the tsvector) get
        one, filled from those rows, on first use in this process; the chunk table then drops the column."""
        if collection_id in self._current:
            return
        table = _table(collection_id)
        async with self.engine.begin() as conn:
            old_layout = (
                await conn.execute(
                    sa.text(
                        "SELECT 1 FROM information_schema.columns WHERE table_name = :t AND column_name = 'tokens'"
                    ),
                    {"t": table},
                )
            ).first()
            if old_layout:
                await conn.execute(sa.text(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))  # no writes meanwhile
                await _create_keyword_table(conn, collection_id)
                await conn.execute(
                    sa.text(
                        f"INSERT INTO {_keyword_table(collection_id)} (id, document_id, metadata, tokens) "
                        f"SELECT id, document_id, metadata, tokens FROM {table} ON CONFLICT (id) DO NOTHING"
                    )
                )
                await conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN tokens"))
        self._current.add(collection_id)

    async def drop(self, collection_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.text(f"DROP TABLE IF EXISTS {_table(collection_id)}, {_keyword_table(collection_id)}")
            )
        self._current.discard(collection_id)
        self._term_stats.pop(collection_id, None)

    async def upsert(self, spec: IndexSpec, records: list[ChunkRecord]) -> None:
        if not records:
            return
        await self._upgraded(spec.collection_id)
        table = _table(spec.collection_id)
        chunks = sa.text(
            f"INSERT INTO {table} (id, document_id, idx, text, heading, page, metadata, embedding) "
            "VALUES (CAST(:id AS uuid), :document_id, :idx, :text, :heading, :page, CAST(:metadata AS jsonb), "
            "CAST(:embedding AS vector)) "
            "ON CONFLICT (id) DO UPDATE SET document_id = EXCLUDED.document_id, idx = EXCLUDED.idx, "
            "text = EXCLUDED.text, heading = EXCLUDED.heading, page = EXCLUDED.page, metadata = EXCLUDED.metadata, "
            "embedding = EXCLUDED.embedding"
        )
        keywords = sa.text(
            f"INSERT INTO {_keyword_table(spec.collection_id)} (id, document_id, metadata, tokens) "
            "VALUES (CAST(:id AS uuid), :document_id, CAST(:metadata AS jsonb), CAST(:tokens AS tsvector)) "
            "ON CONFLICT (id) DO UPDATE SET document_id = EXCLUDED.document_id, metadata = EXCLUDED.metadata, "
            "tokens = EXCLUDED.tokens"
        )
        rows = [
            {
                "id": record.id,
                "document_id": record.document_id,
                "idx": record.index,
                "text": record.text,
                "heading": record.heading,
                "page": record.page,
                "metadata": json.dumps(record.metadata),
                "embedding": sql.vector_text(record.vector),
                "tokens": sql.tsvector(record.tokens, record.heading_tokens),
            }
            for record in records
        ]
        async with self._tables(begin=True) as conn:  # both tables in one transaction: never one without the other
            await conn.execute(chunks, rows)
            await conn.execute(
                keywords, [{k: row[k] for k in ("id", "document_id", "metadata", "tokens")} for row in rows]
            )

    async def delete_documents(self, collection_id: str, document_ids: Sequence[str]) -> None:
        if not document_ids:
            return
        await self._upgraded(collection_id)
        with contextlib.suppress(NotFound):  # nothing left to delete
            async with self._tables(begin=True) as conn:
                for table in (_table(collection_id), _keyword_table(collection_id)):
                    query = sa.text(f"DELETE FROM {table} WHERE document_id = ANY(CAST(:d AS text[]))")
                    await conn.execute(query, {"d": list(document_ids)})

    def _where(self, spec: IndexSpec, flt: Filter | None) -> tuple[str, dict[str, Any]]:
        if flt is None:
            return "", {}
        where = sql.FilterSql(spec.fields)
        return "WHERE " + where.build(flt), where.params

    async def semantic(
        self, spec: IndexSpec, vector: Vector, flt: Filter | None, limit: int, *, documents: bool = True
    ) -> list[Candidate]:
        where, params = self._where(spec, flt)
        query = sa.text(
            f"SELECT id::text AS id, document_id, embedding <=> CAST(:q AS vector) AS distance "
            f"FROM {_table(spec.collection_id)} {where} ORDER BY distance LIMIT :limit"
        )
        async with self._tables(begin=True) as conn:
            await _search_settings(conn, limit)
            rows = (await conn.execute(query, params | {"q": sql.vector_text(vector), "limit": limit})).all()
        ordered = sorted(rows, key=lambda row: (row.distance, row.id))  # relaxed order: re-sort exactly
        # The document id comes with the row at no cost; it is left out only to keep the port's contract.
        return [Candidate(row.id, row.document_id if documents else None, 1.0 - float(row.distance)) for row in ordered]

    async def keyword(
        self, spec: IndexSpec, tokens: list[str], flt: Filter | None, limit: int, *, documents: bool = True
    ) -> list[Candidate]:
        if not tokens:
            return []
        await self._upgraded(spec.collection_id)
        where, params = self._where(spec, flt)
        filtered = where.replace("WHERE ", "AND ", 1)
        table = _keyword_table(spec.collection_id)
        plan = sql.KeywordPlan(tokens, await self._stats(spec.collection_id), KEYWORD_BUDGET)
        # The rows to rank (module docstring): all with a rare term; capped, those with two common terms and
        # no rare one; and to fill the list, those with one common term only.
        columns = f"SELECT id, document_id, tokens FROM {table} WHERE"
        parts = []
        if plan.rare:
            parts.append(f"({columns} tokens @@ CAST(:rare AS tsquery) {filtered})")
        strong = " | ".join(q for q in (sql.tsquery(plan.rare) if plan.rare else "", plan.pairs()) if q)
        if plan.pairs():
            not_rare = "AND NOT tokens @@ CAST(:rare AS tsquery)" if plan.rare else ""
            parts.append(f"({columns} tokens @@ CAST(:pairs AS tsquery) {not_rare} {filtered} LIMIT :budget)")
        if plan.common:
            not_strong = "AND NOT tokens @@ CAST(:strong AS tsquery)" if strong else ""
            parts.append(f"({columns} tokens @@ CAST(:common AS tsquery) {not_strong} {filtered} LIMIT :budget)")
        query = sa.text(
            f"SELECT id::text AS id, document_id, ts_rank({sql.RANK_WEIGHTS}, tokens, CAST(:q AS tsquery), 1) AS rank "
            f"FROM ({' UNION ALL '.join(parts)}) AS matched ORDER BY rank DESC, id LIMIT :limit"
        )
        terms = {
            "q": sql.tsquery(tokens),
            "rare": sql.tsquery(plan.rare),
            "pairs": plan.pairs(),
            "strong": strong,
            "common": sql.tsquery(plan.common),
            "budget": KEYWORD_BUDGET,
            "limit": limit,
        }
        used = {name: value for name, value in terms.items() if f":{name}" in query.text}
        async with self._tables(begin=True) as conn:
            rows = (await conn.execute(query, params | used)).all()
        return [Candidate(row.id, row.document_id if documents else None, float(row.rank)) for row in rows]

    async def _stats(self, collection_id: str) -> sql.TermStats:
        """The keyword table's term statistics, read again after STATS_TTL_S; no rows while it has none (a
        table not yet analyzed: every match is ranked)."""
        stats = self._term_stats.get(collection_id)
        if stats is not None and time.monotonic() - stats.read_at < STATS_TTL_S:
            return stats
        query = sa.text(
            "SELECT c.reltuples, s.most_common_elems::text::text[] AS elems, s.most_common_elem_freqs AS freqs "
            "FROM pg_class c LEFT JOIN pg_stats s ON s.schemaname = current_schema() AND s.tablename = c.relname "
            "AND s.attname = 'tokens' WHERE c.relname = :t AND c.relnamespace = current_schema()::regnamespace"
        )
        async with self._tables() as conn:
            row = (await conn.execute(query, {"t": _keyword_table(collection_id)})).first()
        fresh = sql.TermStats(0.0, {})
        if row is not None and row.elems and row.reltuples > 0:
            # The frequencies list has the minimum and maximum (and for some types the nulls) after the
            # elements' own: zip stops at the elements.
            fresh = sql.TermStats(float(row.reltuples), dict(zip(row.elems, map(float, row.freqs), strict=False)))
        self._term_stats[collection_id] = fresh
        return fresh

    async def fetch(self, collection_id: str, chunk_ids: list[str]) -> dict[str, StoredChunk]:
        if not chunk_ids:
            return {}
        query = sa.text(
            f"SELECT id::text AS id, document_id, idx, text, heading, page, metadata "
            f"FROM {_table(collection_id)} WHERE id = ANY(CAST(:ids AS uuid[]))"
        )
        async with self._tables() as conn:
            rows = (await conn.execute(query, {"ids": chunk_ids})).mappings().all()
        return {
            row["id"]: StoredChunk(
                id=row["id"],
                document_id=row["document_id"],
                index=row["idx"],
                text=row["text"],
                heading=row["heading"],
                page=row["page"],
                metadata=row["metadata"] if isinstance(row["metadata"], dict) else json.loads(row["metadata"]),
            )
            for row in rows
        }

    async def document_vectors(self, collection_id: str, document_id: str) -> list[Vector]:
        query = sa.text(f"SELECT embedding::text AS e FROM {_table(collection_id)} WHERE document_id = :d ORDER BY idx")
        async with self._tables() as conn:
            rows = (await conn.execute(query, {"d": document_id})).all()
        return [np.asarray(json.loads(row.e), dtype=np.float32) for row in rows]

    async def count(self, collection_id: str) -> int:
        async with self._tables() as conn:
            return int((await conn.execute(sa.text(f"SELECT count(*) FROM {_table(collection_id)}"))).scalar_one())

    async def close(self) -> None:
        await self.engine.dispose()


async def _create_keyword_table(conn: AsyncConnection, collection_id: str) -> None:
    # No indexes on the declared fields here: a filter only rechecks the rows the GIN index matched.
    table = _keyword_table(collection_id)
    await conn.execute(
        sa.text(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            "id uuid PRIMARY KEY, document_id text NOT NULL, metadata jsonb NOT NULL, tokens tsvector NOT NULL)"
        )
    )
    await conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {table}_doc ON {table} (document_id)"))
    await conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {table}_tokens ON {table} USING gin (tokens)"))


async def _search_settings(conn: AsyncConnection, limit: int) -> None:
    """For this transaction: iterative scans (module docstring), `ef_search` for the limit, and a plan made
    for the filter's values, never a generic one: a partial index's predicate (`lang = 'ko'`) can only be
    matched against values. One statement: each is a round trip."""
    settings = {
        "hnsw.iterative_scan": "relaxed_order",
        "hnsw.ef_search": str(max(EF_SEARCH, min(1000, int(limit)))),
        "plan_cache_mode": "force_custom_plan",
    }
    await conn.execute(
        sa.text("SELECT " + ", ".join(f"set_config('{name}', :s{i}, true)" for i, name in enumerate(settings))),
        {f"s{i}": value for i, value in enumerate(settings.values())},
    )
