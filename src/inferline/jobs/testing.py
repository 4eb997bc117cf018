"""`MemoryContext`: a job context in memory, to unit-test a job kind without a worker or a database.

    from inferline.jobs.echo import EchoInput, echo
    from inferline.jobs.testing import MemoryContext

    async def test_echo_resumes_after_its_checkpoint() -> None:
        ctx = MemoryContext(last_checkpoint={"next_step": 1})
        result = await echo(ctx, EchoInput(message="hi", steps=3))
        assert result == {"message": "hi", "steps_run": [1, 2]}
        assert ctx.stages == ["step 2/3", "step 3/3"]
        assert ctx.checkpoints == [{"next_step": 2}, {"next_step": 3}]

`predict` runs through `models`: a `ModelRuntime` (`MemoryContext(models=runtime)`, the real batching and
models), or a dict of plain or async functions by model name (`models={"e5-small": lambda item: [0.0] * 384}`).
`to_thread` and `run_subprocess` are the worker's own.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from inferline.errors import InvalidInput, NonRetryable
from inferline.jobs.context import ContextBase
from inferline.jobs.model import JSON, Job


class Models(Protocol):
    """What `predict` needs of a model runtime (`inferline.inference.runtime.ModelRuntime` is one)."""

    async def predict(self, name: str, item: Any, tenant: str = "") -> Any: ...


# A model as a function of one item: returns its output, or an awaitable of it.
ModelFunction = Callable[[Any], Any]


class MemoryContext(ContextBase):
    """A `JobContext` that keeps in memory what the kind does with it.

    - `reports`: the values of each `stage`, `progress` and `checkpoint` call, in order, as the worker would
      write them (`{"stage": "embed", "detail": None}`, `{"progress": 50.0}`, `{"checkpoint": {...}}`);
      `stages`, `percents` and `checkpoints` pick from them, and `job` shows them applied, as its row would.
      A checkpoint is kept as it goes through JSON (what a later attempt gets), so one that JSON cannot hold
      fails here as it would in a worker.
    - `predictions`: `(model, item)` of each `predict` call.
    - `cancel(reason)`: from then on `raise_if_canceled()` raises `Canceled(reason)`. Unlike in a worker no
      task is cancelled: to test a kind torn down mid-`await`, run it in a task and cancel that.
    - `job`, `attempt`, `tenant` and `last_checkpoint` can be given, or set between calls (a retry: a new
      context with `attempt=2, last_checkpoint=...`). By default the job is a running one of kind "test" in
      tenant "test", on its first attempt.
    """

    def __init__(
        self,
        job: Job | None = None,
        *,
        attempt: int | None = None,
        tenant: str | None = None,
        last_checkpoint: JSON | None = None,
        models: Models | Mapping[str, ModelFunction] | None = None,
    ) -> None:
        job = job or _running_job()
        if attempt is not None:
            job = replace(job, attempts=attempt)
        if tenant is not None:
            job = replace(job, tenant=tenant)
        if last_checkpoint is not None:
            job = replace(job, checkpoint=last_checkpoint)
        super().__init__(job)
        self.models = models
        self.reports: list[dict[str, Any]] = []
        self.predictions: list[tuple[str, Any]] = []

    @property
    def attempt(self) -> int:
        return self.job.attempts

    @attempt.setter
    def attempt(self, value: int) -> None:
        self.job = replace(self.job, attempts=value)

    @property
    def tenant(self) -> str:
        return self.job.tenant

    @tenant.setter
    def tenant(self, value: str) -> None:
        self.job = replace(self.job, tenant=value)

    @property
    def stages(self) -> list[str]:
        return [values["stage"] for values in self.reports if "stage" in values]

    @property
    def percents(self) -> list[float]:
        return [values["progress"] for values in self.reports if "progress" in values]

    @property
    def checkpoints(self) -> list[JSON]:
        return [values["checkpoint"] for values in self.reports if "checkpoint" in values]

    def cancel(self, reason: str = "canceled") -> None:
        """The job is being stopped (a user's cancel; or "deadline", "lease lost", "shutdown")."""
        if self._cancel_reason is None:
            self._cancel_reason = reason

    async def predict(self, model: str, item: Any) -> Any:
        self.predictions.append((model, item))
        if self.models is None:
            raise NonRetryable(f"no model runtime in this context to run {model!r}")
        if not isinstance(self.models, Mapping):
            return await self.models.predict(model, item, self.tenant)
        function = self.models.get(model)
        if function is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise InvalidInput(f"unknown model {model!r} (known: {known})", field="model")
        output = function(item)
        return await output if inspect.isawaitable(output) else output

    async def _report(self, values: dict[str, Any], *, durable: bool) -> None:
        if "checkpoint" in values:
            values = values | {"checkpoint": json.loads(json.dumps(values["checkpoint"]))}
        self.reports.append(values)
        self.job = replace(self.job, **values)


def _running_job() -> Job:
    return Job.running_now(kind="test", tenant="test")
