"""Workers: dispatch stored deliveries through the routers, and run leased jobs.

A worker loop alternates between the two queues and sleeps on the store's wake-up signal when
both are empty. Deliveries are completed in one transaction with the jobs and events their
handlers produced, so a delivery is processed exactly once even if the process dies mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
from gidgethub import routing, sansio

from bot.app.jobs import JOB_RUNNERS, JobDeps, JobResult
from bot.app.observability import Metrics, log_context
from bot.kernel.errors import ShepherdError, StoreError
from bot.kernel.settings import Settings
from bot.kernel.target import PruneRequest
from bot.store import Job, JobSpec, Store, StoredDelivery
from handlers import ROUTERS
from handlers.context import HandlerContext

log = logging.getLogger(__name__)

DELIVERY_BATCH = 32
IDLE_WAIT_SECONDS = 1.0
#: While webhooks are arriving, in-process workers step aside for at most this long between two
#: units of work: the 10-second answer to GitHub comes first, the work is safe in the store.
INGEST_PRIORITY_MAX_DEFER = 1.0
INGEST_PRIORITY_POLL = 0.005
#: How often a prune job is enqueued (when SHEPHERD_RETENTION_DAYS is set); its key names the
#: period, so several processes enqueue one job between them.
RETENTION_EVERY_SECONDS = 3600


class IngestGauge:
    """Counts webhook requests in flight, so in-process workers can yield to ingest."""

    def __init__(self) -> None:
        self.in_flight = 0

    @property
    def busy(self) -> bool:
        return self.in_flight > 0


def backoff_seconds(attempt: int, *, base: float = 5.0, cap: float = 600.0) -> float:
    """Exponential backoff with full jitter (attempt 1 → up to 5 s, doubling, capped)."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))  # noqa: S311


async def dispatch_delivery(
    delivery: StoredDelivery,
    routers: Sequence[routing.Router],
    ctx: HandlerContext,
    metrics: Metrics,
) -> list[str]:
    """Run every handler for the delivery, each isolated; return the errors of those that failed.

    A failing handler is logged with the delivery id and does not stop the others (a Prow habit:
    one plugin's bug must not cost another plugin its event).
    """
    event = sansio.Event(
        orjson.loads(delivery.payload), event=delivery.event, delivery_id=delivery.id
    )
    errors: list[str] = []
    for router in routers:
        for callback in router.fetch(event):
            name = f"{callback.__module__}.{callback.__qualname__}"
            try:
                await callback(event, ctx)
            except Exception as exc:
                log.exception("handler %s failed", name)
                metrics.handler_runs.labels(name, "error").inc()
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
            else:
                metrics.handler_runs.labels(name, "ok").inc()
    return errors


class WorkerPool:
    """N worker loops in this process."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        count: int,
        routers: Sequence[routing.Router] | None = None,
        deps: JobDeps | None = None,
        ingest: IngestGauge | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.count = count
        self._routers = routers
        self._deps = deps
        self._ingest = ingest
        self._tasks: list[asyncio.Task[None]] = []
        self._retention: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._identity = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def routers(self) -> Sequence[routing.Router]:
        if self._routers is None:
            self._routers = ROUTERS
        return self._routers

    @property
    def deps(self) -> JobDeps:
        if self._deps is None:
            self._deps = JobDeps.build(self.settings, self.store, self.metrics)
        return self._deps

    async def start(self) -> None:
        self._stopping.clear()
        if self.count:
            # Build the job dependencies (and import what they need: fixers, the LLM SDK) now,
            # not in the middle of the first burst of webhooks.
            _ = self.deps, self.routers
        for n in range(self.count):
            owner = f"{self._identity}:w{n}"
            self._tasks.append(asyncio.create_task(self._loop(owner), name=owner))
        if self.count and self.settings.retention_days:
            self._retention = asyncio.create_task(self._schedule_retention(), name="retention")

    async def stop(self) -> None:
        """Stop leasing, let in-flight work finish within the grace period, then cancel."""
        self._stopping.set()
        if self._retention is not None:
            await self._retention  # it sleeps on _stopping: returns at once
            self._retention = None
        if self._tasks:
            _, pending = await asyncio.wait(
                self._tasks, timeout=self.settings.shutdown_grace_seconds
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                log.warning(
                    "%d worker(s) cancelled after the %g s grace period",
                    len(pending),
                    self.settings.shutdown_grace_seconds,
                )
            self._tasks.clear()
        if self._deps is not None:
            await self._deps.close()
            self._deps = None

    async def use_github_app(self) -> None:
        """The settings now name a GitHub App (registered by the setup page): jobs use it from
        the next one on, without a restart."""
        if self._deps is not None:
            self._deps.use_github_app()

    def health(self) -> str:
        if self.count == 0:
            return "ok"
        alive = sum(1 for t in self._tasks if not t.done())
        return "ok" if alive == self.count else f"{alive}/{self.count} workers running"

    async def _loop(self, owner: str) -> None:
        failures = 0
        while not self._stopping.is_set():
            await self._yield_to_ingest()
            try:
                worked = await self.run_once(owner)
                failures = 0
            except StoreError as exc:
                # The database is away: back off and try again rather than dying.
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.warning(
                    "worker %s: store unavailable (%s); retrying in %.1f s", owner, exc, delay
                )
                await self._sleep(delay)
                continue
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.store.wait_for_work(IDLE_WAIT_SECONDS), IDLE_WAIT_SECONDS * 2
                    )

    async def _schedule_retention(self) -> None:
        """Enqueue one ``prune`` job per period, for as long as the pool runs."""
        while not self._stopping.is_set():
            period = int(time.time() // RETENTION_EVERY_SECONDS)
            request = PruneRequest(retention_days=self.settings.retention_days)
            spec = JobSpec(
                kind=request.KIND,
                key=f"prune:{period}",
                payload=request.payload(),
                max_attempts=3,
            )
            try:
                await self.store.upsert_job(spec)
            except StoreError as exc:  # the next period tries again; nothing is lost meanwhile
                log.warning("retention: could not enqueue %s: %s", spec.key, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RETENTION_EVERY_SECONDS)

    async def _yield_to_ingest(self) -> None:
        """In a burst of webhooks, let the server answer them first (bounded, so work never
        starves): every delivery is already durable, and GitHub waits only 10 s for an answer."""
        if self._ingest is None:
            return
        deferred = 0.0
        while self._ingest.busy and deferred < INGEST_PRIORITY_MAX_DEFER:
            await asyncio.sleep(INGEST_PRIORITY_POLL)
            deferred += INGEST_PRIORITY_POLL

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def run_once(self, owner: str) -> bool:
        """One unit of work: a batch of deliveries, else one job. Returns whether it did any."""
        # Small bites while webhooks are arriving, so one batch never holds up their answers.
        batch = 4 if self._ingest is not None and self._ingest.busy else DELIVERY_BATCH
        deliveries = await self.store.claim_deliveries(
            owner, batch, self.settings.delivery_lease_seconds
        )
        for delivery in deliveries:
            await self.process_delivery(owner, delivery)
        if deliveries:
            return True
        if self._stopping.is_set():
            return False
        job = await self.store.lease_job(owner, self.settings.job_lease_seconds)
        if job is None:
            return False
        await self.run_job(owner, job)
        return True

    async def process_delivery(self, owner: str, delivery: StoredDelivery) -> None:
        with log_context(
            delivery_id=delivery.id,
            event=delivery.event,
            repo=delivery.repo,
            installation=delivery.installation_id,
        ):
            ctx = HandlerContext.for_delivery(delivery, self.settings)
            try:
                errors = await dispatch_delivery(delivery, self.routers, ctx, self.metrics)
            except orjson.JSONDecodeError as exc:  # not JSON: cannot happen via /webhook
                errors = [f"unreadable payload: {exc}"]
            error = "; ".join(errors) if errors else None
            completed = await self.store.complete_delivery(
                delivery.id, owner, jobs=ctx.jobs, events=ctx.events, error=error
            )
            if not completed:
                log.warning(
                    "lost the lease on delivery %s; another worker completes it", delivery.id
                )
            self.metrics.deliveries.labels(delivery.event, "failed" if error else "processed").inc()

    async def run_job(self, owner: str, job: Job) -> None:
        runner = JOB_RUNNERS.get(job.kind)
        with log_context(job_id=job.id, job_kind=job.kind, **_job_fields(job)):
            if runner is None:
                log.error("no runner for job kind %r", job.kind)
                await self.store.fail_job(
                    job.id, owner, error=f"unknown job kind {job.kind}", retry_at=None
                )
                return
            started = time.monotonic()
            work: asyncio.Task[JobResult] = asyncio.ensure_future(runner(job, self.deps))
            beat = asyncio.create_task(self._heartbeat(job, owner, work))
            try:
                result: JobResult = await work
            except asyncio.CancelledError:
                if not beat.done() or beat.result() is not False:
                    raise
                log.warning("job %s cancelled: its lease was lost", job.id)
                return
            except ShepherdError as exc:
                await self._fail(job, owner, exc, retryable=exc.retryable)
                return
            except Exception as exc:
                log.exception("job %s crashed", job.id)
                await self._fail(job, owner, exc, retryable=True)
                return
            finally:
                beat.cancel()
                self.metrics.job_duration.labels(job.kind).observe(time.monotonic() - started)
            await self.store.complete_job(
                job.id, owner, outcome=result.outcome, result=result.result, events=result.events
            )
            self.metrics.jobs.labels(job.kind, result.outcome).inc()
            log.info("job %s finished: %s", job.id, result.outcome)

    async def _fail(self, job: Job, owner: str, exc: BaseException, *, retryable: bool) -> None:
        retry_at = (
            datetime.now(UTC) + timedelta(seconds=backoff_seconds(job.attempts))
            if retryable
            else None
        )
        summary = "".join(traceback.format_exception_only(exc)).strip()
        await self.store.fail_job(job.id, owner, error=summary, retry_at=retry_at)
        self.metrics.jobs.labels(job.kind, "retry" if retry_at else "dead").inc()
        log.warning(
            "job %s failed (%s); %s",
            job.id,
            summary,
            f"retry at {retry_at:%H:%M:%S}" if retry_at else "giving up",
        )

    async def _heartbeat(self, job: Job, owner: str, work: asyncio.Task[JobResult]) -> bool:
        interval = self.settings.job_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            if not await self.store.heartbeat(job.id, owner, self.settings.job_lease_seconds):
                work.cancel()
                return False


def _job_fields(job: Job) -> dict[str, object]:
    payload = job.payload or {}
    return {k: payload[k] for k in ("repo", "pr", "installation") if k in payload}
