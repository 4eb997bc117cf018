"""Use cases of media projects: create, read, list, change and delete a project; run it (its `pipeline`
job) and cancel the run; its rendered video and poster. Assets are in `assets.py`.

A project runs one pipeline at a time: the run and the project's `active_job_id` are written in one
transaction that holds the project's row (`claim_project`, the pipeline kind's insert hook, so a pipeline
submitted through `POST /jobs` or a schedule is the project's run too), so two concurrent runs cannot both
start, and while the run's job has not ended the project refuses another run, changes to its assets, and
deletion (409).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline import db
from inferline.clock import utcnow
from inferline.errors import Conflict, InvalidInput, NotFound
from inferline.files.service import FileInfo, get_file, remove_blobs
from inferline.files.store import delete_file_rows
from inferline.ids import new_id
from inferline.jobs import service as jobs_service
from inferline.jobs.model import Job
from inferline.jobs.submission import JobRequest
from inferline.media.deps import MediaDeps
from inferline.media.model import DRAFT, SUBMITTED, AssetKind, Project, is_running
from inferline.media.options import PipelineInput, RunOptions
from inferline.media.store import MediaStore

PIPELINE = "pipeline"  # the kind of a project's run (media/kind.py registers it)


def plain_text(value: str) -> str:
    """Text that is drawn on a video or shown in a list: no control characters but line breaks."""
    if any(unicodedata.category(ch) == "Cc" and ch != "\n" for ch in value):
        raise ValueError("control characters (other than line breaks) are not allowed")
    return value


PlainText = Annotated[str, AfterValidator(plain_text)]


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PlainText = Field(min_length=1, max_length=200)
    title: PlainText | None = Field(default=None, min_length=1, max_length=100, description="on the closing card")
    subtitle: PlainText | None = Field(default=None, max_length=200, description="under the title, e.g. dates")
    settings: RunOptions | None = Field(default=None, description="defaults of the project's runs")


class ProjectPatch(BaseModel):
    """The fields given are changed; `null` clears `title` or `subtitle`."""

    model_config = ConfigDict(extra="forbid")

    name: PlainText | None = Field(default=None, min_length=1, max_length=200)
    title: PlainText | None = Field(default=None, min_length=1, max_length=100)
    subtitle: PlainText | None = Field(default=None, max_length=200)
    settings: RunOptions | None = None


def _settings(options: RunOptions | None) -> dict[str, Any]:
    """What was asked of the defaults, only: a run fills in the rest from `RunOptions` then."""
    return {} if options is None else options.model_dump(mode="json", exclude_unset=True)


async def create_project(deps: MediaDeps, *, tenant: str, data: ProjectIn) -> Project:
    now = utcnow()
    project = Project(
        id=new_id(),
        tenant=tenant,
        name=data.name,
        title=data.title,
        subtitle=data.subtitle,
        settings=_settings(data.settings),
        status=DRAFT,
        active_job_id=None,
        video_file_id=None,
        poster_file_id=None,
        created_at=now,
        updated_at=now,
    )
    async with db.write(deps.engine) as conn:
        await MediaStore(conn).add_project(project)
    return project


async def project_of(store: MediaStore, tenant: str, project_id: str, *, lock: bool = False) -> Project:
    """The tenant's project (another tenant's is not found, exactly like a missing one)."""
    project = await store.project(tenant, project_id, lock=lock)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project


async def project_for_change(store: MediaStore, tenant: str, project_id: str) -> Project:
    """The project, locked to the end of the transaction; 409 while its run has not ended."""
    project = await project_of(store, tenant, project_id, lock=True)
    job = (await store.jobs([project.active_job_id])).get(project.active_job_id or "")
    if is_running(job):
        assert job is not None
        raise Conflict(f"project {project.id} is running (job {job.id}, {job.status.value}); cancel it or wait")
    return project


async def get_project(deps: MediaDeps, *, tenant: str, project_id: str) -> tuple[Project, Job | None]:
    """The project and its active job (None before its first run)."""
    async with db.read(deps.engine) as conn:
        store = MediaStore(conn)
        project = await project_of(store, tenant, project_id)
        found = await store.jobs([project.active_job_id])
    return project, found.get(project.active_job_id or "")


async def list_projects(
    deps: MediaDeps, *, tenant: str, limit: int, cursor: str | None
) -> tuple[list[tuple[Project, Job | None]], str | None]:
    """One page of the tenant's projects, newest first, each with its active job."""
    async with db.read(deps.engine) as conn:
        store = MediaStore(conn)
        projects, next_cursor = await store.page_projects(tenant, limit=limit, cursor=cursor)
        found = await store.jobs(project.active_job_id for project in projects)
    return [(project, found.get(project.active_job_id or "")) for project in projects], next_cursor


async def update_project(
    deps: MediaDeps, *, tenant: str, project_id: str, data: ProjectPatch
) -> tuple[Project, Job | None]:
    values: dict[str, Any] = {name: getattr(data, name) for name in data.model_fields_set}
    if "name" in values and values["name"] is None:
        raise InvalidInput("name: a project keeps a name", field="name")
    if "settings" in values:
        values["settings"] = _settings(data.settings)
    async with db.write(deps.engine) as conn:
        store = MediaStore(conn)
        await project_of(store, tenant, project_id, lock=True)
        await store.update_project(project_id, values | {"updated_at": utcnow()})
    return await get_project(deps, tenant=tenant, project_id=project_id)


async def delete_project(deps: MediaDeps, *, tenant: str, project_id: str) -> None:
    """The project, its assets and their files, its video and poster; 409 while it runs."""
    async with db.write(deps.engine) as conn:
        store = MediaStore(conn)
        project = await project_for_change(store, tenant, project_id)
        file_ids = [asset.file_id for asset in await store.assets(project.id)]
        file_ids += [file_id for file_id in (project.video_file_id, project.poster_file_id) if file_id]
        await store.delete_project(project.id)
        released = await delete_file_rows(conn, tenant, file_ids)
    await remove_blobs(deps.engine, deps.blobs, released)


def run_options(project: Project, asked: dict[str, Any]) -> RunOptions:
    """The run's options: those asked, over the project's settings, over the defaults."""
    try:
        return RunOptions.model_validate(project.settings | asked)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']} (with the project's settings)", field=where) from exc


async def _music(store: MediaStore, project: Project, asked: str | None) -> str | None:
    """The song of a run: the audio asset asked for, or else the project's first."""
    songs = await store.assets(project.id, AssetKind.AUDIO)
    if asked is None:
        return songs[0].id if songs else None
    if asked not in {song.id for song in songs}:
        raise InvalidInput(f"music: {asked} is not an audio asset of project {project.id}", field="music")
    return asked


async def run_project(deps: MediaDeps, *, tenant: str, project_id: str, asked: dict[str, Any]) -> Job:
    """Queue the project's pipeline job (`asked`: the run options given, over the project's settings).
    409 while a run has not ended, or when the project has no photo."""
    async with deps.submitter.transaction() as tx:
        store = MediaStore(tx.conn)
        project = await project_for_change(store, tenant, project_id)
        options = run_options(project, asked)
        music = await _music(store, project, options.music)
        data = PipelineInput(**(options.model_dump() | {"music": music, "project_id": project.id}))
        return await tx.add(JobRequest(kind=PIPELINE, input=data.model_dump(mode="json")), tenant=tenant)


async def claim_project(conn: AsyncConnection, job: Job) -> None:
    """A pipeline job becomes its project's run in the transaction that inserts it, however it was
    submitted (`run_project`, `POST /jobs`, a schedule): 409 while another run has not ended or when the
    project has no photo; a project that is not the tenant's is a 422 on the job's input."""
    project_id = str(job.input["project_id"])
    store = MediaStore(conn)
    try:
        project = await project_for_change(store, job.tenant, project_id)
    except NotFound as exc:
        raise InvalidInput(f"input.project_id: {exc}", field="input.project_id") from None
    if not await store.assets(project.id, AssetKind.IMAGE):
        raise Conflict(f"project {project.id} has no photos yet: upload them as its assets first")
    values = {"active_job_id": job.id, "status": SUBMITTED, "updated_at": job.created_at}
    await store.update_project(project.id, values)


async def cancel_project(deps: MediaDeps, *, tenant: str, project_id: str) -> Job:
    """Cancel the project's run (the job core's cancel: a queued job at once, a running one at its next
    check); 409 when no run is going."""
    _, job = await get_project(deps, tenant=tenant, project_id=project_id)
    if not is_running(job):
        raise Conflict(f"project {project_id} has no run going to cancel")
    assert job is not None
    return await jobs_service.cancel_job(deps.engine, tenant=tenant, job_id=job.id)


async def project_output(
    deps: MediaDeps, *, tenant: str, project_id: str, which: Literal["video", "poster"]
) -> FileInfo:
    """The file of the project's rendered video or poster; 404 until it is rendered."""
    project, _ = await get_project(deps, tenant=tenant, project_id=project_id)
    file_id = project.video_file_id if which == "video" else project.poster_file_id
    if file_id is None:
        raise NotFound(f"project {project_id} has no {which} yet: run it")
    return await get_file(deps.engine, tenant=tenant, file_id=file_id)
