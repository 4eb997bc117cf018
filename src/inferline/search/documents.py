"""Use cases of a collection's documents: add (each ingested by an `ingest` job), get, list and
delete."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline import db
from inferline.clock import utcnow
from inferline.errors import Conflict, InvalidInput, NotFound, UnsupportedMediaType
from inferline.files import sniff
from inferline.files.blobs import BlobStore
from inferline.files.service import FileInfo, insert_file, remove_blobs
from inferline.files.store import release_files
from inferline.ids import new_id
from inferline.inputs import refuse_unstorable_text
from inferline.jobs.store import JobStore
from inferline.jobs.submission import JobRequest, JobTransaction, Submitter
from inferline.search import kind
from inferline.search.collections import collection_named
from inferline.search.deps import SearchDeps
from inferline.search.extract import TEXT_TYPES
from inferline.search.filters import check_metadata
from inferline.search.model import Collection, Document, DocumentStatus
from inferline.search.store import SearchStore

INGESTIBLE = TEXT_TYPES | sniff.IMAGES | {sniff.PDF}
MAX_METADATA_BYTES = 64 * 1024


def check_document_input(metadata: Any, external_id: Any) -> tuple[dict[str, Any], str | None]:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata: must be a JSON object", field="metadata")
    if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata: over {MAX_METADATA_BYTES} bytes of JSON", field="metadata")
    if external_id is not None and (not isinstance(external_id, str) or not 0 < len(external_id) <= 500):
        raise InvalidInput("external_id: 1 to 500 characters", field="external_id")
    refuse_unstorable_text(metadata, "metadata")
    refuse_unstorable_text(external_id or "", "external_id")
    return metadata, external_id


async def add_document(
    submitter: Submitter,
    blobs: BlobStore,
    *,
    tenant: str,
    name: str,
    file: FileInfo,
    metadata: dict[str, Any],
    external_id: str | None,
) -> tuple[Collection, Document, bool]:
    """The document for this content or external id in collection `name`, queued for ingest unless it
    is already there with the same content and metadata. Returns its collection, it, and whether it was
    created (else updated or unchanged). `file` is written here, with the document, unless nothing
    changed (`files.receive_file` stored its bytes).

    One write transaction reads the collection and any document it would replace, and writes the
    file, the document and its ingest job: neither document nor job is ever there without the other,
    and a collection deleted meanwhile (by any process) is seen. The file a replaced document was made
    from goes, unless something else uses it: it counts toward the tenant's quota."""
    if file.content_type not in INGESTIBLE:
        raise UnsupportedMediaType(
            f"cannot ingest {file.content_type}: send PDF, PNG, JPEG, TIFF, WebP, BMP, text, Markdown, HTML or DOCX"
        )
    try:
        async with submitter.transaction() as tx:
            store = SearchStore(tx.conn)
            collection = await collection_named(store, tenant, name)
            checked = check_metadata(collection.fields, metadata)
            existing = await store.same_document(collection.id, external_id=external_id, sha256=file.sha256)
            if existing is not None and await _unchanged(tx.conn, existing, file, checked):
                return collection, existing, False
            document = await _queue(tx, store, collection, existing, file, checked, external_id)
            released = await release_files(tx.conn, tenant, _file_of(existing))
    except IntegrityError as exc:  # the same external_id sent twice at once
        raise Conflict(f"document with external_id {external_id!r} is being added by another request") from exc
    await remove_blobs(submitter.engine, blobs, released)
    return collection, document, existing is None


def _file_of(document: Document | None) -> list[str]:
    """The file a document was made from, if it has one (a batch's record has none)."""
    return [document.file_id] if document is not None and document.file_id is not None else []


async def _unchanged(conn: AsyncConnection, existing: Document, file: FileInfo, metadata: dict[str, Any]) -> bool:
    """Nothing to ingest again: the same content and metadata, and no failure to retry. A document still
    `queued` or `processing` is unchanged while the job that indexes it has not ended; one whose job ended
    without saying (canceled while queued, failed by the reaper after its worker died) is queued again."""
    if existing.sha256 != file.sha256 or existing.metadata != metadata or existing.status == DocumentStatus.FAILED:
        return False
    if existing.status == DocumentStatus.READY or existing.job_id is None:
        return True
    job = await JobStore(conn).get(existing.job_id)
    return job is not None and not job.status.is_terminal


async def _queue(
    tx: JobTransaction,
    store: SearchStore,
    collection: Collection,
    existing: Document | None,
    file: FileInfo,
    metadata: dict[str, Any],
    external_id: str | None,
) -> Document:
    """The new or replaced document, `queued`, written with its file and its ingest job."""
    now = utcnow()
    document_id = existing.id if existing is not None else new_id()
    job = await tx.add(
        JobRequest(kind=kind.KIND, input={"collection_id": collection.id, "document_id": document_id}),
        tenant=collection.tenant,
    )
    values: dict[str, Any] = {
        "sha256": file.sha256,
        "file_id": file.id,
        "filename": file.filename,
        "content_type": file.content_type,
        "metadata": metadata,
        "status": DocumentStatus.QUEUED,
        "job_id": job.id,
        "error": None,
        "updated_at": now,
    }
    await insert_file(tx.conn, file)
    if existing is not None:
        await store.update_document(document_id, values)
        return replace(existing, **values)
    values |= {"collection_id": collection.id, "tenant": collection.tenant, "external_id": external_id}
    values |= {"chunks": 0, "created_at": now}
    await store.add_document({"id": document_id, **values})
    return Document(id=document_id, **values)


async def get_document(deps: SearchDeps, *, collection: Collection, document_id: str) -> Document:
    async with db.read(deps.engine) as conn:
        document = await SearchStore(conn).document(collection.id, document_id)
    if document is None:
        raise NotFound(f"document {document_id} not found in collection {collection.name!r}")
    return document


async def get_documents(deps: SearchDeps, *, collection: Collection, document_ids: list[str]) -> dict[str, Document]:
    """The collection's documents among `document_ids`, by id: those that exist (a search hit's document
    may have been deleted since the hit was ranked)."""
    if not document_ids:
        return {}
    async with db.read(deps.engine) as conn:
        found = await SearchStore(conn).documents(collection.id, document_ids)
    return {document.id: document for document in found}


async def list_documents(
    deps: SearchDeps, *, collection: Collection, limit: int, cursor: str | None, status: str | None = None
) -> tuple[list[Document], str | None]:
    async with db.read(deps.engine) as conn:
        return await SearchStore(conn).page_documents(collection.id, status=status, limit=limit, cursor=cursor)


async def delete_document(deps: SearchDeps, *, collection: Collection, document_id: str) -> None:
    """The document, its chunks, and the file it was made from unless something else uses it. The row is
    read and deleted in one statement: an upload of the same document meanwhile either comes before (and
    its file is the one released) or after (and makes a new document)."""
    async with db.write(deps.engine) as conn:
        document = await SearchStore(conn).delete_document(collection.id, document_id)
        if document is None:
            raise NotFound(f"document {document_id} not found in collection {collection.name!r}")
        released = await release_files(conn, collection.tenant, _file_of(document))
    await remove_blobs(deps.engine, deps.blobs, released)
    await deps.index.delete_documents(collection.id, [document.id])
    async with db.write(deps.engine) as conn:
        await SearchStore(conn).advance_version(collection.id)
    deps.collection_cache.drop(collection.id)
