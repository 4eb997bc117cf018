"""The one exception tree of inferline.

    InferlineError
    ├── NotFound                  a resource is absent, or belongs to another tenant (never say which)
    ├── Conflict                  the request contradicts the resource's state
    │   ├── InvalidTransition     a job cannot move from its status to the asked one
    │   ├── IdempotencyConflict   same Idempotency-Key, different body
    │   ├── QuotaExceeded         the tenant's stored files are at a quota of the settings
    │   └── LeaseLost             this process no longer holds a named lease: its write is refused
    ├── InvalidInput              the request names something that does not exist or is malformed
    ├── TooLarge                  the request is over a size limit of the settings
    ├── UnsupportedMediaType      a file's content (sniffed, not its name) is of a type not accepted here
    ├── Unauthorized              missing or unknown API key
    ├── Forbidden                 a valid key that may not do this (an admin's operation)
    ├── Overloaded                a queue is full; carries retry_after_s
    ├── Unavailable               the database does not answer now; carries retry_after_s
    ├── ModelError                a model broke its contract, failed to load, or its process died
    │   └── ModelProcessDied      its process ended while computing the input (how: `signal_name`)
    ├── DeliveryFailed            a notification channel did not take an alert (the monitor retries)
    ├── BrokerUnavailable         the event broker is unreachable or slow (the outbox keeps the events)
    ├── EventRejected             the event broker refused one event (too large, no stream): dead-lettered
    └── JobError                  raised by job code; retryable unless NonRetryable
        ├── NonRetryable          fails the job at once
        │   └── BadDocument       the input file is corrupt, truncated, encrypted or a decompression bomb
        ├── Canceled              the job was canceled (by a user or its deadline)
        └── Retry                 asks for another attempt after `after_s`

The API maps these to HTTP in one table (`api/problems.py`); workers never raise HTTP errors. What a
tenant is shown of any other exception is `shown_message`'s.
"""

from __future__ import annotations

import re

SURROGATE = re.compile("[\ud800-\udfff]")  # lone UTF-16 surrogates: no database stores them, UTF-8 cannot encode them


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` holds a lone UTF-16 surrogate (ASCII, the common case, is not searched)."""
    return not text.isascii() and SURROGATE.search(text) is not None


def sendable(text: str) -> str:
    """`text` with each lone UTF-16 surrogate shown as U+FFFD (ASCII, the common case, is not searched)."""
    return text if text.isascii() else SURROGATE.sub("\ufffd", text)


class InferlineError(Exception):
    """Base of every error inferline raises on purpose."""


class NotFound(InferlineError):
    pass


class Conflict(InferlineError):
    pass


class InvalidTransition(Conflict):
    pass


class IdempotencyConflict(Conflict):
    pass


class QuotaExceeded(Conflict):
    """409 like every Conflict: the tenant's state refuses it, and deleting files resolves it."""


class LeaseLost(Conflict):
    """A fenced write found its lease expired or another process's (`leases.confirm`)."""


class InvalidInput(InferlineError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TooLarge(InferlineError):
    pass


class UnsupportedMediaType(InferlineError):
    pass


class Unauthorized(InferlineError):
    pass


class Forbidden(InferlineError):
    pass


class Overloaded(InferlineError):
    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(InferlineError):
    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelError(InferlineError):
    """The model broke its contract, failed to load, or its process died."""


class ModelProcessDied(ModelError):
    """A model's process ended while it computed the input. `signal_name`: the signal that ended it
    (SIGABRT: a native library gave up, e.g. past a `memory.budget`; SIGKILL: the OOM killer, or
    someone), None for an exit."""

    def __init__(self, message: str, signal_name: str | None = None) -> None:
        super().__init__(message)
        self.signal_name = signal_name


class ModelTimedOut(ModelError):
    """A model's process computed one batch past its time allowance (`limit_s`: the model's
    `item_timeout_s` times the batch's items) and was killed for it; a new process takes its place."""

    def __init__(self, message: str, limit_s: float) -> None:
        super().__init__(message)
        self.limit_s = limit_s


class DeliveryFailed(InferlineError):
    """A notification channel refused or did not answer; the monitor retries, then its breaker opens."""


class BrokerUnavailable(InferlineError):
    """The event broker did not take a batch in time or cannot be reached; the events wait in the outbox
    and the publisher tries again with backoff."""


class EventRejected(InferlineError):
    """The event broker answered, refusing this one event: retrying it unchanged would fail again, so it
    goes to `event_dead_letters` with this message as the reason."""


class JobError(InferlineError):
    """An attempt of a job failed; the worker retries it unless it is NonRetryable."""


class NonRetryable(JobError):
    pass


class BadDocument(NonRetryable):
    pass


class Canceled(JobError):
    def __init__(self, reason: str = "canceled") -> None:
        super().__init__(reason)
        self.reason = reason


class Retry(JobError):
    def __init__(self, message: str = "retry requested", *, after_s: float | None = None) -> None:
        super().__init__(message)
        self.after_s = after_s


def shown_message(exc: BaseException, *, reference: str) -> str:
    """The text of a failure that a tenant is shown (a job's or a document's error, a 500's detail).

    An error of this tree is raised on purpose, in words meant for the caller. Anything else (a library's
    or the database's exception) can carry SQL, paths or addresses, and so can a ModelError, which wraps
    what a model raised: of those only the type is shown, with `reference` ("job <id>") to find the full
    text in the log, where the caller logs it. U+0000 and lone UTF-16 surrogates, which PostgreSQL stores in
    no text, are shown as U+FFFD (`inputs.shown_text`)."""
    if isinstance(exc, InferlineError) and not isinstance(exc, ModelError):
        return sendable((str(exc) or type(exc).__name__).replace("\x00", "\ufffd"))
    return f"internal error ({type(exc).__name__}); the server log has it under {reference}"
