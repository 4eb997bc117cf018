"""What the record stream needs, built once by `bootstrap.py` (`RecordDeps.from_settings`) and kept on
`Services.records`."""

from __future__ import annotations

from dataclasses import dataclass, field

from inferline.batches.deps import BatchDeps
from inferline.config import Settings
from inferline.errors import Overloaded


@dataclass(frozen=True)
class StreamLimits:
    window_records: int = 256  # records read and not yet acknowledged, per stream
    group_records: int = 128  # most records committed together
    idle_s: float = 60.0  # a stream that sends nothing for this long is ended
    streams_per_tenant: int = 2  # open streams of one tenant; more are refused


@dataclass
class StreamSlots:
    """Open streams by tenant: one tenant's streams cannot take every model batch and database write
    from the others'. In memory: the limit is per server process."""

    per_tenant: int
    open: dict[str, int] = field(default_factory=dict)

    def take(self, tenant: str) -> None:
        if self.open.get(tenant, 0) >= self.per_tenant:
            raise Overloaded(
                f"this tenant already has {self.per_tenant} open record streams (setting grpc_streams_per_tenant)",
                retry_after_s=1.0,
            )
        self.open[tenant] = self.open.get(tenant, 0) + 1

    def give_back(self, tenant: str) -> None:
        left = self.open.get(tenant, 0) - 1
        if left > 0:
            self.open[tenant] = left
        else:
            self.open.pop(tenant, None)


@dataclass
class RecordDeps:
    batches: BatchDeps
    limits: StreamLimits = field(default_factory=StreamLimits)
    slots: StreamSlots = field(default_factory=lambda: StreamSlots(StreamLimits().streams_per_tenant))
    peak_unacked: int = 0  # the most records any stream held unacknowledged (its window is the bound)

    @classmethod
    def from_settings(cls, settings: Settings, *, batches: BatchDeps) -> RecordDeps:
        limits = StreamLimits(
            window_records=settings.grpc_window_records,
            group_records=settings.grpc_group_records,
            idle_s=settings.grpc_idle_s,
            streams_per_tenant=settings.grpc_streams_per_tenant,
        )
        return cls(batches=batches, limits=limits, slots=StreamSlots(limits.streams_per_tenant))
