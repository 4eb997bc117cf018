"""Bulk batches: the records of an uploaded JSONL, CSV or Parquet file upserted as documents of a search collection,
keyed by their `custom_id`, by one `batch` job that checkpoints after every chunk of records.

Kinds: `batch`, and `scheduled_batch` (`scheduled.py`: what a cron schedule queues to make batches of a
file or of the new files of an operator's drop folder, `drops.py`). Routes: `/api/v1/batches` (create,
get, list, cancel, retry). Input readers: `records.py` (JSONL, CSV), `parquet.py`. The batch job upserts a
chunk of records at a time in bulk (`upsert.py`: unchanged records cost nothing, changed ones' chunks are
replaced; chunk → embed → index through `search/indexing.py`, the ingest's own path); records that cannot
be used go to the batch's error file.
"""
