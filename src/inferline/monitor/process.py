"""Application metrics of the sampling process's own Prometheus registry, as changes since the last
sample: mean model batch size, mean search time, cache hit ratio. Another process's models and searches
are not seen here (each process exports them on `/metrics`)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.metrics import MetricWrapperBase

from inferline.metrics import Metrics
from inferline.monitor.samples import Sample

Totals = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _totals(metric: MetricWrapperBase) -> Totals:
    totals: Totals = {}
    for family in metric.collect():
        for sample in family.samples:
            totals[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return totals


class ProcessCounters:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._before: dict[str, Totals] = {}

    def samples(self) -> list[Sample]:
        batches = self._changed("batch", self.metrics.model_batch_size)
        searches = self._changed("search", self.metrics.search_seconds)
        cache = self._changed("cache", self.metrics.search_cache)
        samples = []
        for model, (total, count) in _means(batches, "inferline_model_batch_size", "model").items():
            samples.append(Sample("model_batch_size_avg", total / count, {"model": model}))
        search = _means(searches, "inferline_search_seconds", None)
        if "" in search:
            total, count = search[""]
            samples.append(Sample("search_latency_avg_s", total / count))
        hits = cache.get(("inferline_search_cache_total", (("result", "hit"),)), 0.0)
        misses = cache.get(("inferline_search_cache_total", (("result", "miss"),)), 0.0)
        if hits + misses > 0:
            samples.append(Sample("search_cache_hit_ratio", hits / (hits + misses)))
        return samples

    def _changed(self, key: str, metric: MetricWrapperBase) -> Totals:
        now = _totals(metric)
        before = self._before.get(key, {})
        self._before[key] = now
        return {series: value - before.get(series, 0.0) for series, value in now.items()}


def _means(
    changes: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], base: str, label: str | None
) -> dict[str, tuple[float, float]]:
    """(sum, count) of a histogram's changes, per value of `label` (all series together when None)."""
    sums: dict[str, list[float]] = {}
    for (name, labels), value in changes.items():
        part = "sum" if name == f"{base}_sum" else "count" if name == f"{base}_count" else None
        if part is None:
            continue
        group = dict(labels).get(label, "") if label else ""
        pair = sums.setdefault(group, [0.0, 0.0])
        pair[0 if part == "sum" else 1] += value
    return {group: (total, count) for group, (total, count) in sums.items() if count > 0}
