-- A partial HNSW index for one value of a few-valued keyword field of one pgvector collection
-- (docs/search.md, "Filtered vector search on pgvector"). Not a migration: collection tables are made by
-- the pgvector adapter (search/pgvector.py), one per collection, named search_chunks_<collection id
-- without dashes>. Replace the table name, the field (`lang`) and the value (`ko`), and run it once per
-- value that filters pin often (psql: `\i deploy/pgvector/partial_hnsw_index.sql`, outside a transaction).
-- Measured (docs/benchmarks.md, issue 18 search side): 100k chunks, filter lang = 'ko' AND year >= 2010,
-- semantic top-200: p95 201-405 ms with the full index alone, 33-62 ms with this one (same run).
-- The planner takes it when the filter pins the field outside any "not" ({"lang": "ko"}, alone or in an
-- "and"); {"lang": {"in": [...]}} with several values, or an "or", needs an index each branch implies.
SET maintenance_work_mem = '1GB';
CREATE INDEX CONCURRENTLY IF NOT EXISTS search_chunks_0190f2c4e3b07d7a9c1e2f3a4b5c6d7e_lang_ko
    ON search_chunks_0190f2c4e3b07d7a9c1e2f3a4b5c6d7e USING hnsw (embedding vector_cosine_ops)
    WHERE (metadata ->> 'lang') = 'ko';
ANALYZE search_chunks_0190f2c4e3b07d7a9c1e2f3a4b5c6d7e;
