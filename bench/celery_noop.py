"""The Celery baseline's no-op task: one INCR so the bench can count completions."""

from __future__ import annotations

import os

import redis
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
app = Celery("bench", broker=REDIS_URL)
app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=64, broker_connection_retry_on_startup=True)
_counter = redis.Redis.from_url(REDIS_URL)


@app.task(name="noop")
def noop() -> None:
    _counter.incr("bench:done")
