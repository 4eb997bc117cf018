"""Events to a message broker, through a transactional outbox.

Every job state change, `batch.completed`/`batch.failed` and `alert.firing`/`alert.resolved` is written to
`event_outbox` in the transaction of the change (`outbox.py`; job changes from `jobs/store.py`, only when
the `events_broker` setting is set). One publisher per fleet (lease `events.publisher`, `publisher.py`)
sends them, in outbox order, as CloudEvents 1.0 JSON (`envelope.py`) to NATS JetStream, Redis Streams
or RabbitMQ (`broker.py`: the port; `nats.py`, `redis.py`, `rabbitmq.py`: adapters). Events the broker
refuses land in `event_dead_letters` (`service.py`: list and retry; routes under `/api/v1/events`).
`inferline events tail` follows the stream from the broker (`cli/events.py`). See docs/events.md.
"""
