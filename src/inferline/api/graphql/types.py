"""The GraphQL types: views of the domain's dataclasses (the fields the REST views show, in camelCase),
and the resolvers of the fields that lead to more (a hit's document, a document's similar ones, a
document's or batch's job). Every resolver calls the use case its REST route calls."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from inferline.api.graphql.context import Info
from inferline.api.graphql.limits import MAX_LIMIT
from inferline.batches.model import Batch
from inferline.errors import InvalidInput, NotFound
from inferline.jobs import service as jobs_service
from inferline.jobs.model import Job, JobStatus
from inferline.search import query
from inferline.search.model import Document, DocumentStatus

# The domain's own enums: one list of statuses (GraphQL names them by their members: QUEUED, READY).
strawberry.enum(JobStatus, description="a job's status")
strawberry.enum(DocumentStatus, description="a document's ingest status")


@strawberry.enum(description="how a search ranks: both lists fused (RRF), embeddings only, or keywords only")
class SearchMode(Enum):
    HYBRID = "hybrid"
    SEMANTIC = "semantic"
    KEYWORD = "keyword"


@strawberry.enum(description="a batch's status, as `GET /api/v1/batches/{id}` shows it")
class BatchStatus(Enum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELING = "canceling"
    CANCELED = "canceled"


def bounded_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: 1 to {MAX_LIMIT}", field="limit")
    return limit


@strawberry.type(name="Job", description="A durable job (`GET /api/v1/jobs/{id}`).")
class JobOut:
    id: strawberry.ID
    kind: str
    status: JobStatus
    stage: str | None
    progress: float
    detail: str | None
    attempts: int
    max_attempts: int
    priority: int
    input: JSON
    result: JSON | None
    error: JSON | None
    cancel_requested: bool
    deadline_at: datetime | None
    webhook: str | None
    schedule_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    canceled_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=strawberry.ID(job.id),
            kind=job.kind,
            status=job.status,
            stage=job.stage,
            progress=job.progress,
            detail=job.detail,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            priority=job.priority,
            input=JSON(job.input),
            result=JSON(job.result) if job.result is not None else None,
            error=JSON(job.error) if job.error is not None else None,
            cancel_requested=job.cancel_requested,
            deadline_at=job.deadline_at,
            webhook=job.webhook,
            schedule_id=job.schedule_id,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            canceled_at=job.canceled_at,
            updated_at=job.updated_at,
        )


async def hit_document(root: SearchHitOut, info: Info) -> DocumentOut | None:
    found = await info.context.documents.load((root.collection, str(root.document_id)))
    return DocumentOut.of(found, root.collection) if found is not None else None


@strawberry.type(name="SearchHit", description="A chunk that matched, with its document's id and metadata.")
class SearchHitOut:
    document_id: strawberry.ID
    chunk_id: strawberry.ID
    score: float
    text: str
    heading: str
    page: int | None
    highlights: list[list[int]] = strawberry.field(description="[start, end) character spans of query tokens")
    metadata: JSON
    document: DocumentOut | None = strawberry.field(
        resolver=hit_document, description="The hit's document (null if it was deleted since the search was ranked)."
    )
    collection: strawberry.Private[str]

    @classmethod
    def of(cls, hit: dict[str, Any], collection: str) -> SearchHitOut:
        return cls(
            document_id=strawberry.ID(hit["document_id"]),
            chunk_id=strawberry.ID(hit["chunk_id"]),
            score=hit["score"],
            text=hit["text"],
            heading=hit["heading"],
            page=hit["page"],
            highlights=hit["highlights"],
            metadata=JSON(hit["metadata"]),
            collection=collection,
        )


@strawberry.type(name="SearchResult", description="One page of a search (`POST /collections/{c}/search`).")
class SearchResultOut:
    hits: list[SearchHitOut]
    total: int = strawberry.field(description="hits in the ranked list (up to the search window)")
    next_cursor: str | None = strawberry.field(description="pass as `after` for the next page; null on the last")
    took_ms: float
    cached: bool

    @classmethod
    def of(cls, result: dict[str, Any], collection: str) -> SearchResultOut:
        return cls(
            hits=[SearchHitOut.of(hit, collection) for hit in result["hits"]],
            total=result["total"],
            next_cursor=result["next_cursor"],
            took_ms=result["took_ms"],
            cached=result["cached"],
        )


@strawberry.type(name="SimilarResult", description="The documents nearest to one, best chunk each.")
class SimilarResultOut:
    hits: list[SearchHitOut]
    took_ms: float
    cached: bool


async def similar_documents(root: DocumentOut, info: Info, limit: int = 10) -> SimilarResultOut | None:
    context = info.context
    found = await query.similar(
        context.services.search,
        tenant=context.tenant,
        name=root.collection,
        document_id=str(root.id),
        limit=bounded_limit(limit),
    )
    hits = [SearchHitOut.of(hit, root.collection) for hit in found["hits"]]
    return SimilarResultOut(hits=hits, took_ms=found["took_ms"], cached=found["cached"])


async def document_job(root: DocumentOut, info: Info) -> JobOut | None:
    """The job that last indexed the document; null once that job has been deleted by the retention of
    ended jobs (the document's status is its own)."""
    if root.job_id is None:
        return None
    context = info.context
    try:
        job = await jobs_service.get_job(context.services.engine, tenant=context.tenant, job_id=root.job_id)
    except NotFound:
        return None
    return JobOut.of(job)


@strawberry.type(name="Document", description="A document of a collection and its ingest status.")
class DocumentOut:
    id: strawberry.ID
    external_id: str | None
    sha256: str
    file_id: str | None  # None: a batch record's document (its text lives in its chunks)
    filename: str | None
    content_type: str
    metadata: JSON
    status: DocumentStatus
    job_id: str | None
    chunks: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    similar: SimilarResultOut | None = strawberry.field(
        resolver=similar_documents, description="More like this: the nearest other documents (cached like a search)."
    )
    job: JobOut | None = strawberry.field(resolver=document_job, description="The job of the document's latest ingest.")
    collection: strawberry.Private[str]

    @classmethod
    def of(cls, document: Document, collection: str) -> DocumentOut:
        return cls(
            id=strawberry.ID(document.id),
            external_id=document.external_id,
            sha256=document.sha256,
            file_id=document.file_id,
            filename=document.filename,
            content_type=document.content_type,
            metadata=JSON(document.metadata),
            status=DocumentStatus(document.status),
            job_id=document.job_id,
            chunks=document.chunks,
            error=document.error,
            created_at=document.created_at,
            updated_at=document.updated_at,
            collection=collection,
        )


@strawberry.type(name="CollectionField", description="A metadata field that filters may use.")
class CollectionFieldOut:
    name: str
    type: str = strawberry.field(description="keyword, int, float, bool or date")


@strawberry.type(name="Collection", description="A search collection (`GET /api/v1/collections`).")
class CollectionOut:
    id: strawberry.ID
    name: str
    fields: list[CollectionFieldOut]
    embedding_model: str
    dim: int
    chunk_tokens: int
    overlap_tokens: int
    version: int = strawberry.field(description="goes up with every change to what the collection holds")
    document_count: int
    created_at: datetime

    @classmethod
    def of(cls, view: dict[str, Any]) -> CollectionOut:
        """From the collection's public view, as the REST list shows it."""
        return cls(
            id=strawberry.ID(view["id"]),
            name=view["name"],
            fields=[CollectionFieldOut(name=name, type=kind) for name, kind in view["fields"].items()],
            embedding_model=view["embedding_model"],
            dim=view["dim"],
            chunk_tokens=view["chunk_tokens"],
            overlap_tokens=view["overlap_tokens"],
            version=view["version"],
            document_count=view["document_count"],
            created_at=datetime.fromisoformat(view["created_at"]),
        )


@strawberry.type(name="RequestCounts", description="A batch's records: all, done, and failed.")
class RequestCountsOut:
    total: int | None = strawberry.field(description="null until the input has been read")
    completed: int
    failed: int


@strawberry.type(name="Batch", description="A bulk batch of records into a collection (`/api/v1/batches`).")
class BatchOut:
    id: strawberry.ID
    status: BatchStatus
    collection: str
    input_file_id: str
    text_template: str | None
    id_field: str
    chunk_records: int
    retry_of: str | None
    request_counts: RequestCountsOut
    output_file_id: str | None
    error_file_id: str | None
    error: str | None
    job_id: str
    stage: str | None
    progress: float | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    job: JobOut | None = strawberry.field(description="The job that runs the batch.")

    @classmethod
    def of(cls, batch: Batch, job: Job | None) -> BatchOut:
        view = batch.public_view(job)  # the shown status and error, as REST shows them
        return cls(
            id=strawberry.ID(batch.id),
            status=BatchStatus(view["status"]),
            collection=batch.collection,
            input_file_id=batch.input_file_id,
            text_template=batch.text_template,
            id_field=batch.id_field,
            chunk_records=batch.chunk_records,
            retry_of=batch.retry_of,
            request_counts=RequestCountsOut(total=batch.total, completed=batch.completed, failed=batch.failed),
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            error=view["error"],
            job_id=batch.job_id,
            stage=view["stage"],
            progress=view["progress"],
            created_at=batch.created_at,
            updated_at=batch.updated_at,
            completed_at=batch.completed_at,
            job=JobOut.of(job) if job is not None else None,
        )


@strawberry.input(description="`POST /api/v1/batches`'s body.")
class CreateBatchInput:
    input_file_id: strawberry.ID
    collection: str
    text_template: str | None = strawberry.field(default=None, description='e.g. "{title}\\n{body}"')
    id_field: str | None = strawberry.field(default=None, description="the records' id field (custom_id)")
    chunk_records: int | None = strawberry.field(default=None, description="records between checkpoints")
    webhook: str | None = strawberry.field(default=None, description="receives `batch.completed`")


# The REST body's field -> the GraphQL argument, for errors that name one.
SEARCH_ARGUMENTS = {"cursor": "after", "group_by_document": "groupByDocument"}
BATCH_ARGUMENTS = {
    name: "input." + camel
    for name, camel in {
        "input_file_id": "inputFileId",
        "collection": "collection",
        "text_template": "textTemplate",
        "id_field": "idField",
        "chunk_records": "chunkRecords",
        "webhook": "webhook",
    }.items()
}
