"""Delivering alert notifications: each to each of its channels as a task of its own, retried with
backoff, behind the channel's circuit breaker (purgatory): `breaker_failures` failed tries in a row
open it, and while open nothing is sent to the channel (the notification is dropped and counted, a
firing alert is sent again after its rule's `repeat_s`); after `cooldown_s` the next try is a probe
that closes it again or reopens it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
import structlog
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from inferline.breakers import BREAKER_VALUE
from inferline.errors import DeliveryFailed
from inferline.metrics import Metrics
from inferline.monitor.channels import Channel
from inferline.monitor.senders import Notification, send
from inferline.outbound import OutboundPolicy

log = structlog.get_logger(__name__)


class Notifier:
    def __init__(
        self,
        channels: Mapping[str, Channel],
        *,
        outbound: OutboundPolicy,
        metrics: Metrics,
        attempts: int,
        timeout_s: float,
        breaker_failures: int,
        cooldown_s: float,
        backoff_s: float = 1.0,
    ) -> None:
        self.channels = dict(channels)
        self.outbound = outbound
        self.metrics = metrics
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.breakers = AsyncCircuitBreakerFactory(default_threshold=breaker_failures, default_ttl=cooldown_s)
        # As for job webhooks: no connection kept for another request, no proxy or netrc from the environment.
        self.client = httpx.AsyncClient(
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._sending: set[asyncio.Task[str]] = set()

    def notify(self, notification: Notification, channel_names: list[str]) -> None:
        """Start sending to each named channel (unknown names are logged and skipped)."""
        for name in channel_names:
            channel = self.channels.get(name)
            if channel is None:
                log.warning("alert_channel_unknown", channel=name, rule=notification.rule)
                continue
            task = asyncio.create_task(self.deliver(name, channel, notification), name=f"notify {name}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def deliver(self, name: str, channel: Channel, notification: Notification) -> str:
        """Send with retries; returns "sent", "failed" (every try failed) or "dropped" (breaker open)."""
        result = "failed"
        for attempt in range(self.attempts):
            try:
                breaker = await self.breakers.get_breaker(name)
                async with breaker:
                    async with asyncio.timeout(self.timeout_s):
                        await send(
                            channel, notification, client=self.client, outbound=self.outbound, timeout_s=self.timeout_s
                        )
                result = "sent"
                break
            except OpenedState:
                result = "dropped"
                break
            except (DeliveryFailed, TimeoutError) as exc:
                log.warning("alert_notification_failed", channel=name, attempt=attempt + 1, error=str(exc) or "timeout")
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.backoff_s * 2**attempt)
        self.metrics.notifications.labels(channel=name, result=result).inc()
        await self._export_state(name)
        if result != "sent":
            log.warning("alert_notification_not_sent", channel=name, result=result, alert_id=notification.alert_id)
        return result

    async def _export_state(self, name: str) -> None:
        self.metrics.breaker_state.labels(channel=name).set(BREAKER_VALUE[await self.breaker_state(name)])

    async def breaker_state(self, name: str) -> str:
        """closed, half-opened or opened (an open breaker past its cool-down still says opened until the
        next try probes it)."""
        breaker = await self.breakers.get_breaker(name)
        return str(breaker.context.state)

    async def breaker_states(self) -> dict[str, str]:
        return {name: await self.breaker_state(name) for name in sorted(self.channels)}

    async def wait_sent(self) -> None:
        while self._sending:
            await asyncio.wait(set(self._sending))

    async def aclose(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        await self.client.aclose()
