"""Monitor: metrics history, alert rules and their notifications, and the health of each component.

- Metrics history (`sampler.py`, `samples.py`): one process of the fleet at a time (a database lease)
  samples system and application metrics every `monitor_sample_s` into `metric_samples`, rolls them up
  to 1-minute and 1-hour rows and drops what is past retention. `GET /api/v1/monitor/metrics`.
- Alerts (`rules.py`, `evaluator.py`): rules over those series, evaluated by one process at a time;
  each series of a rule goes pending -> firing -> resolved, kept as history. `/monitor/rules`,
  `/monitor/alerts`.
- Channels (`channels.py`, `notifier.py`): email (SMTP), Slack-compatible and signed webhooks, each
  behind a circuit breaker, with retries.
- Health (`health.py`): database, Redis, models, disk, blob store, channels. `/monitor/health`, `/readyz`.

No job kind: the monitor's loops (`loops.py`) run in `bootstrap.Background`, or in `bootstrap.MonitorLoops`
in an API process without worker slots.
"""
