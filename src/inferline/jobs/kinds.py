"""The registry of job kinds: plain async functions registered under a name, with the formats their
results can be rendered in besides JSON (`GET /jobs/{id}/result?format=`): from the stored result
alone (`ResultRenderer(media_type, render)`), or from the job and what the kind holds (`render_job`:
the OCR kind's searchable PDF reads the job's input file).

registry = KindRegistry()

@registry.kind("resize", input_model=ResizeInput, renderers={"text": ResultRenderer("text/plain", to_text)})
async def resize(ctx: JobContext, data: ResizeInput) -> dict[str, Any]:
    await ctx.stage("load")
    ...
    return {"ok": True}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import BaseModel, ValidationError

from inferline.errors import InvalidInput
from inferline.files.refs import file_fields, named_files

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from inferline.jobs.context import JobContext
    from inferline.jobs.model import Job

JobFunc = Callable[["JobContext", Any], Awaitable[dict[str, Any] | None]]
# Runs in the transaction that puts a job of the kind in the queue, before its row is written: its insert,
# however it was submitted (a route of the workload's, `POST /jobs`, a schedule, a parent job), and a retry's
# requeue. The workload ties its own rows to the job there, or refuses the job by raising (nothing of it is
# written). Before the job's row: the workload's row is locked before the queue's lane rows, the order of a
# workload's own use case (`submitter.transaction()`), so the two never wait on each other.
QueueHook = Callable[["AsyncConnection", "Job"], Awaitable[None]]
JSON_FORMAT = "json"  # every kind's result, as stored


# A rendering: text, bytes, or an open file (a temporary one: sent from where it stands, then closed), for
# a rendering too large to hold in memory.
Rendering = str | bytes | BinaryIO


@dataclass(frozen=True)
class ResultRenderer:
    """One more format of a kind's result, sent with `media_type`: `render(result)`, from the stored result
    alone, or `render_job(job)` for a format that needs more (the kind's registration gives it what it
    needs; slow work it runs on a thread, not on the event loop)."""

    media_type: str
    render: Callable[[dict[str, Any]], str] | None = None
    render_job: Callable[[Job], Awaitable[Rendering]] | None = None

    def __post_init__(self) -> None:
        if (self.render is None) == (self.render_job is None):
            raise ValueError(f"a {self.media_type} renderer has one of render and render_job")

    async def rendering(self, job: Job) -> Rendering:
        """The succeeded `job`'s result in this format."""
        if self.render_job is not None:
            return await self.render_job(job)
        assert self.render is not None and job.result is not None
        return self.render(job.result)


@dataclass(frozen=True)
class JobKind:
    name: str
    func: JobFunc
    input_model: type[BaseModel] | None
    renderers: Mapping[str, ResultRenderer] = field(default_factory=dict)
    # A kind that waits for jobs it submits runs in a lane of slots of its own: holding one of the slots
    # its children need, it could wait forever (one slot, one pipeline).
    waits_on_jobs: bool = False
    on_queue: QueueHook | None = None

    @property
    def formats(self) -> list[str]:
        return [JSON_FORMAT, *sorted(self.renderers)]

    def renderer(self, fmt: str) -> ResultRenderer:
        """The renderer of a format other than JSON; a 422 names the formats this kind has."""
        try:
            return self.renderers[fmt]
        except KeyError:
            known = ", ".join(self.formats)
            raise InvalidInput(f"format {fmt} is not one of {self.name}'s: {known}", field="format") from None

    def file_ids(self, data: dict[str, Any]) -> list[str]:
        """The tenant files a validated input names (its `FileId` fields; `file_id` without a model)."""
        if self.input_model is None:
            return named_files(data)
        return named_files(data, file_fields(self.input_model))

    def parse(self, data: dict[str, Any]) -> Any:
        """Validated input for the function: a model instance, or the dict when no model is declared."""
        if self.input_model is None:
            return data
        return self.input_model.model_validate(data)


class KindRegistry:
    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def kind(
        self,
        name: str,
        *,
        input_model: type[BaseModel] | None = None,
        renderers: Mapping[str, ResultRenderer] | None = None,
        waits_on_jobs: bool = False,
        on_queue: QueueHook | None = None,
    ) -> Callable[[JobFunc], JobFunc]:
        def register(func: JobFunc) -> JobFunc:
            self.add(JobKind(name, func, input_model, dict(renderers or {}), waits_on_jobs, on_queue))
            return func

        return register

    def add(self, kind: JobKind) -> None:
        if JSON_FORMAT in kind.renderers:
            raise ValueError(f"job kind {kind.name!r}: results are JSON already; register other formats only")
        if kind.name in self._kinds:
            raise ValueError(f"job kind {kind.name!r} is registered twice")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> JobKind:
        try:
            return self._kinds[name]
        except KeyError:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise InvalidInput(f"unknown job kind {name!r} (known: {known})", field="kind") from None

    @property
    def names(self) -> list[str]:
        return sorted(self._kinds)

    def lane(self, *, waits_on_jobs: bool) -> list[str]:
        """The names of the kinds that wait on jobs they submit (the orchestration lane), or of the others."""
        return sorted(name for name, kind in self._kinds.items() if kind.waits_on_jobs == waits_on_jobs)

    async def queued(self, conn: AsyncConnection, job: Job) -> None:
        """`job`'s kind's `on_queue`, where it has one (a job about to be queued again: a retry's)."""
        hook = self.get(job.kind).on_queue
        if hook is not None:
            await hook(conn, job)

    def validate_input(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        """Check a submission's input against the kind's model; a 422 names the first bad field."""
        kind = self.get(name)
        try:
            parsed = kind.parse(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in ("input", *first["loc"]))
            raise InvalidInput(f"{where}: {first['msg']}", field=where) from exc
        return parsed.model_dump(mode="json") if isinstance(parsed, BaseModel) else parsed
