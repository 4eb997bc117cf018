from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from inferline.errors import InvalidInput, InvalidTransition
from inferline.ids import _increment, new_id
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, JobStatus, RetryPolicy, plan_failure
from inferline.paging import decode_cursor, encode_cursor

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(**overrides: object) -> Job:
    values: dict[str, object] = {
        "id": new_id(),
        "kind": "echo",
        "tenant": "t",
        "status": JobStatus.QUEUED,
        "priority": 3,
        "max_attempts": 3,
        "input": {},
        "created_at": NOW,
        "updated_at": NOW,
        "run_after": NOW,
    }
    return Job(**(values | overrides))  # type: ignore[arg-type]


def test_canceling_a_queued_job_finishes_it_at_once() -> None:
    job = make_job().cancel(NOW)
    assert job.status is JobStatus.CANCELED
    assert job.canceled_at == NOW and job.finished_at == NOW


def test_canceling_a_running_job_only_requests_it() -> None:
    job = make_job(status=JobStatus.RUNNING).cancel(NOW)
    assert job.status is JobStatus.RUNNING
    assert job.cancel_requested


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED])
def test_a_finished_job_cannot_be_canceled(status: JobStatus) -> None:
    with pytest.raises(InvalidTransition):
        make_job(status=status).cancel(NOW)


def test_retry_requeues_a_failed_job_with_fresh_attempts_and_keeps_its_history() -> None:
    error = {"type": "X", "message": "m", "attempts": [{"attempt": 1}]}
    job = make_job(status=JobStatus.FAILED, attempts=3, error=error, finished_at=NOW)
    retried = job.retry(NOW + timedelta(seconds=5))
    assert retried.status is JobStatus.QUEUED
    assert retried.attempts == 0 and retried.finished_at is None
    assert retried.error == error


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.CANCELED])
def test_only_failed_jobs_can_be_retried(status: JobStatus) -> None:
    with pytest.raises(InvalidTransition):
        make_job(status=status).retry(NOW)


def test_backoff_grows_exponentially_within_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=300.0)
    rng = random.Random(7)
    for attempt, nominal in [(1, 1), (2, 2), (3, 4), (6, 32), (20, 300)]:
        delays = [policy.backoff_s(attempt, rng) for _ in range(200)]
        assert min(delays) >= nominal / 2
        assert max(delays) <= nominal
        assert max(delays) - min(delays) > nominal / 10  # jitter spreads retries out


def test_a_retryable_failure_before_the_last_attempt_is_requeued_later() -> None:
    job = make_job(status=JobStatus.RUNNING, attempts=1)
    plan = plan_failure(job, error_type="E", message="boom", retryable=True, now=NOW, policy=RetryPolicy())
    assert plan.status is JobStatus.QUEUED
    assert plan.run_after is not None and NOW < plan.run_after <= NOW + timedelta(seconds=1)
    assert plan.error["attempts"][0]["message"] == "boom"


def test_the_last_attempt_fails_the_job_with_the_whole_history() -> None:
    job = make_job(
        status=JobStatus.RUNNING,
        attempts=3,
        error={
            "type": "E",
            "message": "a",
            "attempts": [
                {"attempt": 1, "type": "E", "message": "a"},
                {"attempt": 2, "type": "E", "message": "b"},
            ],
        },
    )
    plan = plan_failure(job, error_type="F", message="c", retryable=True, now=NOW, policy=RetryPolicy())
    assert plan.status is JobStatus.FAILED
    assert plan.error["type"] == "F" and plan.error["message"] == "c"
    assert [entry["message"] for entry in plan.error["attempts"]] == ["a", "b", "c"]


def test_a_non_retryable_failure_fails_at_once() -> None:
    job = make_job(status=JobStatus.RUNNING, attempts=1)
    plan = plan_failure(job, error_type="E", message="bad", retryable=False, now=NOW, policy=RetryPolicy())
    assert plan.status is JobStatus.FAILED


def test_ids_sort_in_the_order_they_were_made_even_within_one_millisecond() -> None:
    ids = [new_id() for _ in range(20_000)]  # hundreds per millisecond
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}
    assert {uuid.UUID(i).variant for i in ids} == {uuid.RFC_4122}


def test_id_increments_carry_into_the_timestamp_when_the_random_bits_overflow() -> None:
    full = int(uuid.UUID(new_id())) | (0xFFF << 64) | ((1 << 62) - 1)
    bumped = _increment(full, 1)
    assert bumped > full
    assert bumped >> 80 == (full >> 80) + 1
    assert uuid.UUID(int=bumped).version == 7


def test_cursor_round_trips_and_rejects_garbage() -> None:
    job_id = new_id()
    assert decode_cursor(encode_cursor(job_id)) == job_id
    with pytest.raises(InvalidInput):
        decode_cursor("%%%not-base64")


def test_registry_names_the_bad_input_field() -> None:
    registry = KindRegistry()
    register_echo(registry)
    with pytest.raises(InvalidInput) as info:
        registry.validate_input("echo", {"message": "x", "steps": "many"})
    assert info.value.field == "input.steps"
    with pytest.raises(InvalidInput, match="unknown job kind 'nope'"):
        registry.validate_input("nope", {})


def test_registry_fills_defaults_of_the_input_model() -> None:
    registry = KindRegistry()
    register_echo(registry)
    assert registry.validate_input("echo", {"message": "x"}) == {
        "message": "x",
        "steps": 1,
        "step_s": 0.0,
        "fail_first": 0,
    }
