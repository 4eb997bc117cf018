"""`Breakers`: purgatory's circuit breaker state machine, one probe at a time, a bounded number kept."""

from __future__ import annotations

import time

from inferline.breakers import Breakers
from inferline.jobs.webhooks import receiver_of


def test_failures_in_a_row_open_a_breaker_and_a_success_between_them_starts_the_count_again() -> None:
    breakers = Breakers(failures=3, cooldown_s=60)
    for ok in (False, False, True, False, False):
        assert breakers.allow("r")
        breakers.record("r", ok=ok)
    assert breakers.state("r") == "closed" and breakers.allow("r")
    breakers.record("r", ok=False)
    assert breakers.state("r") == "opened" and not breakers.allow("r")
    assert 59 < breakers.retry_after_s("r") <= 60 and breakers.open_count() == 1
    assert breakers.allow("other")  # one name's breaker is its own


def test_after_the_cool_down_one_probe_goes_and_its_outcome_closes_or_reopens() -> None:
    breakers = Breakers(failures=1, cooldown_s=0.05)
    breakers.record("r", ok=False)
    assert not breakers.allow("r")
    time.sleep(0.06)
    assert breakers.allow("r") and breakers.state("r") == "half-opened"
    assert not breakers.allow("r")  # the probe is alone
    breakers.record("r", ok=False)
    assert breakers.state("r") == "opened" and not breakers.allow("r")
    time.sleep(0.06)
    assert breakers.allow("r")
    breakers.record("r", ok=True)
    assert breakers.state("r") == "closed" and breakers.open_count() == 0
    assert breakers.allow("r") and breakers.allow("r")


def test_only_a_bounded_number_of_breakers_is_kept_the_least_recently_used_forgotten() -> None:
    breakers = Breakers(failures=1, cooldown_s=60, max_breakers=100)
    for number in range(1000):
        breakers.record(f"receiver{number}", ok=False)
    assert breakers.open_count() == 100
    assert breakers.allow("receiver0") and not breakers.allow("receiver999")
    for number in range(1000):
        breakers.record(f"healthy{number}", ok=True)  # a closed, clean breaker is not kept at all
    assert breakers.open_count() == 100


def test_a_webhook_receiver_is_a_tenants_view_of_one_server() -> None:
    assert receiver_of("a", "https://Hooks.Example.com/x?y=1") == receiver_of("a", "https://hooks.example.com:443/z")
    assert receiver_of("a", "http://h.example/x") != receiver_of("a", "http://h.example:8080/x")
    assert receiver_of("a", "https://relay.example/a") != receiver_of("b", "https://relay.example/a")
