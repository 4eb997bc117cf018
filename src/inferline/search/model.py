"""The search domain: a collection, a document of it and the document's ingest status. No database or web
imports here.

A collection's `version` goes up with every change to what it holds (an ingest finishing, a document
deleted); searches are cached under it, so a cached result never outlives a change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from inferline.search.filters import FieldType
from inferline.search.index import IndexSpec


class DocumentStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class Collection:
    id: str
    tenant: str
    name: str
    fields: dict[str, FieldType]
    embedding_model: str
    dim: int
    chunk_tokens: int
    overlap_tokens: int
    version: int
    created_at: datetime

    @property
    def spec(self) -> IndexSpec:
        return IndexSpec(self.id, self.dim, self.fields, avg_chunk_tokens=self.chunk_tokens * 0.75)

    def public_view(self, document_count: int | None = None, by_status: dict[str, int] | None = None) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "fields": {name: kind.value for name, kind in self.fields.items()},
            "embedding_model": self.embedding_model,
            "dim": self.dim,
            "chunk_tokens": self.chunk_tokens,
            "overlap_tokens": self.overlap_tokens,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
        }
        if document_count is not None:
            view["document_count"] = document_count
        if by_status is not None:
            view["documents_by_status"] = by_status
        return view


@dataclass(frozen=True)
class Document:
    id: str
    collection_id: str
    tenant: str
    external_id: str | None
    sha256: str
    file_id: str | None  # None for a batch's record: its text lives in its chunks (docs/batches.md)
    filename: str | None
    content_type: str
    metadata: dict[str, Any]
    status: str
    job_id: str | None
    chunks: int
    error: str | None
    created_at: datetime
    updated_at: datetime

    def public_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "external_id": self.external_id,
            "sha256": self.sha256,
            "file_id": self.file_id,
            "filename": self.filename,
            "content_type": self.content_type,
            "metadata": self.metadata,
            "status": self.status,
            "job_id": self.job_id,
            "chunks": self.chunks,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }
