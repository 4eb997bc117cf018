"""Models in child processes: the CPU path for OCR (one engine process per core)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import uvloop
from tests.plugins.models import Echo, SlowSquare

from inferline.errors import ModelError, ModelProcessDied, ModelTimedOut
from inferline.inference.batching import Batcher
from inferline.inference.model import ProcessingMode
from inferline.inference.runners import ProcessRunner
from inferline.inference.runtime import ModelRuntime
from inferline.metrics import Metrics


def process_batcher() -> Batcher[int, tuple[int, int, float, float]]:
    runner = ProcessRunner(SlowSquare, "slow-square", "cpu", processes=2)
    return Batcher(
        SlowSquare(), mode=ProcessingMode.STANDARD, device="cpu", queue_limit=100, metrics=Metrics(), runner=runner
    )


async def test_two_processes_compute_at_the_same_time_each_caller_gets_its_own_result() -> None:
    batcher = process_batcher()
    try:
        outputs = await asyncio.gather(*(batcher.predict(n) for n in [30, 30, 30, 30]))
    finally:
        await batcher.aclose()
    assert [square for square, *_ in outputs] == [900] * 4
    pids = {pid for _, pid, _, _ in outputs}
    assert len(pids) == 2 and os.getpid() not in pids
    first, second = sorted(outputs, key=lambda o: o[2])[:2]
    assert second[2] < first[3], "the second item should start before the first one ends"


async def test_on_cuda_a_second_batch_waits_in_a_busy_childs_pipe_and_each_gets_its_own_reply() -> None:
    runner = ProcessRunner(SlowSquare, "slow-square", "cuda", processes=1)  # SlowSquare ignores the device
    await runner.setup()
    try:
        assert runner.concurrency == 2  # on the CPU: 1 (see ProcessRunner)
        calls = [asyncio.ensure_future(runner.predict([n])) for n in (30, 31, 32)]
        await asyncio.sleep(0.15)  # the first computes for 0.3 s
        [child] = runner._children
        assert child.in_flight == 2, "the second batch is already in the child's pipe; the third waits here"
        outputs = await asyncio.gather(*calls)
    finally:
        await runner.close()
    assert [output[0][0] for output in outputs] == [900, 961, 1024]
    assert len({output[0][1] for output in outputs}) == 1


async def test_on_cuda_a_crash_fails_the_batches_its_child_held_and_a_new_child_takes_its_places() -> None:
    runner = ProcessRunner(SlowSquare, "slow-square", "cuda", processes=1)
    await runner.setup()
    try:
        [before] = runner._children
        held = await asyncio.gather(runner.predict([-1]), runner.predict([5]), return_exceptions=True)
        assert all(isinstance(result, ModelError) for result in held), held
        after = await asyncio.gather(*(runner.predict([n]) for n in (1, 2, 3)))
        [child] = runner._children
        assert child is not before and [output[0][0] for output in after] == [1, 4, 9]
        assert {output[0][1] for output in after} == {child.process.pid}
    finally:
        await runner.close()


@pytest.mark.allow_error_logs
async def test_how_a_process_ended_is_told_only_to_the_batch_it_was_computing() -> None:
    """On CUDA a child holds two batches: the one waiting behind the batch that aborted the process is not
    said to have ended it (a caller may fail its input for good on SIGABRT, `ocr.pages`)."""
    runner = ProcessRunner(SlowSquare, "slow-square", "cuda", processes=1)
    await runner.setup()
    try:
        aborted, behind = await asyncio.gather(runner.predict([-3]), runner.predict([5]), return_exceptions=True)
        exited = await asyncio.gather(runner.predict([-1]), return_exceptions=True)
    finally:
        await runner.close()
    assert isinstance(aborted, ModelProcessDied) and aborted.signal_name == "SIGABRT", aborted
    assert "computing this input (killed by SIGABRT)" in str(aborted)
    assert isinstance(behind, ModelProcessDied) and behind.signal_name is None, behind
    assert "waited behind another" in str(behind)
    assert isinstance(exited[0], ModelProcessDied) and exited[0].signal_name is None
    assert "(exit status 3)" in str(exited[0])


@pytest.mark.allow_error_logs
async def test_a_process_that_ends_as_it_loads_says_so_and_blames_no_input(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = ProcessRunner(SlowSquare, "slow-square", "cuda", processes=1)
    await runner.setup()
    try:
        monkeypatch.setenv("SLOW_SQUARE_ABORT_ON_LOAD", "1")  # the next children abort as they load
        with pytest.raises(ModelProcessDied) as aborted:
            await runner.predict([-3])
        waiting = await asyncio.gather(runner.predict([1]), runner.predict([2]), return_exceptions=True)
        monkeypatch.delenv("SLOW_SQUARE_ABORT_ON_LOAD")
    finally:
        await runner.close()
    assert aborted.value.signal_name == "SIGABRT"
    for outcome in waiting:
        assert isinstance(outcome, ModelProcessDied) and outcome.signal_name is None, outcome
        assert "ended loading the model" in str(outcome)


async def test_an_error_for_one_item_reaches_only_its_caller() -> None:
    batcher = process_batcher()
    try:
        outcomes = await asyncio.gather(*(batcher.predict(n) for n in [1, -2, 3]), return_exceptions=True)
    finally:
        await batcher.aclose()
    assert outcomes[0][0] == 1 and outcomes[2][0] == 9  # type: ignore[index]
    assert isinstance(outcomes[1], ValueError) and "minus two" in str(outcomes[1])


@pytest.mark.allow_error_logs
async def test_a_crashed_process_fails_its_caller_and_the_model_recovers() -> None:
    batcher = process_batcher()
    try:
        with pytest.raises(ModelError, match="process died"):
            await batcher.predict(-1)
        assert (await batcher.predict(4))[0] == 16  # a fresh pool serves the next caller
    finally:
        await batcher.aclose()


@pytest.mark.allow_error_logs
async def test_a_crash_fails_only_the_batch_of_the_process_that_died() -> None:
    batcher = process_batcher()
    try:
        slow = asyncio.ensure_future(batcher.predict(40))  # in the other process when the crash comes
        await asyncio.sleep(0.1)
        with pytest.raises(ModelError, match="process died"):
            await batcher.predict(-1)
        assert (await slow)[0] == 1600
    finally:
        await batcher.aclose()


async def test_a_caller_that_stops_waiting_does_not_leave_its_reply_for_the_next_batch() -> None:
    runner = ProcessRunner(SlowSquare, "slow-square", "cpu", processes=1)
    await runner.setup()
    try:
        abandoned = asyncio.ensure_future(runner.predict([20]))
        await asyncio.sleep(0.05)
        abandoned.cancel()
        outputs = await runner.predict([3])
    finally:
        await runner.close()
    assert outputs[0][0] == 9


@pytest.mark.allow_error_logs
async def test_a_batch_computed_past_its_allowance_kills_the_process_even_when_its_caller_left() -> None:
    """The allowance is `item_timeout_s` per item of the batch. A caller that stops waiting does not free
    the process (the exchange finishes); the allowance does, and a new process takes the next batch."""
    runner = ProcessRunner(SlowSquare, "slow-square", "cpu", processes=1, item_timeout_s=1.0)
    await runner.setup()
    try:
        assert (await runner.predict([70, 70]))[1][0] == 4900  # 1.4 s for two items: within 2 x 1.0
        [first] = runner._children
        started = time.monotonic()
        with pytest.raises(ModelTimedOut, match=r"^model slow-square: its process computed past its 1 s") as timed_out:
            await runner.predict([3000])  # 30 s
        assert timed_out.value.limit_s == 1.0 and time.monotonic() - started < 10
        assert not first.process.is_alive()
        abandoned = asyncio.ensure_future(runner.predict([3000]))
        await asyncio.sleep(0.1)
        abandoned.cancel()
        started = time.monotonic()
        [(square, pid, _, _)] = await runner.predict([2])
        assert square == 4 and time.monotonic() - started < 10
        assert pid not in (first.process.pid, os.getpid())
    finally:
        await runner.close()


@pytest.mark.allow_error_logs
async def test_on_cuda_a_batch_waiting_in_the_pipe_is_allowed_its_time_from_the_end_of_the_one_ahead() -> None:
    runner = ProcessRunner(SlowSquare, "slow-square", "cuda", processes=1, item_timeout_s=0.8)
    await runner.setup()
    try:
        # 0.5 s each, sent together: the second ends 1.0 s after it was sent, within its own 0.8 s.
        first, second = await asyncio.gather(runner.predict([50]), runner.predict([50]))
        assert first[0][0] == second[0][0] == 2500
        # Nor does it inherit the time the one ahead left: 1.2 s after a batch of 0.05 s is past its 0.8 s.
        quick, slow = await asyncio.gather(runner.predict([5]), runner.predict([120]), return_exceptions=True)
        stuck, behind = await asyncio.gather(runner.predict([3000]), runner.predict([5]), return_exceptions=True)
    finally:
        await runner.close()
    assert not isinstance(quick, BaseException) and quick[0][0] == 25, quick
    assert isinstance(slow, ModelTimedOut), slow
    assert isinstance(stuck, ModelTimedOut), stuck
    assert isinstance(behind, ModelProcessDied) and not isinstance(behind, ModelTimedOut), behind
    assert "waited behind another" in str(behind)


def test_an_item_timeout_reaches_the_processes_only() -> None:
    runtime = ModelRuntime(
        device="cpu", modes={}, queue_limit=10, metrics=Metrics(), processes={"slow-square": 1, "echo": 0}
    )
    runtime.register("slow-square", SlowSquare, item_timeout_s=2.5)
    runtime.register("echo", Echo, item_timeout_s=2.5)
    runner = runtime.batcher("slow-square").runner
    assert isinstance(runner, ProcessRunner) and runner.item_timeout_s == 2.5
    described = {row["name"]: row["item_timeout_s"] for row in runtime.describe()}
    assert described == {"echo": None, "slow-square": 2.5}  # on a thread nothing bounds it: not claimed


async def test_closing_lets_a_batch_in_flight_finish_and_stops_every_child() -> None:
    runner = ProcessRunner(SlowSquare, "slow-square", "cpu", processes=2)
    await runner.setup()
    children = list(runner._children)
    in_flight = asyncio.ensure_future(runner.predict([50]))
    await asyncio.sleep(0.1)
    await runner.close()
    assert (await in_flight)[0][0] == 2500
    assert all(not child.process.is_alive() and child.conn.closed for child in children)


def test_batches_and_outputs_larger_than_a_pipe_buffer_pass_whole_under_uvloop() -> None:
    # The server's loop is uvloop, which makes a watched fd non-blocking: a 64 KiB pipe then returned
    # EAGAIN halfway through a reply (every e5 batch of 8+ vectors "died" before this was handled).
    async def main() -> list[bytes]:
        runner = ProcessRunner(Echo, "echo", "cpu", processes=1)
        await runner.setup()
        try:
            return [out for _ in range(3) for out in await runner.predict([os.urandom(1 << 20), b"x" * 300_000])]
        finally:
            await runner.close()

    outputs = uvloop.run(main())
    assert [len(out) for out in outputs] == [1 << 20, 300_000] * 3


def test_processes_come_from_settings_then_the_model() -> None:
    runtime = ModelRuntime(device="cpu", modes={}, queue_limit=10, metrics=Metrics(), processes={"other": 3})
    runtime.register("slow-square", SlowSquare)
    runtime.register("other", SlowSquare)
    assert runtime.processes_of("slow-square") == 2 and runtime.processes_of("other") == 3
    described = {row["name"]: row["processes"] for row in runtime.describe()}
    assert described == {"other": 3, "slow-square": 2}
