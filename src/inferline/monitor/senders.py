"""Sending one alert notification to one channel: SMTP, a Slack-compatible or a signed generic webhook.
Each raises DeliveryFailed when the channel does not take it; the caller bounds the time."""

from __future__ import annotations

import email.errors
import json
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx

from inferline.clock import utcnow
from inferline.errors import DeliveryFailed, InvalidInput
from inferline.jobs.webhooks import sign
from inferline.monitor.channels import Channel, EmailChannel, SlackChannel, WebhookChannel
from inferline.outbound import OutboundPolicy


@dataclass(frozen=True)
class Notification:
    id: str  # stable per alert and event: receivers dedupe retries on it
    event: str  # "firing" | "resolved"
    alert_id: str
    rule: str
    severity: str
    metric: str
    labels: dict[str, str]
    value: float | None
    comparator: str
    threshold: float
    at: datetime

    def summary(self) -> str:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        value = "no data" if self.value is None else f"{self.value:g}"
        state = "FIRING" if self.event == "firing" else "RESOLVED"
        return (
            f"[{state}] {self.rule} ({self.severity}): {self.metric}{{{labels}}} = {value} "
            f"({self.comparator} {self.threshold:g})"
        )

    def payload(self) -> dict[str, Any]:
        return {
            "type": f"alert.{self.event}",
            "timestamp": self.at.isoformat(),
            "data": asdict(self) | {"at": self.at.isoformat()},
        }


async def send(
    channel: Channel,
    notification: Notification,
    *,
    client: httpx.AsyncClient,
    outbound: OutboundPolicy,
    timeout_s: float,
) -> None:
    if isinstance(channel, EmailChannel):
        await _email(channel, notification, timeout_s)
    elif isinstance(channel, SlackChannel):
        body = json.dumps({"text": notification.summary()}).encode()
        await _post(client, outbound, channel.url, body, {"content-type": "application/json"})
    else:
        await _signed_webhook(client, outbound, channel, notification)


def one_line(text: str) -> str:
    """`text` without what ends a line or controls a terminal (Cc, Zl, Zp: email headers split on
    U+0085 and U+2028 as on a newline), each as a space."""
    return "".join(" " if unicodedata.category(char) in LINE_BREAKING else char for char in text)


LINE_BREAKING = frozenset({"Cc", "Zl", "Zp"})


def _message(channel: EmailChannel, notification: Notification) -> EmailMessage:
    """DeliveryFailed when a header cannot be written (an address of the channel's settings with a
    line break in it): the delivery is then retried and counted like any other failure."""
    message = EmailMessage()
    try:
        message["From"] = channel.sender
        message["To"] = ", ".join(channel.to)
        message["Subject"] = one_line(notification.summary())[:200]
        message["Message-ID"] = f"<{notification.id}@inferline>"
        message.set_content(json.dumps(notification.payload(), indent=2))
    except (ValueError, TypeError, email.errors.MessageError) as exc:
        raise DeliveryFailed(f"email headers: {type(exc).__name__}: {exc}") from exc
    return message


async def _email(channel: EmailChannel, notification: Notification, timeout_s: float) -> None:
    message = _message(channel, notification)
    try:
        await aiosmtplib.send(
            message,
            hostname=channel.host,
            port=channel.port,
            username=channel.username,
            password=channel.password.get_secret_value() if channel.password else None,
            start_tls=channel.starttls and not channel.tls,
            use_tls=channel.tls,
            timeout=timeout_s,
        )
    except (aiosmtplib.SMTPException, OSError, ValueError, email.errors.MessageError) as exc:
        raise DeliveryFailed(f"SMTP {channel.host}:{channel.port}: {type(exc).__name__}: {exc}") from exc


async def _signed_webhook(
    client: httpx.AsyncClient, outbound: OutboundPolicy, channel: WebhookChannel, notification: Notification
) -> None:
    body = json.dumps(notification.payload(), separators=(",", ":")).encode()
    stamp = int(utcnow().timestamp())
    headers = {
        "content-type": "application/json",
        "webhook-id": notification.id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(channel.secret.get_secret_value(), notification.id, stamp, body),
    }
    await _post(client, outbound, channel.url, body, headers)


async def _post(
    client: httpx.AsyncClient, outbound: OutboundPolicy, url: str, body: bytes, headers: dict[str, str]
) -> None:
    """POST through the outbound policy (the address checked, then pinned); 2xx or DeliveryFailed."""
    try:
        target = await outbound.resolve(url, field="channel.url")
        response = await client.send(target.request(client, "POST", content=body, headers=headers), stream=True)
        await response.aclose()  # the status is the answer; the body is never read
    except InvalidInput as exc:
        raise DeliveryFailed(f"refused: {exc}") from exc
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"HTTP {response.status_code}")
