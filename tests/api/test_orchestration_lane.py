"""The orchestration lane: kinds that wait on the jobs they submit run in slots of their own."""

from __future__ import annotations

from tests.api.conftest import MakeApi

PLUGINS = ["tests.plugins.kinds", "tests.plugins.orchestration"]


async def test_one_worker_slot_still_finishes_a_job_that_waits_on_its_children(
    make_api: MakeApi, database_url: str
) -> None:
    async with make_api(workers=1, database_url=database_url, plugins=PLUGINS) as api:
        parent = await api.submit(kind="parent", input={"children": 2})
        done = await api.wait(parent["id"])
        assert done["status"] == "succeeded", done
        for child_id in done["result"]["children"]:
            assert (await api.client.get(f"/api/v1/jobs/{child_id}")).json()["status"] == "succeeded"


async def test_waiting_jobs_beyond_the_lanes_slots_queue_and_then_run(make_api: MakeApi) -> None:
    async with make_api(workers=1, orchestrator_slots=1, plugins=PLUGINS) as api:
        parents = [await api.submit(kind="parent", input={"children": 1}) for _ in range(2)]
        ended = [await api.wait(parent["id"]) for parent in parents]
        assert [job["status"] for job in ended] == ["succeeded", "succeeded"]
        # One lane slot: the second parent started only once the first had seen its child finish (a slot is
        # claimed again as soon as an attempt ends, before its outcome's `finished_at` is written).
        [first_child] = ended[0]["result"]["children"]
        child = (await api.client.get(f"/api/v1/jobs/{first_child}")).json()
        assert ended[1]["started_at"] >= child["finished_at"]
