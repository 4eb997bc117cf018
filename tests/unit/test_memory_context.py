"""`MemoryContext` runs a job kind without a worker or a database (here the built-in `echo` kind)."""

from __future__ import annotations

import pytest
from tests.plugins.kinds import double, register_models

from inferline.errors import Canceled, InvalidInput, JobError, NonRetryable
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.context import JobContext
from inferline.jobs.echo import EchoInput, echo
from inferline.jobs.model import JSON
from inferline.jobs.testing import MemoryContext
from inferline.metrics import Metrics


async def test_an_echo_job_reports_its_stages_progress_and_checkpoints() -> None:
    ctx = MemoryContext()
    result = await echo(ctx, EchoInput(message="hello", steps=2))
    assert result == {"message": "hello", "steps_run": [0, 1]}
    assert ctx.stages == ["step 1/2", "step 2/2"]
    assert ctx.percents == [50.0, 100.0]
    assert ctx.checkpoints == [{"next_step": 1}, {"next_step": 2}]
    assert ctx.reports[0] == {"stage": "step 1/2", "detail": None}
    # The job shows what was reported, as its row would.
    assert ctx.job.stage == "step 2/2" and ctx.job.progress == 100.0 and ctx.job.checkpoint == {"next_step": 2}
    assert ctx.last_checkpoint == {"next_step": 2}


async def test_a_kind_resumes_from_the_last_checkpoint_it_is_given() -> None:
    ctx = MemoryContext(last_checkpoint={"next_step": 2})
    result = await echo(ctx, EchoInput(message="m", steps=3))
    assert result == {"message": "m", "steps_run": [2]}
    assert ctx.stages == ["step 3/3"]


async def test_a_retry_gets_the_checkpoint_of_the_failed_attempt() -> None:
    first = MemoryContext()
    with pytest.raises(JobError, match="attempt 1 fails as asked"):
        await echo(first, EchoInput(message="m", steps=3, fail_first=1))
    assert first.checkpoints == [{"next_step": 1}]

    retry = MemoryContext(first.job, attempt=2, last_checkpoint=first.last_checkpoint)
    assert retry.attempt == 2 and retry.id == first.id
    result = await echo(retry, EchoInput(message="m", steps=3, fail_first=1))
    assert result == {"message": "m", "steps_run": [1, 2]}


async def test_attempt_and_tenant_can_be_set() -> None:
    ctx = MemoryContext(tenant="acme")
    ctx.attempt = 3
    assert ctx.tenant == "acme" and ctx.job.tenant == "acme"
    assert ctx.attempt == 3 and ctx.job.attempts == 3
    ctx.tenant = "other"
    assert ctx.job.tenant == "other"


async def test_a_canceled_context_makes_the_kind_stop_at_its_next_check() -> None:
    ctx = MemoryContext()
    ctx.cancel()
    assert ctx.cancel_reason == "canceled"
    with pytest.raises(Canceled):
        await echo(ctx, EchoInput(message="m", steps=3))
    assert ctx.reports == []


async def test_a_cancel_while_the_kind_runs_stops_it_at_its_next_check() -> None:
    class CanceledAfterFirstCheckpoint(MemoryContext):
        async def checkpoint(self, state: JSON, *, progress: float | None = None) -> None:
            await super().checkpoint(state, progress=progress)
            self.cancel("deadline")

    ctx = CanceledAfterFirstCheckpoint()
    with pytest.raises(Canceled, match="deadline"):
        await echo(ctx, EchoInput(message="m", steps=3))
    assert ctx.checkpoints == [{"next_step": 1}]


async def test_the_first_cancel_reason_is_kept() -> None:
    ctx = MemoryContext()
    ctx.cancel("deadline")
    ctx.cancel()
    assert ctx.cancel_reason == "deadline"


async def test_predict_runs_plain_and_async_functions_by_model_name() -> None:
    async def embed(text: str) -> list[float]:
        return [float(len(text))]

    ctx = MemoryContext(models={"upper": str.upper, "embed": embed})
    assert await ctx.predict("upper", "abc") == "ABC"
    assert await ctx.predict("embed", "abcd") == [4.0]
    assert ctx.predictions == [("upper", "abc"), ("embed", "abcd")]
    with pytest.raises(InvalidInput, match="unknown model 'other' \\(known: embed, upper\\)"):
        await ctx.predict("other", "x")


async def test_predict_runs_through_a_model_runtime() -> None:
    runtime = ModelRuntime(device="cpu", modes={}, queue_limit=10, metrics=Metrics())
    register_models(runtime)
    ctx: JobContext = MemoryContext(models=runtime)
    try:
        assert await double(ctx, {"n": 21}) == {"doubled": 42}
    finally:
        await runtime.aclose()


async def test_predict_without_models_fails_for_good() -> None:
    with pytest.raises(NonRetryable, match="no model runtime"):
        await MemoryContext().predict("any", 1)


async def test_a_checkpoint_is_kept_as_it_goes_through_json() -> None:
    ctx = MemoryContext()
    await ctx.checkpoint({"pages": (1, 2)}, progress=150)
    assert ctx.checkpoints == [{"pages": [1, 2]}]
    assert ctx.percents == [100.0]
    with pytest.raises(NonRetryable, match="checkpoint: not JSON"):
        await ctx.checkpoint({"at": object()})


async def test_blocking_work_runs_on_a_thread() -> None:
    ctx = MemoryContext()
    assert await ctx.to_thread(sum, [1, 2, 3]) == 6
