"""A media project and its assets, as the use cases and the stages see them: plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from inferline.jobs.model import Job

# What a project's own writes set in its `status` column; once it has run, the status shown is its
# active job's (queued, running, succeeded, failed, canceled), which the job core keeps.
DRAFT = "draft"
SUBMITTED = "submitted"


class AssetKind(StrEnum):
    IMAGE = "image"
    AUDIO = "audio"


@dataclass(frozen=True)
class Project:
    id: str
    tenant: str
    name: str
    title: str | None
    subtitle: str | None
    settings: dict[str, Any]
    status: str
    active_job_id: str | None
    video_file_id: str | None
    poster_file_id: str | None
    created_at: datetime
    updated_at: datetime

    def public_view(self, job: Job | None) -> dict[str, Any]:
        """The project with the status derived from its active job (`job`, read with it)."""
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title,
            "subtitle": self.subtitle,
            "settings": self.settings,
            "status": job.status.value if job is not None else self.status,
            "active_job": _job_summary(job),
            "video_file_id": self.video_file_id,
            "poster_file_id": self.poster_file_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _job_summary(job: Job | None) -> dict[str, Any] | None:
    if job is None:
        return None
    return {
        "id": job.id,
        "status": job.status.value,
        "stage": job.stage,
        "progress": job.progress,
        "detail": job.detail,
        "cancel_requested": job.cancel_requested,
    }


def is_running(job: Job | None) -> bool:
    """A project with this active job may not run again, nor change its assets, until the job ends."""
    return job is not None and not job.status.is_terminal


@dataclass(frozen=True)
class Asset:
    id: str
    project_id: str
    tenant: str
    file_id: str
    kind: AssetKind
    position: int
    caption: str | None
    duration_s: float | None
    width: int | None
    height: int | None
    created_at: datetime

    def public_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project_id": self.project_id,
            "file_id": self.file_id,
            "kind": self.kind.value,
            "position": self.position,
            "caption": self.caption,
            "duration_s": self.duration_s,
            "width": self.width,
            "height": self.height,
            "created_at": self.created_at.isoformat(),
        }
