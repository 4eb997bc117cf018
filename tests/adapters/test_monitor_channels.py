"""Alert notifications through real channels: a local SMTP server (aiosmtpd) and HTTP receivers; the
circuit breaker of a channel that keeps failing opens, and closes again after a successful probe."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import ipaddress
import json
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from tests.api.test_webhooks import Receiver

from inferline.jobs.webhooks import new_secret, verify
from inferline.metrics import Metrics
from inferline.monitor.channels import Channel, EmailChannel, SlackChannel, WebhookChannel
from inferline.monitor.notifier import Notifier
from inferline.monitor.senders import Notification
from inferline.outbound import OutboundPolicy

LOOPBACK = OutboundPolicy(allow_networks=[ipaddress.ip_network("127.0.0.0/8")])


def notification(event: str = "firing") -> Notification:
    return Notification(
        id=f"alert-1.{event}.1",
        event=event,
        alert_id="alert-1",
        rule="queue growing",
        severity="warning",
        metric="queue_depth",
        labels={"kind": "ocr", "status": "queued"},
        value=42.0,
        comparator="gt",
        threshold=0.0,
        at=datetime(2026, 12, 10, 9, 0, tzinfo=UTC),
    )


def notifier(channels: dict[str, Channel], *, outbound: OutboundPolicy = LOOPBACK, **options: Any) -> Notifier:
    values: dict[str, Any] = {"attempts": 1, "timeout_s": 2.0, "breaker_failures": 3, "cooldown_s": 60.0}
    return Notifier(channels, outbound=outbound, metrics=Metrics(), backoff_s=0.01, **(values | options))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    async with server:
        yield receiver


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # aiosmtpd calls it by this name
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


async def test_email_reaches_a_real_smtp_server(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    channel = EmailChannel(
        type="email", host="127.0.0.1", port=port, starttls=False, sender="alerts@example.org", to=["ops@example.org"]
    )
    sender = notifier({"mail": channel})
    try:
        assert await sender.deliver("mail", channel, notification()) == "sent"
    finally:
        await sender.aclose()
    [envelope] = mailbox.messages
    assert envelope.rcpt_tos == ["ops@example.org"]
    text = envelope.content.decode()
    assert "[FIRING] queue growing" in text and '"alert.firing"' in text


async def test_a_rule_name_with_line_separators_still_makes_a_one_line_subject(smtp: tuple[Mailbox, int]) -> None:
    """Names made before rule names refused them: U+0085 and U+2028 break an email header's line."""
    mailbox, port = smtp
    channel = EmailChannel(
        type="email", host="127.0.0.1", port=port, starttls=False, sender="alerts@example.org", to=["ops@example.org"]
    )
    sender = notifier({"mail": channel})
    odd = dataclasses.replace(notification(), rule="queue\x85growing\u2028fast\u2029now")
    try:
        assert await sender.deliver("mail", channel, odd) == "sent"
    finally:
        await sender.aclose()
    [envelope] = mailbox.messages
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert (
        message["Subject"]
        == "[FIRING] queue growing fast now (warning): queue_depth{kind=ocr, status=queued} = 42 (gt 0)"
    )


async def test_an_unwritable_header_is_a_failed_delivery_not_a_dead_task(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    channel = EmailChannel(
        type="email", host="127.0.0.1", port=port, starttls=False, sender="alerts@example.org\nBcc: x@example.org",
        to=["ops@example.org"],
    )  # fmt: skip
    sender = notifier({"mail": channel}, attempts=2, breaker_failures=2)
    try:
        assert await sender.deliver("mail", channel, notification()) == "failed"
        assert await sender.breaker_state("mail") == "opened"  # both tries counted by the breaker
    finally:
        await sender.aclose()
    assert mailbox.messages == []
    counted = sender.metrics.notifications.labels(channel="mail", result="failed")._value.get()
    assert counted == 1


async def test_slack_and_signed_webhooks_carry_the_alert(receiver: Receiver) -> None:
    secret = new_secret()
    url = f"http://127.0.0.1:{receiver.port}/hook"
    channels: dict[str, Channel] = {
        "chat": SlackChannel(type="slack", url=url),
        "hook": WebhookChannel(type="webhook", url=url, secret=secret),
    }
    sender = notifier(channels)
    try:
        sender.notify(notification("resolved"), ["chat", "hook", "nowhere"])
        await sender.wait_sent()
    finally:
        await sender.aclose()
    bodies = {json.loads(body).get("type", "slack"): (headers, body) for headers, body in receiver.requests}
    assert json.loads(bodies["slack"][1])["text"].startswith("[RESOLVED] queue growing")
    headers, body = bodies["alert.resolved"]
    assert verify(secret, headers, body) and headers["webhook-id"] == "alert-1.resolved.1"
    assert json.loads(body)["data"]["labels"] == {"kind": "ocr", "status": "queued"}


async def test_a_failing_receiver_opens_the_breaker_which_recovers_after_a_probe(receiver: Receiver) -> None:
    receiver.fail_first = 3
    channel = SlackChannel(type="slack", url=f"http://127.0.0.1:{receiver.port}/")
    sender = notifier({"chat": channel}, breaker_failures=3, cooldown_s=0.3)
    try:
        results = [await sender.deliver("chat", channel, notification()) for _ in range(4)]
        assert results == ["failed", "failed", "failed", "dropped"]
        assert len(receiver.requests) == 3  # the open breaker sent nothing more
        assert await sender.breaker_state("chat") == "opened"
        assert sender.metrics.breaker_state.labels(channel="chat")._value.get() == 1.0
        await asyncio.sleep(0.35)
        assert await sender.deliver("chat", channel, notification()) == "sent"  # the half-open probe
        assert await sender.breaker_state("chat") == "closed"
        assert sender.metrics.breaker_state.labels(channel="chat")._value.get() == 0.0
    finally:
        await sender.aclose()


async def test_retries_with_backoff_within_one_delivery(receiver: Receiver) -> None:
    receiver.fail_first = 2
    channel = SlackChannel(type="slack", url=f"http://127.0.0.1:{receiver.port}/")
    sender = notifier({"chat": channel}, attempts=3)
    try:
        assert await sender.deliver("chat", channel, notification()) == "sent"
    finally:
        await sender.aclose()
    assert len(receiver.requests) == 3


async def test_channels_obey_the_outbound_policy(receiver: Receiver) -> None:
    channel = SlackChannel(type="slack", url=f"http://127.0.0.1:{receiver.port}/")
    sender = notifier({"chat": channel}, outbound=OutboundPolicy())  # public addresses only
    try:
        assert await sender.deliver("chat", channel, notification()) == "failed"
    finally:
        await sender.aclose()
    assert receiver.requests == []
