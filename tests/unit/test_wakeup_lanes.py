"""Wake-up lanes: a worker of some kinds only is woken by their submissions, and by nothing another worker does."""

from __future__ import annotations

from inferline.jobs.wakeup import LocalWakeup


async def test_a_lane_is_woken_only_by_submissions_of_its_kinds() -> None:
    root = LocalWakeup()
    lane = root.lane(["pipeline"])
    root.notify({"echo"})
    assert not await lane.wait(0.01)
    root.notify({"echo", "pipeline"})
    assert await lane.wait(0.01)


async def test_a_notify_that_names_no_kind_wakes_every_lane() -> None:
    root = LocalWakeup()
    lanes = [root.lane(["pipeline"]), root.lane(["echo"])]
    root.notify()
    assert [await lane.wait(0.01) for lane in lanes] == [True, True]


async def test_one_workers_claim_never_clears_the_wake_up_of_another() -> None:
    root = LocalWakeup()
    main, orchestration = root.lane(["echo", "pipeline"]), root.lane(["pipeline"])
    root.notify({"pipeline"})
    main.clear()  # the main worker starts a claim (and finds nothing it runs)
    assert await orchestration.wait(0.01)
