"""Notification channels as an admin configures them (`monitor_channels`): where alerts go. What sends
to each is `senders.py`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class EmailChannel(BaseModel):
    """Email over SMTP: STARTTLS (`starttls`) or implicit TLS (`tls`) to `host`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["email"]
    host: str = Field(max_length=255)
    port: int = Field(default=587, ge=1, le=65535)
    username: str | None = Field(default=None, max_length=255)
    password: SecretStr | None = None
    starttls: bool = True
    tls: bool = False
    sender: str = Field(max_length=255, description="the From address")
    to: list[str] = Field(min_length=1, max_length=50)


class SlackChannel(BaseModel):
    """A Slack-compatible incoming webhook (`{"text": ...}`; Mattermost and Rocket.Chat take it too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["slack"]
    url: str = Field(max_length=2048)


class WebhookChannel(BaseModel):
    """A generic webhook, signed like job webhooks (Standard Webhooks) with the channel's own secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["webhook"]
    url: str = Field(max_length=2048)
    secret: SecretStr = Field(description="whsec_<base64 key>, as `inferline.jobs.webhooks.new_secret` makes")


Channel = Annotated[EmailChannel | SlackChannel | WebhookChannel, Field(discriminator="type")]
