"""The only place that picks adapters: builds the services of one process from its settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import plugins
from inferline.batches import kind as batch_kind
from inferline.batches import scheduled as scheduled_batch
from inferline.batches.deps import BatchDeps
from inferline.breakers import Breakers
from inferline.config import Settings
from inferline.db import SqliteWriter, create_engine
from inferline.events import outbox
from inferline.events.broker import Broker
from inferline.events.deps import EventsDeps
from inferline.events.publisher import Publisher
from inferline.files.blobs import BlobStore
from inferline.files.sweep import run_sweeper
from inferline.inference.runtime import ModelRuntime
from inferline.jobs import echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import RetryPolicy
from inferline.jobs.retention import Retention
from inferline.jobs.runtime import Worker, WorkerConfig
from inferline.jobs.schedules import run_scheduler
from inferline.jobs.submission import Submitter
from inferline.jobs.wakeup import LocalWakeup, PollingWakeup, PostgresWakeup, Wakeup
from inferline.jobs.watchers import JobWatchers
from inferline.jobs.webhooks import WebhookDispatcher
from inferline.media import kind as media_kind
from inferline.media.deps import MediaDeps
from inferline.media.interpolation import MODEL_NAME as INTERPOLATION_MODEL
from inferline.media.interpolation import InterpolationFactory
from inferline.metrics import Metrics
from inferline.monitor import loops as monitor_loops
from inferline.monitor.deps import MonitorDeps
from inferline.monitor.presence import model_states
from inferline.ocr import kind as ocr_kind
from inferline.ocr.deps import OcrDeps
from inferline.ocr.rapid import RapidOcrModel
from inferline.ocr.tesseract import TesseractModel
from inferline.outbound import OutboundPolicy
from inferline.records.deps import RecordDeps
from inferline.search import kind as search_kind
from inferline.search.deps import SearchDeps
from inferline.search.embedders import E5Small, EmbeddingModel, OnnxFactory, QueryCopy, UseMultilingual, query_model
from inferline.search.index import SearchIndex
from inferline.search.pgvector import PgVectorIndex
from inferline.search.qdrant import QdrantIndex
from inferline.tenants import Authenticator, FailureBudget
from inferline.threads import to_thread
from inferline.tracing import Tracing


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    registry: KindRegistry
    wakeup: Wakeup
    metrics: Metrics
    auth: Authenticator
    submitter: Submitter
    models: ModelRuntime
    blobs: BlobStore
    ocr: OcrDeps
    search: SearchDeps
    media: MediaDeps
    batches: BatchDeps
    records: RecordDeps
    watchers: JobWatchers
    monitor: MonitorDeps
    tracing: Tracing
    events: EventsDeps
    plugins: list[ModuleType] = field(default_factory=list)

    async def aclose(self) -> None:
        if self.events.broker is not None:
            await self.events.broker.aclose()
        await self.search.index.close()
        await self.search.result_cache.close()
        await self.models.aclose()
        await self.watchers.aclose()
        await self.monitor.notifier.aclose()
        self.submitter.close()
        await self.wakeup.aclose()
        await self.engine.dispose()
        await to_thread(self.tracing.shutdown)  # sends what is buffered: not on the event loop


def register_kinds(services: Services) -> None:
    """Every job kind this process can run: the built-in workloads', then the plugins'. On MariaDB/MySQL
    the workloads' kinds are left out (their SQL needs PostgreSQL or SQLite, see `refuse_on_mysql`): a
    submission of one is a 422 naming an unknown kind, not a job that fails halfway."""
    registry = services.registry
    echo.register(registry)
    if not services.settings.is_mysql:
        ocr_kind.register(registry, services.ocr)
        search_kind.register(registry, services.search, services.ocr)
        media_kind.register(registry, services.media)
        batch_kind.register(registry, services.batches)
        scheduled_batch.register(registry, services.batches)
    services.plugins = plugins.load(services.settings.plugins)
    plugins.register(services, services.plugins)


def register_models(settings: Settings, models: ModelRuntime) -> frozenset[str]:
    """Every model this process can run; returns the names of the embedding models."""
    page_s = settings.ocr_page_timeout_s
    models.register(TesseractModel.name, TesseractModel, item_timeout_s=page_s)
    models.register(RapidOcrModel.name, RapidOcrModel, item_timeout_s=page_s)
    factories: dict[str, Callable[[], EmbeddingModel]] = {E5Small.name: E5Small, UseMultilingual.name: UseMultilingual}
    factories |= {name: OnnxFactory(folder) for name, folder in settings.onnx_embedding_models.items()}
    for name, factory in factories.items():
        models.register(name, factory)
        # Search queries get a model process of their own, so a query never waits behind an ingest's
        # batch of passages (32 chunks of 256 tokens: ~0.9 s on 2 cores).
        models.register(query_model(name), QueryCopy(factory))
    if settings.media_interpolation_model:
        models.register(INTERPOLATION_MODEL, InterpolationFactory(settings.media_interpolation_model))
    return frozenset(factories)


def build_models(settings: Settings, metrics: Metrics) -> tuple[ModelRuntime, frozenset[str]]:
    """The model runtime with every model registered, and the names of the embedding models."""
    models = ModelRuntime(
        device=settings.device,
        modes=settings.model_modes,
        queue_limit=settings.model_queue_limit,
        metrics=metrics,
        processes=settings.model_processes,
    )
    embedding_models = register_models(settings, models)
    metrics.watch(settings.data_dir, lambda: model_states(models))
    return models, embedding_models


def build_search_index(settings: Settings) -> SearchIndex:
    if settings.search_backend == "pgvector":
        url = settings.search_database_url or settings.database_url
        if not url or not url.startswith("postgresql"):
            raise ValueError(
                "search_backend=pgvector needs PostgreSQL with pgvector: set INFERLINE_SEARCH_DATABASE_URL "
                "(or INFERLINE_DATABASE_URL)"
            )
        return PgVectorIndex(url)
    return QdrantIndex(settings.data_dir.resolve() / "index")


def build_broker(settings: Settings) -> Broker:
    """The adapter for `events_broker`'s scheme (the settings checked it is one of these)."""
    url = settings.events_broker or ""
    options = {
        "topic": settings.events_topic,
        "max_events": settings.events_stream_max_events,
        "timeout_s": settings.events_publish_timeout_s,
    }
    if url.startswith(("redis://", "rediss://")):
        from inferline.events.redis import RedisBroker

        return RedisBroker(url, **options)  # type: ignore[arg-type]
    if url.startswith(("amqp://", "amqps://")):
        from inferline.events.rabbitmq import RabbitMqBroker

        return RabbitMqBroker(url, **options)  # type: ignore[arg-type]
    from inferline.events.nats import NatsBroker

    return NatsBroker(url, **options)  # type: ignore[arg-type]


def build_wakeup(settings: Settings) -> Wakeup:
    if settings.is_sqlite:
        return LocalWakeup()
    if settings.is_mysql:
        return PollingWakeup(settings.mysql_poll_s)
    return PostgresWakeup(settings.resolved_database_url)


def refuse_on_mysql(settings: Settings) -> None:
    """Refuse at start what a server on MariaDB/MySQL cannot run: it serves the job core only (the API
    answers the workloads' routes with 501, `api/routes/engine_only.py`; docs/jobs.md)."""
    if not settings.is_mysql:
        return
    needs = {
        "monitor_enabled": settings.monitor_enabled,
        "grpc_port": settings.grpc_port is not None,
        "search_backend=pgvector": settings.search_backend == "pgvector",
    }
    asked = [name for name, on in needs.items() if on]
    if asked:
        raise ValueError(
            f"{', '.join(asked)}: needs PostgreSQL or SQLite; this database is MariaDB/MySQL, which serves the "
            "job core only. Set INFERLINE_MONITOR_ENABLED=false, leave INFERLINE_GRPC_PORT unset and "
            "INFERLINE_SEARCH_BACKEND at qdrant, or use PostgreSQL (docs/jobs.md)"
        )


def build_engine(settings: Settings) -> AsyncEngine:
    engine = create_engine(settings.resolved_database_url)
    if settings.events_broker:
        # Read by every job store on this engine's connections: each state change writes its event.
        engine.update_execution_options(**{outbox.EVENTS_OPTION: True})
    return engine


def build_submitter(
    settings: Settings, engine: AsyncEngine, registry: KindRegistry, wakeup: Wakeup, metrics: Metrics
) -> Submitter:
    return Submitter(
        engine,
        registry,
        default_max_attempts=settings.default_max_attempts,
        wakeup=wakeup,
        metrics=metrics,
        sqlite_writer=SqliteWriter(engine) if settings.is_sqlite else None,
        outbound=outbound_policy(settings),
    )


def build_services(settings: Settings) -> Services:
    refuse_on_mysql(settings)
    engine = build_engine(settings)
    wakeup = build_wakeup(settings)
    metrics = Metrics()
    models, embedding_models = build_models(settings, metrics)
    blobs = BlobStore(settings.data_dir.resolve() / "blobs")
    registry = KindRegistry()
    submitter = build_submitter(settings, engine, registry, wakeup, metrics)
    search = SearchDeps.from_settings(
        settings,
        engine=engine,
        blobs=blobs,
        index=build_search_index(settings),
        models=models,
        metrics=metrics,
        embedding_models=embedding_models,
    )
    batches = BatchDeps.from_settings(settings, search=search, submitter=submitter)
    monitor = MonitorDeps.from_settings(
        settings, engine=engine, metrics=metrics, models=models, blobs=blobs, outbound=submitter.outbound
    )
    broker = build_broker(settings) if settings.events_broker else None
    services = Services(
        settings=settings,
        engine=engine,
        registry=registry,
        wakeup=wakeup,
        metrics=metrics,
        models=models,
        blobs=blobs,
        ocr=OcrDeps.from_settings(settings, engine=engine, blobs=blobs, models=models),
        search=search,
        auth=Authenticator(
            engine,
            settings.api_key_cache_s,
            failures=FailureBudget(burst=settings.unknown_key_burst, per_s=settings.unknown_keys_per_s),
        ),
        watchers=JobWatchers(engine, settings.events_poll_s, settings.events_max_streams_per_tenant),
        submitter=submitter,
        media=MediaDeps.from_settings(settings, engine=engine, blobs=blobs, submitter=submitter),
        batches=batches,
        records=RecordDeps.from_settings(settings, batches=batches),
        monitor=monitor,
        tracing=Tracing(settings.otlp_endpoint, sample_ratio=settings.otlp_sample_ratio),
        events=EventsDeps.from_settings(settings, engine=engine, broker=broker),
    )
    register_kinds(services)
    return services


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(base_s=settings.retry_base_s, cap_s=settings.retry_cap_s)


def outbound_policy(settings: Settings) -> OutboundPolicy:
    """Where webhooks may go (one policy per process: submissions check with it, sends with it again)."""
    return OutboundPolicy(
        allow_networks=settings.webhook_allow_networks, resolve_timeout_s=settings.webhook_resolve_timeout_s
    )


def worker_config(settings: Settings, concurrency: int, *, reaps: bool = True) -> WorkerConfig:
    return WorkerConfig(
        concurrency=concurrency,
        reaps=reaps,
        lease_s=settings.lease_s,
        heartbeat_s=settings.heartbeat_s,
        poll_s=settings.poll_s,
        claim_batch=settings.claim_batch,
        kind_limits=settings.kind_concurrency,
        retry=retry_policy(settings),
        # A job's progress is read by watchers every `events_poll_s`: writing it more often is never seen.
        progress_interval_s=settings.events_poll_s,
        webhook_progress_interval_s=settings.webhook_progress_interval_ms / 1000,
        reap_every_s=max(min(settings.lease_s / 3, 5.0), 0.2),
    )


async def finish(tasks: list[asyncio.Task[None]], grace_s: float) -> None:
    """Wait for loops told to stop; cancel those still running after `grace_s`."""
    _, stuck = await asyncio.wait(tasks, timeout=grace_s) if tasks else (set(), set())
    for task in stuck:  # only a loop hung on an unreachable database or receiver gets here
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class MonitorLoops:
    """The sampler's and the evaluator's candidacy of an API process without worker slots: with
    workers in processes of their own, the monitor must not depend on them being alive (a fleet
    whose workers all died is exactly what it must report)."""

    monitor: MonitorDeps
    halt: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.tasks = await monitor_loops.start(self.monitor, workers=0, stop=self.halt)

    async def stop(self, grace_s: float = 10.0) -> None:
        self.halt.set()
        await finish(self.tasks, grace_s)


@dataclass
class Background:
    """The workers, the cron scheduler, the webhook dispatcher, the events publisher (a candidate for
    its lease, when `events_broker` is set) and the retention of ended jobs (likewise, when
    `jobs_retention_s` is set), run in this process.

    Two workers: `worker` with `concurrency` slots runs every kind but those that wait on the jobs they
    submit; `orchestrator` runs those in `orchestrator_slots` of its own, so a pipeline never holds a slot
    its children need (one slot would wait forever)."""

    services: Services
    concurrency: int
    worker: Worker | None = None
    orchestrator: Worker | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    dispatcher: WebhookDispatcher | None = None
    halt: asyncio.Event = field(default_factory=asyncio.Event)

    def _worker(self, kinds: list[str], slots: int, *, reaps: bool) -> Worker:
        s = self.services
        config = worker_config(s.settings, slots, reaps=reaps)
        return Worker(
            s.engine,
            s.registry,
            config,
            wakeup=s.wakeup.lane(kinds),
            metrics=s.metrics,
            kinds=kinds,
            models=s.models,
            tracer=s.tracing.tracer,
            ends=s.submitter.ends,
        )

    async def start(self) -> None:
        s = self.services
        await s.wakeup.start()
        self.worker = self._worker(s.registry.lane(waits_on_jobs=False), self.concurrency, reaps=True)
        await self.worker.start()
        if waiting := s.registry.lane(waits_on_jobs=True):
            self.orchestrator = self._worker(waiting, s.settings.orchestrator_slots, reaps=False)
            await self.orchestrator.start()
        self.dispatcher = WebhookDispatcher(
            s.engine,
            timeout_s=s.settings.webhook_timeout_s,
            max_attempts=s.settings.webhook_max_attempts,
            poll_s=s.settings.webhook_poll_s,
            policy=retry_policy(s.settings),
            outbound=s.submitter.outbound,
            concurrency=s.settings.webhook_concurrency,
            tenant_concurrency=s.settings.webhook_tenant_concurrency,
            metrics=s.metrics,
            breakers=Breakers(failures=s.settings.breaker_failures, cooldown_s=s.settings.breaker_cooldown_s),
            max_age_s=s.settings.webhook_max_age_s,
        )
        self.tasks = [
            asyncio.create_task(
                run_scheduler(s.submitter, poll_s=s.settings.schedule_poll_s, stop=self.halt, tracer=s.tracing.tracer)
            ),
            asyncio.create_task(self.dispatcher.run(self.halt)),
        ]
        if s.settings.monitor_enabled:
            self.tasks += await monitor_loops.start(s.monitor, workers=self.concurrency, stop=self.halt)
        if s.events.broker is not None:
            publisher = Publisher(s.engine, s.events.broker, s.metrics, s.events.publisher)
            self.tasks.append(asyncio.create_task(publisher.run(self.halt)))
        if s.settings.jobs_retention_s > 0:
            retention = Retention(s.engine, s.metrics, retention_s=s.settings.jobs_retention_s)
            self.tasks.append(asyncio.create_task(retention.run(self.halt)))
        if s.settings.files_gc_interval_s > 0:
            sweeper = run_sweeper(
                s.engine,
                s.blobs,
                every_s=s.settings.files_gc_interval_s,
                min_age_s=s.settings.files_orphan_age_s,
                stop=self.halt,
            )
            self.tasks.append(asyncio.create_task(sweeper))

    async def stop(self, grace_s: float = 10.0) -> None:
        workers = [worker for worker in (self.worker, self.orchestrator) if worker is not None]
        await asyncio.gather(*(worker.stop(grace_s) for worker in workers))
        self.halt.set()
        await finish(self.tasks, grace_s)
        if self.dispatcher is not None:
            await self.dispatcher.aclose()
