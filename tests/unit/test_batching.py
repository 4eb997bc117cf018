"""The dynamic batcher with small real models (pure Python, run in threads like real ones)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import ClassVar

import pytest
from tests.helpers import eventually

from inferline.errors import ModelError, Overloaded
from inferline.inference.batching import Batcher, ModelState
from inferline.inference.model import Model, ProcessingMode
from inferline.metrics import Metrics


class Doubler(Model[int, int]):
    name = "doubler"
    max_batch_size = 16
    max_wait_ms = 20.0

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.setups = 0
        self.lock = threading.Lock()

    def setup(self, device: str) -> None:
        with self.lock:
            self.setups += 1
        self.device = device

    def close(self) -> None:
        self.closed = True

    def predict_batch(self, inputs: list[int]) -> list[int | BaseException]:
        self.batches.append(list(inputs))
        if any(x < 0 for x in inputs):
            raise ValueError(f"negative input in {inputs}")
        return [x * 2 for x in inputs]


def batcher(
    model: Model[int, int], mode: ProcessingMode = ProcessingMode.BATCHED, limit: int = 1000
) -> Batcher[int, int]:
    return Batcher(model, mode=mode, device="cpu", queue_limit=limit, metrics=Metrics())


async def test_concurrent_callers_each_get_their_own_result_in_shared_batches() -> None:
    model = Doubler()
    b = batcher(model)
    results = await asyncio.gather(*(b.predict(i) for i in range(64)))
    assert results == [i * 2 for i in range(64)]
    sizes = [len(batch) for batch in model.batches]
    assert sum(sizes) == 64 and max(sizes) <= 16
    assert max(sizes) > 1, "callers arriving together should share a batch"
    await b.aclose()


async def test_a_failing_item_fails_only_its_own_caller() -> None:
    model = Doubler()
    b = batcher(model)
    outcomes = await asyncio.gather(*(b.predict(x) for x in [1, 2, -3, 4]), return_exceptions=True)
    assert outcomes[:2] == [2, 4] and outcomes[3] == 8
    assert isinstance(outcomes[2], ValueError)
    await b.aclose()


async def test_an_exception_returned_for_one_item_goes_to_that_caller() -> None:
    class Picky(Doubler):
        def predict_batch(self, inputs: list[int]) -> list[int | BaseException]:
            return [KeyError(x) if x == 7 else x for x in inputs]

    b = batcher(Picky())
    outcomes = await asyncio.gather(b.predict(6), b.predict(7), b.predict(8), return_exceptions=True)
    assert outcomes[0] == 6 and outcomes[2] == 8 and isinstance(outcomes[1], KeyError)
    await b.aclose()


async def test_a_model_returning_the_wrong_number_of_outputs_gets_an_actionable_error() -> None:
    class Lossy(Doubler):
        def predict_batch(self, inputs: list[int]) -> list[int | BaseException]:
            return [1]  # always one, whatever the batch

    b = batcher(Lossy())
    outcomes = await asyncio.gather(*(b.predict(i) for i in range(3)), return_exceptions=True)
    # Alone, each item gets one output back, so the per-item rerun rescues them all.
    assert outcomes == [1, 1, 1]

    class Empty(Doubler):
        def predict_batch(self, inputs: list[int]) -> list[int | BaseException]:
            return []

    b2 = batcher(Empty())
    with pytest.raises(ModelError, match="returned 0 outputs for 1 inputs; it must return a list"):
        await b2.predict(1)
    await b.aclose()
    await b2.aclose()


async def test_cancelled_callers_are_dropped_before_batching() -> None:
    class Slow(Doubler):
        max_batch_size = 100
        max_wait_ms = 300.0

    model = Slow()
    b = batcher(model)
    await b.ensure_loaded()
    tasks = [asyncio.create_task(b.predict(i)) for i in range(6)]
    await asyncio.sleep(0.05)
    for task in tasks[::2]:
        task.cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert [d for d in done if not isinstance(d, BaseException)] == [2, 6, 10]
    assert model.batches == [[1, 3, 5]]
    await b.aclose()


async def test_standard_mode_runs_one_item_at_a_time() -> None:
    model = Doubler()
    b = batcher(model, ProcessingMode.STANDARD)
    assert await asyncio.gather(*(b.predict(i) for i in range(10))) == [i * 2 for i in range(10)]
    assert all(len(batch) == 1 for batch in model.batches) and len(model.batches) == 10
    await b.aclose()


async def test_batches_are_bounded_by_cost_as_well_as_count() -> None:
    class Weighted(Doubler):
        max_batch_cost: ClassVar[float | None] = 10.0

        def cost(self, item: int) -> float:
            return float(item)

    model = Weighted()
    b = batcher(model)
    items = [6, 3, 6, 1, 2, 12, 4]
    assert await asyncio.gather(*(b.predict(i) for i in items)) == [i * 2 for i in items]
    for batch in model.batches:
        assert sum(batch) <= 10 or len(batch) == 1  # an item dearer than the limit runs alone
    assert sorted(x for batch in model.batches for x in batch) == sorted(items)
    await b.aclose()


async def test_a_full_queue_is_refused_with_a_retry_hint() -> None:
    class Slow(Doubler):
        max_batch_size = 1

        def predict_batch(self, inputs: list[int]) -> list[int | BaseException]:
            threading.Event().wait(0.05)
            return inputs  # type: ignore[return-value]

    b = batcher(Slow(), limit=3)
    await b.ensure_loaded()
    outcomes = await asyncio.gather(*(b.predict(i) for i in range(8)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, Overloaded)]
    assert refused and all(o.retry_after_s > 0 for o in refused)
    assert [o for o in outcomes if not isinstance(o, BaseException)]  # the queued ones still ran
    await b.aclose()


async def test_the_model_loads_once_lazily_even_under_concurrent_first_calls() -> None:
    model = Doubler()
    b = batcher(model)
    assert b.state is ModelState.UNLOADED and model.setups == 0
    await asyncio.gather(*(b.predict(i) for i in range(20)))
    assert model.setups == 1 and b.state is ModelState.READY and model.device == "cpu"
    await b.aclose()
    assert model.closed and b.state is ModelState.UNLOADED  # what setup took is released at shutdown


async def test_a_model_that_fails_to_load_reports_why() -> None:
    class Broken(Doubler):
        def setup(self, device: str) -> None:
            raise FileNotFoundError("weights.onnx")

    b = batcher(Broken())
    with pytest.raises(ModelError, match="failed to load: FileNotFoundError"):
        await b.predict(1)
    assert b.state is ModelState.FAILED and b.error is not None and "weights.onnx" in b.error
    assert b.error_shown is not None and "FileNotFoundError" in b.error_shown and "weights" not in b.error_shown
    await b.aclose()


async def test_a_lone_item_is_not_kept_waiting_for_a_full_batch() -> None:
    class Patient(Doubler):
        max_batch_size = 64
        max_wait_ms = 10.0

    model = Patient()
    b = batcher(model)
    assert await asyncio.wait_for(b.predict(21), timeout=5) == 42
    assert model.batches == [[21]]
    await b.aclose()


async def test_metrics_record_batch_sizes_and_waits() -> None:
    model = Doubler()
    b = batcher(model)
    await asyncio.gather(*(b.predict(i) for i in range(32)))
    text = b.metrics.render().decode()
    assert 'inferline_model_batch_size_count{model="doubler"}' in text
    assert 'inferline_model_batch_size_sum{model="doubler"} 32.0' in text
    assert 'inferline_model_items_in_flight{model="doubler"} 0.0' in text
    await b.aclose()


def test_auto_picks_cuda_only_where_the_provider_and_a_gpu_are_both_there(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    from inferline.inference import runtime

    if not Path("/proc/driver/nvidia").exists():  # this machine and CI: no driver, so no GPU counted
        assert runtime.cuda_devices() == 0
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: both)
    monkeypatch.setattr(runtime, "cuda_devices", lambda: 0)  # the GPU build of onnxruntime, no GPU
    assert runtime.resolve_device("auto") == "cpu"
    monkeypatch.setattr(runtime, "cuda_devices", lambda: 1)
    assert runtime.resolve_device("auto") == "cuda"
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert runtime.resolve_device("auto") == "cpu" and runtime.resolve_device("cuda") == "cuda"


class TwoProcesses:
    """A runner with two slots, like two model processes; records each batch it is given."""

    concurrency = 2

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def setup(self) -> None:
        pass

    async def predict(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0.3 if max(items) >= 1000 else 0.05)  # long enough for both slots to be busy
        return [x * 2 for x in items]

    async def close(self) -> None:
        pass


class Wide(Model[int, int]):
    name = "wide"
    max_batch_size = 32


async def test_what_is_queued_is_spread_over_idle_processes_not_given_to_one() -> None:
    runner = TwoProcesses()
    b = Batcher(Wide(), mode=ProcessingMode.BATCHED, device="cpu", queue_limit=100, metrics=Metrics(), runner=runner)
    assert await asyncio.gather(*(b.predict(i) for i in range(24))) == [i * 2 for i in range(24)]
    assert [len(batch) for batch in runner.batches] == [12, 12]  # was [24]: one process, the other idle
    # With the other process busy (a long batch of one), a slot takes all it can, up to a full batch.
    long = asyncio.ensure_future(b.predict(1000))
    await asyncio.sleep(0.01)
    assert await asyncio.gather(*(b.predict(i) for i in range(40))) == [i * 2 for i in range(40)]
    assert await long == 2000
    assert [len(batch) for batch in runner.batches[2:]] == [1, 32, 8]
    await b.aclose()


class GatedDoubler(Doubler):
    """Batches of four; its first batch holds the model until `gate` opens, while the others queue."""

    max_batch_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def predict_batch(self, inputs: list[int]) -> list[int | BaseException]:
        self.entered.set()
        self.gate.wait(5)
        return super().predict_batch(inputs)


async def test_each_tenant_waits_in_its_own_lane_and_batches_take_the_lanes_in_turn() -> None:
    model = GatedDoubler()
    b = batcher(model)
    first = asyncio.create_task(b.predict(0, "a"))
    await eventually(model.entered.is_set)
    bulk = [asyncio.create_task(b.predict(i, "a")) for i in range(100, 120)]  # a bulk job's items
    await asyncio.sleep(0)
    single = asyncio.create_task(b.predict(7, "b"))  # another tenant's one item, after all of them
    own = [asyncio.create_task(b.predict(i, "b")) for i in (8, 9)]
    await asyncio.sleep(0.05)
    model.gate.set()
    assert await single == 14 and [await task for task in own] == [16, 18]
    await asyncio.gather(first, *bulk)
    # b's items went in the first batches after the one running, in turn with a's (each tenant's in its
    # order), not after a's twenty.
    assert model.batches[0] == [0]
    assert model.batches[1] == [100, 7, 101, 8]
    assert model.batches[2] == [102, 9, 103, 104]
    assert [x for batch in model.batches for x in batch if x >= 100] == list(range(100, 120))
    assert b.queued == 0
    await b.aclose()


async def test_a_cancelled_item_does_not_take_its_tenants_turn() -> None:
    model = GatedDoubler()
    b = batcher(model)
    first = asyncio.create_task(b.predict(0, "a"))
    await eventually(model.entered.is_set)
    bulk = [asyncio.create_task(b.predict(i, "a")) for i in range(100, 104)]
    gone = asyncio.create_task(b.predict(7, "b"))
    kept = asyncio.create_task(b.predict(8, "b"))
    await asyncio.sleep(0.05)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    model.gate.set()
    assert await kept == 16
    await asyncio.gather(first, *bulk)
    assert model.batches[1] == [100, 8, 101, 102]  # b's cancelled head dropped, its next item in its turn
    assert b.queued == 0
    await b.aclose()


async def test_a_full_queue_still_lets_in_a_tenant_holding_few_items_and_stays_bounded() -> None:
    model = GatedDoubler()
    b = batcher(model, limit=32)  # 2 items each past the limit, 8 in all
    first = asyncio.create_task(b.predict(0, "a"))
    await eventually(model.entered.is_set)
    bulk = [asyncio.create_task(b.predict(i, "a")) for i in range(100, 132)]  # a fills the queue
    await asyncio.sleep(0)
    assert b.queued == 32
    with pytest.raises(Overloaded):
        await b.predict(132, "a")  # a itself: refused, as before
    others = {tenant: [asyncio.create_task(b.predict(i, tenant)) for i in (1, 2)] for tenant in "bcde"}
    await asyncio.sleep(0)
    assert b.queued == 40  # each of b-e got two in past the limit
    with pytest.raises(Overloaded):
        await b.predict(3, "b")  # b holds its two
    with pytest.raises(Overloaded):
        await b.predict(1, "f")  # the queue at its bound: f waits for room like anyone
    model.gate.set()
    assert {tenant: [await task for task in tasks] for tenant, tasks in others.items()} == {t: [2, 4] for t in "bcde"}
    await asyncio.gather(first, *bulk)
    assert b.queued == 0
    assert await b.predict(5, "f") == 10
    await b.aclose()
