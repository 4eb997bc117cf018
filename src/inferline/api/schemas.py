"""Request and response bodies of the API (they also become the OpenAPI document)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, create_model

from inferline import jsonvalues
from inferline.inference.batching import ModelState
from inferline.inference.model import ProcessingMode
from inferline.jobs.schedules import Schedule
from inferline.jobs.submission import JobRequest
from inferline.search.model import Collection, Document, DocumentStatus

WebhookEventName = Literal["start", "progress", "completed"]
JobStatusName = Literal["queued", "running", "succeeded", "failed", "canceled"]


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=100, description="a registered job kind, e.g. `echo`")
    input: Annotated[dict[str, Any], jsonvalues.Bounded] = Field(
        default_factory=dict, description="the kind's input object"
    )
    priority: int = Field(default=3, ge=1, le=5, description="1 is highest, 5 lowest")
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    deadline_s: float | None = Field(default=None, gt=0, le=30 * 24 * 3600)
    webhook: AnyHttpUrl | None = None
    webhook_events: list[WebhookEventName] = Field(default_factory=list)

    def to_request(self) -> JobRequest:
        return JobRequest(
            kind=self.kind,
            input=self.input,
            priority=self.priority,
            max_attempts=self.max_attempts,
            deadline_s=self.deadline_s,
            webhook=str(self.webhook) if self.webhook else None,
            webhook_events=list(dict.fromkeys(self.webhook_events)),
        )


class JobOut(BaseModel):
    id: str
    kind: str
    tenant: str
    status: JobStatusName
    stage: str | None
    progress: float
    detail: str | None
    attempts: int
    max_attempts: int
    priority: int
    input: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None = Field(description="`{type, message, attempts: [...]}` after a failure")
    cancel_requested: bool
    deadline_at: datetime | None
    webhook: str | None
    webhook_events: list[str]
    schedule_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    canceled_at: datetime | None
    updated_at: datetime


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class ScheduleIn(JobIn):
    cron: str = Field(min_length=1, max_length=200, description="5-field cron expression, evaluated in UTC")
    name: str | None = Field(default=None, max_length=200)


def fields_of(source: type[Any], *, name: str, exclude: frozenset[str] = frozenset()) -> type[BaseModel]:
    """A model with the fields (names, types, order; all required) of a domain dataclass, less `exclude`."""
    hints = get_type_hints(source)
    definitions: dict[str, Any] = {
        f.name: (hints[f.name], ...) for f in dataclasses.fields(source) if f.name not in exclude
    }
    return create_model(name, **definitions)


# The tenant is the caller's own, so it is left out. mypy cannot follow a base class built at run time.
class ScheduleOut(fields_of(Schedule, name="ScheduleFields", exclude=frozenset({"tenant"}))):  # type: ignore[misc]
    pass


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None


# Bodies that routes write themselves (views of domain dataclasses, serialized once): documented through
# `responses=` rather than `response_model=`, so FastAPI does not validate them again on the hot paths.
# The fuzz test (tests/api/test_fuzz.py) checks every response against them.


class FileOut(BaseModel):
    id: str
    sha256: str
    size: int
    content_type: str = Field(description="sniffed from the content")
    filename: str | None
    created_at: datetime


class FilePage(BaseModel):
    items: list[FileOut]
    next_cursor: str | None


class CollectionOut(fields_of(Collection, name="CollectionFields", exclude=frozenset({"tenant"}))):  # type: ignore[misc]
    version: int = Field(description="goes up with every change to what the collection holds")
    document_count: int | None = Field(default=None, description="when read (not when created)")
    documents_by_status: dict[str, int] | None = Field(default=None, description="`GET /collections/{name}`")


class CollectionList(BaseModel):
    items: list[CollectionOut]


class DocumentOut(fields_of(Document, name="DocumentFields", exclude=frozenset({"tenant", "collection_id"}))):  # type: ignore[misc]
    status: DocumentStatus


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None


class SearchHit(BaseModel):
    document_id: str
    chunk_id: str
    score: float
    text: str
    heading: str
    page: int | None
    highlights: list[list[int]] = Field(description="[start, end) character spans of query tokens in `text`")
    metadata: dict[str, Any]


class SearchOut(BaseModel):
    hits: list[SearchHit]
    next_cursor: str | None
    total: int
    took_ms: float
    cached: bool


class SimilarOut(BaseModel):
    hits: list[SearchHit]
    took_ms: float
    cached: bool


class ModelOut(BaseModel):
    name: str
    device: str
    mode: ProcessingMode
    processes: int
    state: ModelState
    error: str | None
    max_batch_size: int
    max_wait_ms: float
    item_timeout_s: float | None = Field(
        default=None, description="how long its process may compute one item before it is killed; null: unbounded"
    )
    queued: int


class ModelList(BaseModel):
    device: str
    items: list[ModelOut]


class WebhookSecretOut(BaseModel):
    secret: str = Field(description="`whsec_…`: signs every delivery (Standard Webhooks)")


class JobRuntimeOut(BaseModel):
    """Where a running job is: its stage, progress and last detail, and whether it was asked to stop."""

    status: JobStatusName
    stage: str | None = Field(description="the kind's own stage names, e.g. `render_concat`")
    progress_percent: float
    detail_message: str | None
    cancel_requested: bool


class ActiveJobOut(BaseModel):
    id: str
    status: JobStatusName
    stage: str | None
    progress: float
    detail: str | None
    cancel_requested: bool


class ProjectOut(BaseModel):
    id: str
    name: str
    title: str | None
    subtitle: str | None
    settings: dict[str, Any] = Field(description="defaults of the project's runs (the run options given)")
    status: str = Field(description="`draft` before the first run; then the status of its latest run's job")
    active_job: ActiveJobOut | None = Field(description="the latest run's `pipeline` job")
    video_file_id: str | None
    poster_file_id: str | None
    created_at: datetime
    updated_at: datetime


class ProjectPage(BaseModel):
    items: list[ProjectOut]
    next_cursor: str | None


class AssetOut(BaseModel):
    id: str
    project_id: str
    file_id: str
    kind: Literal["image", "audio"]
    position: int = Field(description="0 is first, among the project's assets of the same kind")
    caption: str | None
    duration_s: float | None = Field(description="a photo's time on screen (set), or a song's length (measured)")
    width: int | None = Field(description="a photo's, as shown (after its EXIF orientation)")
    height: int | None
    created_at: datetime


class AssetList(BaseModel):
    items: list[AssetOut] = Field(description="photos in playing order, then songs")


class RequestCountsOut(BaseModel):
    total: int | None = Field(
        description="records in the input (or, for a retry, failed in the batch retried); null while validating"
    )
    completed: int = Field(description="records upserted as documents and indexed (unchanged ones included)")
    failed: int = Field(description="records in the error file")


class BatchOut(BaseModel):
    id: str
    object: Literal["batch"]
    status: Literal["validating", "in_progress", "finalizing", "completed", "failed", "canceling", "canceled"]
    collection: str
    input_file_id: str
    text_template: str | None
    id_field: str
    chunk_records: int
    retry_of: str | None = Field(description="the batch whose failed records this one retries")
    request_counts: RequestCountsOut
    output_file_id: str | None = Field(description="JSONL: custom_id, line, document_id of each record done")
    error_file_id: str | None = Field(description="JSONL: custom_id, line, error of each record that failed")
    error: str | None = Field(description="why the batch failed")
    job_id: str
    stage: str | None
    progress: float | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class BatchPage(BaseModel):
    items: list[BatchOut]
    next_cursor: str | None
