"""`Breakers`: purgatory's circuit breaker state machine, one probe at a time, a bounded number kept."""

from __future__ import annotations

import time

from inferline.breakers import Breakers
from inferline.jobs.webhooks import receiver_of


def call(breakers: Breakers, name: str, *, ok: bool) -> str:
    ticket = breakers.allow(name)
    assert ticket is not None, f"{name} was refused"
    return breakers.record(ticket, ok=ok)


def test_failures_in_a_row_open_a_breaker_and_a_success_between_them_starts_the_count_again() -> None:
    breakers = Breakers(failures=3, cooldown_s=60)
    for ok in (False, False, True, False, False):
        assert call(breakers, "r", ok=ok) == "closed"
    assert call(breakers, "r", ok=False) == "opened"
    assert breakers.allow("r") is None
    assert 59 < breakers.retry_after_s("r") <= 60 and breakers.open_count() == 1
    assert breakers.allow("other") is not None  # one name's breaker is its own


def test_after_the_cool_down_one_probe_goes_and_its_outcome_closes_or_reopens() -> None:
    breakers = Breakers(failures=1, cooldown_s=0.05)
    call(breakers, "r", ok=False)
    assert breakers.allow("r") is None
    time.sleep(0.06)
    probe = breakers.allow("r")
    assert probe is not None and probe.probe and breakers.state("r") == "half-opened"
    assert breakers.allow("r") is None  # the probe is alone
    assert breakers.record(probe, ok=False) == "opened" and breakers.allow("r") is None
    time.sleep(0.06)
    probe = breakers.allow("r")
    assert probe is not None and breakers.record(probe, ok=True) == "closed"
    assert breakers.open_count() == 0 and breakers.allow("r") is not None


def test_a_cancelled_probe_passes_its_turn_and_a_call_from_before_the_opening_decides_nothing() -> None:
    breakers = Breakers(failures=1, cooldown_s=0.05)
    early = breakers.allow("r")  # let through while closed, answers late
    assert early is not None
    call(breakers, "r", ok=False)
    time.sleep(0.06)
    probe = breakers.allow("r")
    assert probe is not None
    assert breakers.record(early, ok=True) == "half-opened"  # not the probe: the breaker waits for it
    assert breakers.allow("r") is None
    breakers.release(probe)  # cancelled: no outcome, the next call is the probe
    again = breakers.allow("r")
    assert again is not None and again.probe and breakers.record(again, ok=True) == "closed"


def test_only_a_bounded_number_of_breakers_is_kept_the_least_recently_used_forgotten() -> None:
    breakers = Breakers(failures=1, cooldown_s=60, max_breakers=100)
    for number in range(1000):
        call(breakers, f"receiver{number}", ok=False)
    assert breakers.open_count() == 100
    assert breakers.allow("receiver0") is not None and breakers.allow("receiver999") is None
    for number in range(1000):
        call(breakers, f"healthy{number}", ok=True)  # a closed, clean breaker is not kept at all
    assert breakers.open_count() == 100


def test_a_webhook_receiver_is_a_tenants_view_of_one_server() -> None:
    assert receiver_of("a", "https://Hooks.Example.com/x?y=1") == receiver_of("a", "https://hooks.example.com:443/z")
    assert receiver_of("a", "http://h.example/x") != receiver_of("a", "http://h.example:8080/x")
    assert receiver_of("a", "https://relay.example/a") != receiver_of("b", "https://relay.example/a")
