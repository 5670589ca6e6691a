"""The worker: isolated handlers, bounded job retries with backoff, leases, graceful stop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gidgethub import routing, sansio

from bot.app.jobs import JOB_RUNNERS, JobDeps, JobResult
from bot.app.observability import Metrics
from bot.app.worker import DELIVERY_BATCH, IngestGauge, WorkerPool
from bot.kernel.errors import GitHubError, ShepherdError
from bot.kernel.settings import Settings
from bot.store import DeliveryState, JobSpec, JobState, NewDelivery, Store
from bot.store.connect import open_store
from handlers.context import HandlerContext

OWNER = "test-worker"


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    s = open_store(settings.effective_database_url)
    await s.open()
    yield s
    await s.close()


def pool(store: Store, settings: Settings, routers: Any = (), **kwargs: Any) -> WorkerPool:
    return WorkerPool(
        store=store, settings=settings, metrics=Metrics(), count=0, routers=routers, **kwargs
    )


def delivery(n: int, event: str = "ping") -> NewDelivery:
    body = json.dumps({"zen": "x", "hook_id": n}).encode()
    return NewDelivery(f"d{n}", event, None, None, None, body, datetime.now(UTC))


async def test_a_failing_handler_does_not_stop_the_others(
    store: Store, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = routing.Router(), routing.Router()

    @first.register("ping")
    async def broken(event: sansio.Event, ctx: HandlerContext) -> None:
        raise KeyError("installation")

    @second.register("ping")
    async def works(event: sansio.Event, ctx: HandlerContext) -> None:
        ctx.record("acme/widgets", 1, "seen", hook=event.data["hook_id"])

    await store.record_delivery(delivery(1))
    with caplog.at_level(logging.ERROR):
        assert await pool(store, settings, [first, second]).run_once(OWNER)

    stored = await store.get_delivery("d1")
    assert stored is not None
    assert stored.state is DeliveryState.FAILED
    assert "broken: KeyError" in (stored.error or "")
    assert [e.kind for e in await store.list_events("acme/widgets", 1)] == ["seen"]
    assert any("handler" in r.getMessage() and "broken" in r.getMessage() for r in caplog.records)


def runner_that(raise_: Callable[[], BaseException | None]) -> Any:
    async def run(job: Any, deps: JobDeps) -> JobResult:
        exc = raise_()
        if exc is not None:
            raise exc
        return JobResult("done", {"ok": True})

    return run


@pytest.mark.parametrize(
    ("error", "state", "retries"),
    [
        (lambda: GitHubError("502", status=502, retryable=True), JobState.QUEUED, True),
        (lambda: RuntimeError("a bug"), JobState.QUEUED, True),  # unexpected: retried
        (lambda: ShepherdError("bad config"), JobState.DEAD, False),  # not retryable
        (lambda: None, JobState.DONE, False),
    ],
    ids=["retryable", "crash", "permanent", "success"],
)
async def test_job_failures_are_retried_with_backoff_or_given_up(
    store: Store,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    error: Callable[[], BaseException | None],
    state: JobState,
    retries: bool,
) -> None:
    monkeypatch.setitem(JOB_RUNNERS, "test", runner_that(error))
    monkeypatch.setattr("bot.app.worker.backoff_seconds", lambda attempt: 60.0)
    job_id = await store.upsert_job(JobSpec("test", "k1", {}))
    before = datetime.now(UTC)
    assert await pool(store, settings).run_once(OWNER)
    job = await store.get_job(job_id)
    assert job is not None
    assert job.state is state
    if retries:
        assert job.run_after >= before  # backed off, not spinning
        assert job.error
        assert await store.lease_job(OWNER, 60) is None  # not runnable again at once


async def test_retries_are_bounded(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(JOB_RUNNERS, "test", runner_that(lambda: RuntimeError("always")))
    job_id = await store.upsert_job(JobSpec("test", "k2", {}, max_attempts=3))
    worker = pool(store, settings)
    monkeypatch.setattr("bot.app.worker.backoff_seconds", lambda attempt: 0.0)
    for _ in range(5):
        await worker.run_once(OWNER)
    job = await store.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts) == (JobState.DEAD, 3)


async def test_stop_lets_an_in_flight_job_finish(
    store: Store, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(shutdown_grace_seconds=10)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(job: Any, deps: JobDeps) -> JobResult:
        started.set()
        await release.wait()
        return JobResult("done")

    monkeypatch.setitem(JOB_RUNNERS, "slow", slow)
    job_id = await store.upsert_job(JobSpec("slow", "k3", {}))
    workers = WorkerPool(store=store, settings=settings, metrics=Metrics(), count=1, routers=())
    await workers.start()
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(workers.stop())
    await asyncio.sleep(0)
    assert not stopping.done()  # waiting for the job, not killing it
    release.set()
    await asyncio.wait_for(stopping, 10)
    job = await store.get_job(job_id)
    assert job is not None
    assert job.state is JobState.DONE


async def test_stop_cancels_a_job_past_the_grace_period(
    store: Store, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(shutdown_grace_seconds=0.2)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    started = asyncio.Event()

    async def hangs(job: Any, deps: JobDeps) -> JobResult:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setitem(JOB_RUNNERS, "hangs", hangs)
    job_id = await store.upsert_job(JobSpec("hangs", "k4", {}))
    workers = WorkerPool(store=store, settings=settings, metrics=Metrics(), count=1, routers=())
    await workers.start()
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(workers.stop(), 10)
    job = await store.get_job(job_id)
    assert job is not None
    assert job.state is JobState.RUNNING  # its lease expires and another worker takes it


async def test_workers_take_small_bites_while_webhooks_arrive(
    store: Store, settings: Settings
) -> None:
    for n in range(DELIVERY_BATCH):
        await store.record_delivery(delivery(100 + n))
    gauge = IngestGauge()
    gauge.in_flight = 3
    assert await pool(store, settings, ingest=gauge).run_once(OWNER)
    stats = await store.stats()
    assert stats.deliveries[DeliveryState.DONE] == 4
    gauge.in_flight = 0
    assert await pool(store, settings, ingest=gauge).run_once(OWNER)
    stats = await store.stats()
    assert stats.deliveries[DeliveryState.DONE] == DELIVERY_BATCH


@pytest.mark.parametrize("attempt", [1, 2, 3, 8, 20])
def test_backoff_grows_and_is_capped(attempt: int) -> None:
    from bot.app.worker import backoff_seconds

    samples = [backoff_seconds(attempt) for _ in range(200)]
    assert all(0 <= s <= min(600.0, 5.0 * 2 ** (attempt - 1)) for s in samples)
    assert max(samples) > min(600.0, 5.0 * 2 ** (attempt - 1)) / 4  # jittered across the range


async def test_a_job_whose_lease_is_lost_stops_and_completes_nothing(
    store: Store,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(job_lease_seconds=0.3)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cancelled = asyncio.Event()

    async def long(job: Any, deps: JobDeps) -> JobResult:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async def lost(job_id: int, owner: str, lease_seconds: float) -> bool:
        return False  # another worker took the job over

    monkeypatch.setitem(JOB_RUNNERS, "long", long)
    monkeypatch.setattr(store, "heartbeat", lost)
    job_id = await store.upsert_job(JobSpec("long", "k5", {}))
    with caplog.at_level(logging.WARNING):
        assert await asyncio.wait_for(pool(store, settings).run_once(OWNER), 10)
    assert cancelled.is_set()
    job = await store.get_job(job_id)
    assert job is not None
    assert job.state is JobState.RUNNING  # not completed by the worker that lost it
    assert any("lease was lost" in r.getMessage() for r in caplog.records)


async def test_workers_back_off_while_the_database_is_away_and_resume(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.kernel.errors import StoreError

    outage = {"left": 3}
    real_claim = store.claim_deliveries

    async def flaky_claim(*args: Any, **kwargs: Any) -> Any:
        if outage["left"] > 0:
            outage["left"] -= 1
            raise StoreError("connection refused")
        return await real_claim(*args, **kwargs)

    monkeypatch.setattr(store, "claim_deliveries", flaky_claim)
    await store.record_delivery(delivery(7))
    workers = WorkerPool(store=store, settings=settings, metrics=Metrics(), count=1, routers=())
    delays: list[float] = []

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(workers, "_sleep", no_wait)
    await workers.start()
    for _ in range(200):
        stored = await store.get_delivery("d7")
        if stored is not None and stored.state is DeliveryState.DONE:
            break
        await asyncio.sleep(0.01)
    await workers.stop()
    assert delays == [1.0, 2.0, 4.0]  # exponential, then work resumed by itself
    stored = await store.get_delivery("d7")
    assert stored is not None
    assert stored.state is DeliveryState.DONE


async def test_retention_enqueues_one_prune_job_and_it_prunes_old_finished_deliveries(
    make_settings: Any,
) -> None:
    settings = make_settings(retention_days=7)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.effective_database_url)
    await store.open()
    old = replace(delivery(1), received_at=datetime.now(UTC) - timedelta(days=8))
    await store.record_delivery(old)
    await store.record_delivery(delivery(2))
    # Two pools stand for two processes: the period's key makes their two enqueues one job.
    pools = [
        WorkerPool(store=store, settings=settings, metrics=Metrics(), count=1, routers=())
        for _ in range(2)
    ]
    try:
        for workers in pools:
            await workers.start()
        for _ in range(500):
            jobs = await store.stats()
            if jobs.jobs.get(JobState.DONE) == 1 and await store.get_delivery("d1") is None:
                break
            await asyncio.sleep(0.01)
    finally:
        for workers in pools:
            await workers.stop()
        stats = await store.stats()
        pruned = await store.get_delivery("d1")
        kept = await store.get_delivery("d2")
        await store.close()
    assert {state: n for state, n in stats.jobs.items() if n} == {JobState.DONE: 1}
    assert pruned is None  # finished and older than 7 days
    assert kept is not None
    assert kept.state is DeliveryState.DONE  # processed, but too recent to prune
