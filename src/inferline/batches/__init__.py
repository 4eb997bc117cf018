"""Bulk batches: the records of an uploaded JSONL or CSV file upserted as documents of a search collection,
keyed by their `custom_id`, by one `batch` job that checkpoints after every chunk of records.

Kinds: `batch`. Routes: `/api/v1/batches` (create, get, list, cancel, retry). Each record goes through
the search workload's own document upsert (`search.documents.add_document`: unchanged records cost
nothing, changed ones are ingested again); records that cannot be used go to the batch's error file.
"""
