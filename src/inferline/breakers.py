"""Circuit breakers for outbound dependencies a process calls many times: webhook receivers, the Redis cache.

Each breaker is purgatory's state machine (`purgatory.domain.model.Context`): `failures` failed calls in a
row open it; while open, calls are not made; after `cooldown_s` one call goes through as a probe (the others
still wait), and its success closes the breaker, its failure opens it again for another `cooldown_s`.

Purgatory's own factory keeps every breaker it ever made and queues an event per change for its message
bus; the names here come from tenants (a receiver per webhook URL), so this keeps at most `max_breakers`,
the least recently used forgotten (a forgotten receiver starts closed), and drops the events.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from purgatory.domain.model import CLOSED, HALF_OPENED, OPENED, Context, OpenedState

BREAKER_VALUE: dict[str, float] = {CLOSED: 0.0, HALF_OPENED: 0.5, OPENED: 1.0}  # as the breaker gauges show them


class _Failed(Exception):
    """What a failed call is to the state machine."""


@dataclass(frozen=True)
class Ticket:
    """A call `allow` let through: its outcome goes back with it (`record`, or `release` without one)."""

    name: str
    generation: int  # the breaker's state it was let through in: an outcome from an older state is ignored
    probe: bool = False


@dataclass
class _Breaker:
    context: Context
    generation: int = 0  # advanced at each change of state
    probing: bool = False  # a probe of the half-open breaker is in flight


class Breakers:
    """Breakers by name: `allow(name)` before a call (None: do not call now), then `record(ticket, ok=)`
    with its outcome, or `release(ticket)` when it ended without one (cancelled)."""

    def __init__(self, *, failures: int, cooldown_s: float, max_breakers: int = 10_000) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.max_breakers = max_breakers
        self._breakers: OrderedDict[str, _Breaker] = OrderedDict()

    def allow(self, name: str) -> Ticket | None:
        """A ticket when a call to `name` may go now: its breaker is closed, or this call is its probe."""
        breaker = self._breakers.get(name)
        if breaker is None:
            return Ticket(name, 0)
        self._breakers.move_to_end(name)
        if breaker.probing:
            return None
        context = breaker.context
        was = context.state
        try:
            context.handle_new_request()  # an open one past its cool-down turns half-open here
        except OpenedState:
            return None
        finally:
            context.messages.clear()
        if context.state != was:
            breaker.generation += 1
        if context.state == HALF_OPENED:
            breaker.probing = True
            return Ticket(name, breaker.generation, probe=True)
        return Ticket(name, breaker.generation)

    def record(self, ticket: Ticket, *, ok: bool) -> str:
        """The outcome of a call `allow` let through; returns the breaker's state after it."""
        name = ticket.name
        breaker = self._breakers.get(name)
        if breaker is None:
            if ok:
                return CLOSED  # a closed breaker without failures: nothing to remember
            breaker = self._breakers[name] = _Breaker(Context(name, self.failures, self.cooldown_s))
            while len(self._breakers) > self.max_breakers:
                self._breakers.popitem(last=False)
        elif ticket.generation != breaker.generation:
            return str(breaker.context.state)  # let through in an earlier state: it decides nothing now
        self._breakers.move_to_end(name)
        if ticket.probe:
            breaker.probing = False
        context = breaker.context
        was = context.state
        if ok:
            context.handle_end_request()
        else:
            context.handle_exception(_Failed(name))
        context.messages.clear()
        if context.state != was:
            breaker.generation += 1
        if context.state == CLOSED and not context.failure_count:
            del self._breakers[name]  # closed and clean: forgotten, as if never seen
        return str(context.state)

    def release(self, ticket: Ticket) -> None:
        """A call that ended without an outcome (cancelled): a probe's turn goes to the next call."""
        breaker = self._breakers.get(ticket.name)
        if breaker is not None and ticket.probe and ticket.generation == breaker.generation:
            breaker.probing = False

    def state(self, name: str) -> str:
        """closed, half-opened or opened (an open breaker past its cool-down says opened until its probe)."""
        breaker = self._breakers.get(name)
        return CLOSED if breaker is None else str(breaker.context.state)

    def retry_after_s(self, name: str) -> float:
        """Seconds until an open breaker lets a probe through (0 when it is not open)."""
        breaker = self._breakers.get(name)
        if breaker is None or breaker.context.state != OPENED or breaker.context.opened_at is None:
            return 0.0
        return max(0.0, breaker.context.opened_at + self.cooldown_s - time.time())

    def open_count(self) -> int:
        return sum(1 for breaker in self._breakers.values() if breaker.context.state != CLOSED)
