"""Search: collections of documents, extracted (OCR where needed), chunked, embedded and indexed, then
searched by meaning, by words (Korean-aware) or both, with filters over declared metadata fields.

Kind: `ingest` (`kind.py`: one document through extract → chunk → embed → index). Routes:
`/api/v1/collections` (collections; their documents; search; documents similar to one). Use cases:
`collections.py`, `documents.py`, `query.py`; SQL: `store.py`; this process's caches: `caches.py`; the
index port `index.py` and its adapters `qdrant.py` and `pgvector.py`; embedding models: `embedders.py`.
"""
