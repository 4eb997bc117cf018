"""A batch as the use cases and the kind see it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inferline.clock import utcnow
from inferline.jobs.model import Job, JobStatus

# What the batch job writes in the `status` column as it goes; `canceling` and `canceled` (and `failed`
# when the job failed without writing it) are read from the job.
VALIDATING = "validating"
IN_PROGRESS = "in_progress"
FINALIZING = "finalizing"
COMPLETED = "completed"
FAILED = "failed"
CANCELING = "canceling"
CANCELED = "canceled"
DEFAULT_ID_FIELD = "custom_id"


@dataclass(frozen=True)
class Batch:
    id: str
    tenant: str
    collection: str
    input_file_id: str
    text_template: str | None
    id_field: str
    chunk_records: int
    retry_of: str | None
    status: str
    total: int | None
    completed: int
    failed: int
    output_file_id: str | None
    error_file_id: str | None
    error: str | None
    job_id: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None

    @classmethod
    def new(
        cls,
        *,
        id: str,
        tenant: str,
        collection: str,
        input_file_id: str,
        job_id: str,
        chunk_records: int,
        text_template: str | None = None,
        id_field: str = DEFAULT_ID_FIELD,
        retry_of: str | None = None,
        status: str = VALIDATING,
    ) -> Batch:
        """A batch about to start: nothing counted, no output yet."""
        now = utcnow()
        return cls(
            id=id,
            tenant=tenant,
            collection=collection,
            input_file_id=input_file_id,
            text_template=text_template,
            id_field=id_field,
            chunk_records=chunk_records,
            retry_of=retry_of,
            status=status,
            total=None,
            completed=0,
            failed=0,
            output_file_id=None,
            error_file_id=None,
            error=None,
            job_id=job_id,
            created_at=now,
            updated_at=now,
            completed_at=None,
        )

    def shown_status(self, job: Job | None) -> str:
        if job is None:
            return self.status
        if job.status is JobStatus.CANCELED:
            return CANCELED
        if job.status is JobStatus.FAILED:
            return FAILED
        if job.cancel_requested and not job.status.is_terminal:
            return CANCELING
        return self.status

    def is_finished(self, job: Job | None) -> bool:
        return self.shown_status(job) in (COMPLETED, FAILED, CANCELED)

    def public_view(self, job: Job | None) -> dict[str, Any]:
        error = self.error
        if error is None and job is not None and job.status is JobStatus.FAILED and isinstance(job.error, dict):
            error = job.error.get("message")
        return {
            "id": self.id,
            "object": "batch",
            "status": self.shown_status(job),
            "collection": self.collection,
            "input_file_id": self.input_file_id,
            "text_template": self.text_template,
            "id_field": self.id_field,
            "chunk_records": self.chunk_records,
            "retry_of": self.retry_of,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "error": error,
            "job_id": self.job_id,
            "stage": job.stage if job is not None else None,
            "progress": job.progress if job is not None else None,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
        }
