"""Which stored resolution answers a metrics query, and the per-tenant bound on queries at a time."""

from __future__ import annotations

import pytest

from inferline.errors import Overloaded
from inferline.monitor.samples import HOUR, MINUTE, RAW
from inferline.monitor.series import MetricReads, resolution_for

RETENTION = {RAW: 86_400.0, MINUTE: 7 * 86_400.0, HOUR: 365 * 86_400.0}


@pytest.mark.parametrize(
    ("step_s", "age_s", "expected"),
    [
        (3600, 6 * 3600, HOUR),  # not 1440 raw rows per series for 6 points
        (300, 6 * 3600, MINUTE),
        (60, 3600, MINUTE),
        (59, 3600, RAW),
        (15, 3 * 86_400, MINUTE),  # raw is gone that far back: the finest that holds it
        (15, 30 * 86_400, HOUR),
        (86_400, 300 * 86_400, HOUR),
    ],
)
def test_the_coarsest_resolution_within_the_step_is_read(step_s: int, age_s: float, expected: int) -> None:
    assert resolution_for(step_s, age_s, RETENTION) == expected


def test_a_tenant_runs_a_bounded_number_of_metric_queries_at_a_time() -> None:
    reads = MetricReads(per_tenant=2)
    with reads.hold("a"), reads.hold("a"):
        with pytest.raises(Overloaded) as refused, reads.hold("a"):
            pass
        assert refused.value.retry_after_s > 0
        with reads.hold("b"):  # another tenant is not held up
            pass
    with reads.hold("a"), reads.hold("a"):  # released, errors included
        pass
    assert reads._running == {}
