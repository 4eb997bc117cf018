"""Settings, read from `INFERLINE_*` environment variables; CLI flags override them.

Built in `main`/`create_app`, never at import, so tests and commands can each build their own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, IPvAnyNetwork, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferline.inference.model import ProcessingMode
from inferline.monitor.channels import Channel

DROP_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERLINE_", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; empty means SQLite at <data_dir>/inferline.db"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=4, ge=0, description="in-process job slots of `serve` (per API process)")
    orchestrator_slots: int = Field(
        default=4, ge=1, description="job slots per worker process for kinds that wait on jobs they submit (pipeline)"
    )
    api_processes: int = Field(default=1, ge=1, description="API processes of `serve` sharing one port")
    migrate_on_start: bool = Field(default=True, description="apply migrations when the app starts")
    log_level: str = "info"
    log_json: bool = True

    lease_s: float = Field(default=30.0, gt=0)
    heartbeat_s: float = Field(default=1.0, gt=0, description="lease renewal and cancel check period")
    poll_s: float = Field(default=1.0, gt=0, description="fallback poll when no wake-up arrives")
    mysql_poll_s: float = Field(
        default=0.1,
        gt=0,
        description="on MariaDB/MySQL (no LISTEN/NOTIFY): the longest an idle worker waits before it looks for "
        "jobs submitted by another process",
    )
    claim_batch: int = Field(default=64, ge=1)
    retry_base_s: float = Field(default=1.0, ge=0)
    retry_cap_s: float = Field(default=300.0, ge=0)
    default_max_attempts: int = Field(default=3, ge=1)
    kind_concurrency: dict[str, int] = Field(
        default_factory=dict, description='global running-job limit per kind, e.g. {"ocr": 2}'
    )
    schedule_poll_s: float = Field(default=1.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="a delivery's whole time (resolve to answer)")
    webhook_concurrency: int = Field(default=32, ge=1, description="deliveries in flight per process")
    webhook_tenant_concurrency: int = Field(default=8, ge=1, description="of those, at most this many per tenant")
    webhook_allow_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description='networks webhooks may call besides public addresses, e.g. ["10.0.0.0/8"] (default: none)',
    )
    webhook_resolve_timeout_s: float = Field(default=3.0, gt=0, description="DNS deadline of a webhook URL's check")
    webhook_progress_interval_ms: int = Field(default=500, ge=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_max_age_s: float = Field(
        default=86_400.0, gt=0, description="a delivery held back by its receiver's open breaker this long fails"
    )
    webhook_poll_s: float = Field(default=0.5, gt=0, description="longest wait before a due webhook is sent")
    breaker_failures: int = Field(
        default=5, ge=1, description="failed calls in a row that open the breaker of a webhook receiver or of Redis"
    )
    breaker_cooldown_s: float = Field(
        default=30.0, gt=0, description="an open breaker's wait before one call goes through as a probe"
    )
    events_poll_s: float = Field(
        default=0.25, gt=0, description="period of the one query per process that reads every watched job"
    )
    events_keepalive_s: float = Field(default=15.0, gt=0, description="a `: ping` on an event stream this idle")
    events_max_stream_s: float = Field(
        default=900.0, gt=0, description="an event stream ends after this long (clients resume with Last-Event-ID)"
    )
    events_max_streams_per_tenant: int = Field(
        default=100, ge=0, description="open event streams per tenant and API process before 429 (0: no limit)"
    )
    api_key_cache_s: float = Field(default=5.0, ge=0, description="how long a verified key is trusted")
    unknown_key_burst: int = Field(
        default=30, ge=1, description="unknown API keys a client address may try before 429 (per API process)"
    )
    unknown_keys_per_s: float = Field(default=1.0, gt=0, description="how fast that allowance refills")
    max_request_bytes: int = Field(default=1_000_000, ge=1024, description="413 above this JSON body size")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="where models run")
    model_modes: dict[str, ProcessingMode] = Field(
        default_factory=dict,
        description='per model "standard" or "batched" (default: standard on CPU, batched on CUDA)',
    )
    model_queue_limit: int = Field(default=256, ge=1, description="items waiting per model before 429")
    model_processes: dict[str, int] = Field(
        default_factory=dict,
        description='per model: 0 = on a thread, N = in N child processes, -1 = one per core; e.g. {"tesseract": 2}',
    )
    max_upload_bytes: int = Field(default=200 * 2**20, ge=1, description="413 above this file size")
    files_max_bytes_per_tenant: int = Field(
        default=0, ge=0, description="409 for an upload past this many stored bytes per tenant (0: no limit)"
    )
    files_max_per_tenant: int = Field(
        default=0, ge=0, description="409 for an upload past this many stored files per tenant (0: no limit)"
    )
    files_gc_interval_s: float = Field(
        default=3600.0, ge=0, description="period of the sweep for blobs no file refers to, in workers (0: never)"
    )
    files_orphan_age_s: float = Field(
        default=600.0,
        ge=60,  # younger staged files may be uploads still arriving
        description="the sweep removes unreferenced blobs and staged uploads older than this",
    )
    ocr_max_pages: int = Field(default=1000, ge=1, description="413 for documents with more pages")
    ocr_max_page_pixels: int = Field(
        default=100_000_000, ge=1, description="413 (or a failed job) for a page or image with more pixels"
    )
    ocr_page_memory_mb: int = Field(
        default=3072,
        ge=64,
        description=(
            "memory pdfium may take to read one PDF page in an OCR engine's process (parse, images, bitmap), "
            "and to build a searchable PDF; past it the page fails (forms nested to billions of objects) or an "
            "image that does not fit is left out (a soft mask of billions of pixels)"
        ),
    )
    ocr_page_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        description=(
            "how long an OCR engine's process may read and recognize one page; past it the process is killed and "
            "the job fails with the page's number (a PDF page drawn with billions of pattern cells renders for hours)"
        ),
    )
    ocr_default_dpi: int = Field(default=300, ge=36, le=1200, description="PDF pages are rasterized at this dpi")
    media_max_image_pixels: int = Field(
        default=50_000_000, ge=1, description="413 for a project photo with more pixels (read from its header)"
    )
    media_max_audio_s: float = Field(default=1800.0, gt=0, description="413 for a project song that plays longer")
    media_max_assets: int = Field(default=300, ge=1, description="409 for an upload past this many assets per project")
    media_interpolation_model: str | None = Field(
        default=None,
        description="folder of a frame-interpolation model (model.onnx) for transitions; none: ffmpeg's xfade",
    )
    media_interpolation_depth: int = Field(
        default=4, ge=1, le=7, description="the model is applied this many times: 2**depth + 1 key frames"
    )
    media_transition_timeout_s: float = Field(
        default=120.0, gt=0, description="the model's time for one transition before the xfade fallback runs"
    )
    media_ffmpeg_threads: int = Field(default=2, ge=1, le=64, description="threads of each ffmpeg a media job runs")
    media_video_encoder: Literal["auto", "libx264", "h264_nvenc"] = Field(
        default="auto",
        description="H.264 encoder of media jobs: auto (NVENC where ffmpeg can use it, else libx264), libx264, "
        "or h264_nvenc (media jobs fail where it does not work)",
    )
    media_max_output_bytes: int = Field(
        default=8 * 2**30, ge=1, description="a media job's output file (a clip, the video) larger than this fails it"
    )
    redis_url: str | None = Field(default=None, description="shared search cache (and more) when set")
    otlp_endpoint: str | None = Field(
        default=None, description="an OTLP/HTTP collector's base URL (e.g. http://127.0.0.1:4318): traces are sent"
    )
    otlp_sample_ratio: float = Field(default=1.0, ge=0, le=1, description="share of new traces recorded and sent")
    search_backend: Literal["qdrant", "pgvector"] = Field(
        default="qdrant", description="qdrant: embedded, under the data dir; pgvector: PostgreSQL at scale"
    )
    search_database_url: str | None = Field(
        default=None, description="PostgreSQL with pgvector for search_backend=pgvector [default: database_url]"
    )
    embedding_model: str = Field(default="e5-small", description="of new collections that name none")
    onnx_embedding_models: dict[str, str] = Field(
        default_factory=dict, description="extra embedding models: name -> folder with model.onnx + tokenizer.json"
    )
    chunk_tokens: int = Field(default=256, ge=32, le=512, description="chunk budget in (estimated) model tokens")
    chunk_overlap_tokens: int = Field(default=32, ge=0, le=128, description="repeated between a section's chunks")
    search_window: int = Field(default=200, ge=10, le=2000, description="hits ranked per query (pages come from them)")
    search_fusion: Literal["blend", "rrf"] = Field(
        default="blend", description="hybrid: a weighted sum of scaled scores, or reciprocal rank fusion"
    )
    search_rrf_k: int = Field(default=60, ge=1, description="reciprocal rank fusion's k (search_fusion=rrf)")
    search_weights: dict[str, float] = Field(
        default_factory=lambda: {"semantic": 0.5, "keyword": 1.0},
        description="hybrid: weight of each mode in fusion (the keyword one is scaled per query: docs/search.md)",
    )
    search_cache_size: int = Field(default=4096, ge=0, description="search results kept in this process (LRU)")
    search_cache_ttl_s: int = Field(default=3600, ge=1, description="lifetime of search results in Redis")
    batch_max_file_bytes: int = Field(
        default=2 * 2**30, ge=1, description="a batch input file over this size fails the batch"
    )
    batch_max_records: int = Field(default=1_000_000, ge=1, description="a batch input with more records fails")
    batch_max_line_bytes: int = Field(
        default=1 * 2**20, ge=64, description="a JSONL line over this is a failed record (CSV: fails the batch)"
    )
    batch_max_record_bytes: int = Field(
        default=256 * 2**10, ge=16, description="a record whose text is longer (UTF-8 bytes) is a failed record"
    )
    batch_chunk_records: int = Field(default=100, ge=1, le=10_000, description="records per checkpoint by default")
    batch_drop_folders: dict[str, dict[str, Path]] = Field(
        default_factory=dict,
        description='per tenant, its drop folders by name: {"tenant-a": {"nightly": "/srv/drop/nightly"}}; a '
        "scheduled batch names one, never a path (docs/batches.md)",
    )
    batch_drop_max_files: int = Field(default=100, ge=1, le=10_000, description="files one run takes, oldest first")
    batch_drop_settle_s: float = Field(
        default=60.0, ge=0, description="a drop file modified more recently is left for the next run (still written)"
    )
    grpc_port: int | None = Field(
        default=None, ge=0, le=65535, description="`serve` also serves the gRPC record stream on this port (on `host`)"
    )
    grpc_window_records: int = Field(
        default=256, ge=1, le=100_000, description="records of a stream read and not yet acknowledged, at most"
    )
    grpc_group_records: int = Field(default=128, ge=1, le=10_000, description="most records committed together")
    grpc_tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate chain: the record stream is served over TLS (with the key file)"
    )
    grpc_tls_key_file: Path | None = Field(default=None, description="PEM private key of `grpc_tls_cert_file`")
    grpc_idle_s: float = Field(default=60.0, gt=0, description="a stream that sends no record for this long ends")
    grpc_streams_per_tenant: int = Field(default=2, ge=1, description="open record streams of one tenant, at most")
    grpc_max_streams: int = Field(default=64, ge=1, description="open record streams of all tenants, at most")
    grpc_max_message_bytes: int = Field(
        default=2**20, ge=1024, description="largest gRPC message taken (a record: its text, metadata and id)"
    )
    graphql_ide: bool = Field(
        default=False, description="serve the GraphiQL page at `GET /graphql` (development; the API is on anyway)"
    )
    plugins: list[str] = Field(default_factory=list, description="modules to import that register job kinds")
    metrics_port: int | None = Field(default=None, description="`inferline worker` exposes metrics here")
    metrics_host: str = Field(
        default="127.0.0.1",
        max_length=255,
        description="the address `inferline worker --metrics-port` listens on (no key there: keep it private)",
    )
    metrics_require_key: bool = Field(
        default=False, description="`GET /metrics` asks for a valid API key (any tenant's); off: open to all"
    )

    admin_tenants: list[str] = Field(
        default_factory=lambda: ["default"],
        description="tenants whose keys are admins': system metrics, alert rules, monitor health",
    )
    monitor_enabled: bool = Field(
        default=True,
        description="stand for the metrics sampler and the alert evaluator; report presence with workers "
        "[default: on, except on MariaDB/MySQL, where the monitor cannot run]",
    )
    monitor_sample_s: float = Field(default=15.0, ge=0.05, description="period of the metrics sampler")
    monitor_evaluate_s: float = Field(default=15.0, ge=0.05, description="period of the alert evaluator")
    monitor_presence_s: float = Field(default=15.0, ge=0.05, description="period of each worker process's report")
    monitor_raw_retention_s: float = Field(default=86_400, ge=60, description="raw samples are kept this long")
    monitor_minute_retention_s: float = Field(default=7 * 86_400, ge=3600, description="1-minute rollups")
    monitor_hour_retention_s: float = Field(default=365 * 86_400, ge=86_400, description="1-hour rollups")
    monitor_channels: dict[str, Channel] = Field(
        default_factory=dict,
        description='notification channels by name, e.g. {"ops": {"type": "slack", "url": "https://hooks..."}}',
    )
    monitor_default_channels: list[str] = Field(
        default_factory=list, description="channels of the built-in alert rules (when first created)"
    )
    monitor_notify_attempts: int = Field(default=3, ge=1, le=10, description="tries of one notification")
    monitor_notify_timeout_s: float = Field(default=10.0, gt=0, description="one notification's whole time")
    monitor_breaker_failures: int = Field(default=5, ge=1, description="failed tries that open a channel's breaker")
    monitor_breaker_cooldown_s: float = Field(default=60.0, gt=0, description="an open breaker's wait before a probe")
    monitor_disk_min_free_ratio: float = Field(default=0.1, ge=0, le=1, description="health: degraded below this")
    monitor_metric_queries_per_tenant: int = Field(
        default=2, ge=1, le=100, description="`/monitor/metrics` queries one tenant runs at a time in a process (429)"
    )

    events_broker: str | None = Field(
        default=None,
        max_length=2000,
        description="job, batch and alert events go to this broker: nats://host:4222, redis://host:6379/0 or "
        "amqp://user:pass@host:5672/ (unset: no events are written, at no cost)",
    )
    events_topic: str = Field(
        default="inferline",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="names the NATS stream and subjects, the Redis stream and the RabbitMQ exchange",
    )
    events_outbox_max_rows: int = Field(
        default=100_000, ge=100, description="unsent events kept; newer ones go to the dead letters (docs/events.md)"
    )
    events_batch: int = Field(default=256, ge=1, le=10_000, description="events per broker round trip")
    events_publish_poll_s: float = Field(default=0.5, gt=0, description="the publisher looks for new events this often")
    events_publish_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="the whole time at the broker of one database round of events (all its round trips)",
    )
    events_max_bytes: int = Field(
        default=1_000_000, ge=1024, description="an event larger than this (JSON) is dead-lettered, not sent"
    )
    jobs_retention_s: float = Field(
        default=0.0,
        ge=0,
        description="ended jobs are deleted this long after they end (0: kept for ever; else at least 3600)",
    )
    events_sent_retention_s: float = Field(default=3600.0, ge=0, description="sent events stay in the outbox this long")
    events_stream_max_events: int = Field(
        default=1_000_000, ge=1, description="the broker's stream (NATS, Redis) or queue (RabbitMQ) keeps this many"
    )

    @field_validator("events_broker")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        schemes = ("nats://", "tls://", "redis://", "rediss://", "amqp://", "amqps://")
        if value and not value.startswith(schemes):
            raise ValueError(f"events_broker: a URL starting with one of {', '.join(schemes)}")
        return value or None

    @field_validator("batch_drop_folders")
    @classmethod
    def _drop_folders(cls, value: dict[str, dict[str, Path]]) -> dict[str, dict[str, Path]]:
        for tenant, folders in value.items():
            for name, path in folders.items():
                if not DROP_FOLDER_NAME.fullmatch(name):
                    raise ValueError(f"batch_drop_folders: {tenant}'s folder name {name!r} is not [A-Za-z0-9_-]")
                if not path.is_absolute() or ".." in path.parts:
                    raise ValueError(f"batch_drop_folders: {tenant}'s {name!r} is not an absolute path without ..")
        return value

    @field_validator("kind_concurrency")
    @classmethod
    def _limits_positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [kind for kind, limit in value.items() if limit < 1]
        if bad:
            raise ValueError(f"kind_concurrency limits must be >= 1: {bad}")
        return value

    @field_validator("jobs_retention_s")
    @classmethod
    def _retention_long_enough(cls, value: float) -> float:
        if 0 < value < 3600:  # the monitor's windows and a parent's read of its children need the last minutes
            raise ValueError("jobs_retention_s: 0 (jobs are kept) or at least 3600")
        return value

    @model_validator(mode="after")
    def _grpc_tls_pair(self) -> Settings:
        if (self.grpc_tls_cert_file is None) != (self.grpc_tls_key_file is None):
            raise ValueError("grpc_tls_cert_file and grpc_tls_key_file: give both or neither")
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as INFERLINE_* variables, for child processes to read back."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            if value is not None:
                text = value if isinstance(value, str) else json.dumps(value)
                env[f"INFERLINE_{name.upper()}"] = text
        return env

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'inferline.db').resolve()}"

    @property
    def monitor_retention_s(self) -> dict[int, float]:
        """Retention by resolution (0: raw samples)."""
        return {
            0: self.monitor_raw_retention_s,
            60: self.monitor_minute_retention_s,
            3600: self.monitor_hour_retention_s,
        }

    @model_validator(mode="after")
    def _no_monitor_by_default_on_mysql(self) -> Settings:
        """The monitor's SQL needs PostgreSQL or SQLite: off unless asked for, and asked for on MariaDB it
        stops the start (`bootstrap.refuse_on_mysql`)."""
        if self.is_mysql and "monitor_enabled" not in self.model_fields_set:
            self.monitor_enabled = False
        return self

    @property
    def is_mysql(self) -> bool:
        return self.resolved_database_url.startswith(("mysql", "mariadb"))

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
