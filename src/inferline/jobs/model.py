"""The job domain: status, transitions and retry policy. No database or web imports here."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from inferline.clock import utcnow
from inferline.errors import InvalidTransition
from inferline.ids import new_id

JSON = dict[str, Any]


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


# The statuses no worker moves a job out of (a failed job leaves only by an explicit retry). Members are
# also str, so the set answers for status strings too: `job["status"] in TERMINAL_STATUSES`.
TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class WebhookEvent(StrEnum):
    START = "start"
    PROGRESS = "progress"
    COMPLETED = "completed"


def canceled_fields(reason: str, now: datetime) -> dict[str, Any]:
    """The fields of a job that ends canceled, whoever ends it: `Job.cancel` on a queued job, a worker
    whose attempt saw the request, the reaper for a lost lease or a passed deadline."""
    return {
        "status": JobStatus.CANCELED,
        "cancel_requested": True,
        "detail": reason,
        "canceled_at": now,
        "finished_at": now,
        "updated_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
    }


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    tenant: str
    status: JobStatus
    priority: int
    max_attempts: int
    input: JSON
    created_at: datetime
    updated_at: datetime
    run_after: datetime
    fair_seq: int = 0
    stage: str | None = None
    progress: float = 0.0
    detail: str | None = None
    attempts: int = 0
    result: JSON | None = None
    error: JSON | None = None
    checkpoint: JSON | None = None
    cancel_requested: bool = False
    deadline_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook: str | None = None
    webhook_events: list[str] = field(default_factory=list)
    schedule_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    canceled_at: datetime | None = None
    trace_parent: str | None = None  # the W3C traceparent of the span that submitted it (tracing.py)

    @classmethod
    def running_now(cls, *, kind: str, tenant: str, max_attempts: int = 3) -> Job:
        """A job in its first attempt, stored nowhere: for a kind's code run outside a worker (a test's
        `MemoryContext`, a record stream's upsert)."""
        now = utcnow()
        return cls(
            id=new_id(),
            kind=kind,
            tenant=tenant,
            status=JobStatus.RUNNING,
            priority=3,
            max_attempts=max_attempts,
            input={},
            created_at=now,
            updated_at=now,
            run_after=now,
            attempts=1,
            started_at=now,
        )

    def cancel(self, now: datetime, reason: str = "canceled") -> Job:
        """A queued job is canceled at once; a running one is asked to stop at its next check."""
        if self.status.is_terminal:
            raise InvalidTransition(f"job {self.id} is already {self.status}")
        if self.status is JobStatus.RUNNING:
            return replace(self, cancel_requested=True, updated_at=now)
        return replace(self, **canceled_fields(reason, now))

    def retry(self, now: datetime) -> Job:
        """Re-queue a failed job for a fresh set of attempts; its failure history is kept."""
        if self.status is not JobStatus.FAILED:
            raise InvalidTransition(f"only failed jobs can be retried; job {self.id} is {self.status}")
        return replace(
            self,
            status=JobStatus.QUEUED,
            attempts=0,
            run_after=now,
            finished_at=None,
            result=None,
            detail="retried",
            updated_at=now,
        )

    def again(self, now: datetime) -> Job:
        """A failed or canceled job queued for a fresh set of attempts: a parent's new attempt needs its
        child again (the tenant's own retry takes failed jobs only: `retry`)."""
        if self.status is JobStatus.FAILED:
            return self.retry(now)
        if self.status is not JobStatus.CANCELED:
            raise InvalidTransition(f"only failed or canceled jobs can run again; job {self.id} is {self.status}")
        canceled = replace(self, status=JobStatus.FAILED, cancel_requested=False, canceled_at=None)
        return replace(canceled.retry(now), detail="queued again")

    def deadline_passed(self, now: datetime) -> bool:
        return self.deadline_at is not None and now >= self.deadline_at

    def wants(self, event: WebhookEvent) -> bool:
        return self.webhook is not None and event.value in self.webhook_events


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 300.0

    def backoff_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random, so retries spread out
        but never come sooner than half the nominal delay."""
        nominal = min(self.cap_s, self.base_s * 2 ** max(attempt - 1, 0))
        return float(nominal * (0.5 + 0.5 * (rng or random).random()))


def error_entry(attempt: int, error_type: str, message: str, at: datetime) -> JSON:
    return {"attempt": attempt, "type": error_type, "message": message, "at": at.isoformat()}


def with_attempt_error(previous: JSON | None, entry: JSON) -> JSON:
    """The job's `error`: the latest type and message on top, the whole attempt history below."""
    history = list((previous or {}).get("attempts", []))
    history.append(entry)
    return {"type": entry["type"], "message": entry["message"], "attempts": history}


@dataclass(frozen=True)
class FailurePlan:
    status: JobStatus
    run_after: datetime | None
    error: JSON


def plan_failure(
    job: Job,
    *,
    error_type: str,
    message: str,
    retryable: bool,
    now: datetime,
    policy: RetryPolicy,
    after_s: float | None = None,
) -> FailurePlan:
    """What happens after an attempt fails: another attempt later, or `failed` for good."""
    error = with_attempt_error(job.error, error_entry(job.attempts, error_type, message, now))
    if not retryable or job.attempts >= job.max_attempts:
        return FailurePlan(JobStatus.FAILED, None, error)
    delay_s = after_s if after_s is not None else policy.backoff_s(job.attempts)
    return FailurePlan(JobStatus.QUEUED, now + timedelta(seconds=delay_s), error)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


_TIMES = ("deadline_at", "created_at", "started_at", "finished_at", "canceled_at", "updated_at")


def summary(job: Job) -> dict[str, Any]:
    """The job as its events show it: its state without its input, result and webhook (a consumer reads
    those from the API); datetimes as they are."""
    return {
        "id": job.id,
        "kind": job.kind,
        "tenant": job.tenant,
        "status": job.status.value,
        "stage": job.stage,
        "progress": job.progress,
        "detail": job.detail,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "schedule_id": job.schedule_id,
        "deadline_at": job.deadline_at,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "canceled_at": job.canceled_at,
        "updated_at": job.updated_at,
    }


def public_view(job: Job) -> JSON:
    """The job as users see it, in the API, the CLI and webhook payloads: its `summary`, with its input,
    result and webhook, datetimes in ISO 8601."""
    view: dict[str, Any] = summary(job)
    for name in _TIMES:
        view[name] = _iso(view[name])
    view |= {"input": job.input, "result": job.result, "webhook": job.webhook, "webhook_events": job.webhook_events}
    return view
