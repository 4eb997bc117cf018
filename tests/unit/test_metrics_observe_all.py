"""`metrics.observe_all` counts a batch of observations as one `observe` each would."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram

from inferline.metrics import observe_all

BOUNDS = (0.005, 0.01, 0.5, 1, 60)


def _histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("x_seconds", "x", ["kind"], buckets=BOUNDS, registry=registry)


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float | str]]:
    """Every sample but the series' creation times (NaN as text, to compare)."""
    return [
        (sample.name, sample.labels, "nan" if math.isnan(sample.value) else sample.value)
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    ]


def test_a_batch_lands_in_the_buckets_and_sum_that_one_observe_each_gives() -> None:
    amounts = [0.0, 0.005, 0.0078125, 0.01, 0.25, 0.5, 1.0, 2.0, 60.0, 64.0, 1e9, -1.0, float("inf")]
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    expected, histogram = _histogram(one_by_one), _histogram(batched)
    for amount in amounts:
        expected.labels("echo").observe(amount)
    expected.labels("other")
    observe_all(histogram.labels("echo"), amounts)
    observe_all(histogram.labels("other"), [])
    assert _samples(batched) == _samples(one_by_one)


def test_a_nan_counts_in_the_sum_and_no_bucket_as_observe_counts_it() -> None:
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    single = _histogram(one_by_one).labels("echo")
    for amount in (0.1, float("nan")):
        single.observe(amount)
    observe_all(_histogram(batched).labels("echo"), [0.1, float("nan")])
    assert _samples(batched) == _samples(one_by_one)
