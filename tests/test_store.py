"""The store contract, run unchanged against SQLite and PostgreSQL.

Leases are made to expire without waiting by leasing for a negative number of seconds; debounce
and backoff use times hours away from now, so no test depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.kernel.errors import ConfigError, StoreError
from bot.store import (
    DeliveryState,
    EventSpec,
    GroupCommitter,
    JobSpec,
    JobState,
    NewDelivery,
    Store,
    postgres,
)
from bot.store import sqlite as sqlite_store
from bot.store.connect import open_store
from bot.store.postgres import MIGRATIONS as PG_MIGRATIONS
from bot.store.postgres import PostgresStore
from bot.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from bot.store.sqlite import SqliteStore
from tests.conftest import SHARED
from tests.store_support import BACKENDS, opened, postgres_url, store_url

HOUR = timedelta(hours=1)


def now() -> datetime:
    return datetime.now(UTC)


def delivery(
    delivery_id: str, *, received_at: datetime | None = None, payload: bytes = b'{"a": 1}'
) -> NewDelivery:
    return NewDelivery(
        id=delivery_id,
        event="check_run",
        action="completed",
        installation_id=42,
        repo="octo/repo",
        payload=payload,
        received_at=received_at or now(),
    )


def job(key: str, **kwargs: Any) -> JobSpec:
    kwargs.setdefault("payload", {"key": key})
    return JobSpec(kind=kwargs.pop("kind", "repair"), key=key, **kwargs)


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with store_url(request.param, tmp_path) as location:
        yield location


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    async with opened(url) as opened_store:
        yield opened_store


async def schema_versions(url: str) -> list[int]:
    store = open_store(url)
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            return [row[0] for row in conn.execute("SELECT version FROM schema_version")]
    assert isinstance(store, PostgresStore)
    conn = await asyncpg.connect(postgres_url())
    try:
        rows = await conn.fetch(f'SELECT version FROM "{store.schema}".schema_version')  # noqa: S608
    finally:
        await conn.close()
    return [row[0] for row in rows]


# -- lifecycle ---------------------------------------------------------------------------------


async def test_migrations_are_idempotent_and_safe_when_two_processes_open_at_once(
    url: str,
) -> None:
    first, second = open_store(url), open_store(url)
    await asyncio.gather(first.open(), second.open())
    try:
        assert await first.record_delivery(delivery("d1"))
        stored = await second.get_delivery("d1")
        assert stored is not None
    finally:
        await first.close()
        await second.close()
    async with opened(url) as again:  # a third open finds the schema current
        assert await again.get_delivery("d1") is not None
    migrations = PG_MIGRATIONS if url.startswith("postgres") else SQLITE_MIGRATIONS
    assert await schema_versions(url) == list(range(1, len(migrations) + 1))  # each once


async def test_ping_succeeds_when_open_and_fails_when_closed(url: str) -> None:
    store = open_store(url)
    await store.open()
    await store.ping()
    await store.close()
    with pytest.raises(StoreError):
        await store.ping()
    with pytest.raises(StoreError):
        await store.record_delivery(delivery("late"))


async def test_unreachable_postgres_is_a_retryable_store_error() -> None:
    store = open_store("postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert caught.value.retryable


async def test_unwritable_sqlite_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = open_store(f"sqlite:///{blocker / 'shepherd.db'}")
    with pytest.raises(StoreError):
        await store.open()


@pytest.mark.parametrize(
    ("url", "backend", "detail"),
    [
        ("sqlite:///var/lib/shepherd/s.db", SqliteStore, Path("/var/lib/shepherd/s.db")),
        ("sqlite:////var/lib/shepherd/s.db", SqliteStore, Path("/var/lib/shepherd/s.db")),
        ("postgresql://u:p@db:5432/shepherd", PostgresStore, None),
        ("postgres://u@db/shepherd?schema=ci_1&sslmode=disable", PostgresStore, "ci_1"),
    ],
)
def test_open_store_picks_the_backend_by_scheme(
    url: str, backend: type[Store], detail: object
) -> None:
    store = open_store(url)
    assert isinstance(store, backend)
    if isinstance(store, SqliteStore):
        assert store.path == detail
    else:
        assert isinstance(store, PostgresStore)
        assert store.schema == detail


@pytest.mark.parametrize(
    "url",
    [
        "",
        "mysql://u@db/shepherd",
        "/var/lib/shepherd.db",
        "sqlite://relative.db",
        "sqlite:///:memory:",
        "sqlite:///",
        "postgresql://db:notaport/shepherd",
        "postgresql://db/shepherd?schema=Robert'); DROP",
        "postgresql://db/shepherd?schema=a&schema=b",
    ],
)
def test_open_store_rejects_malformed_urls_with_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    assert str(caught.value).endswith(".")


def test_config_errors_do_not_echo_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        open_store("postgresql://user:hunter2@db:nope/shepherd")
    assert "hunter2" not in str(caught.value)


# -- deliveries --------------------------------------------------------------------------------


async def test_record_delivery_is_durable_and_keeps_the_raw_bytes(url: str) -> None:
    raw = b'{"zen": "\xe2\x9c\x93"}\x00\xff'  # not even valid UTF-8: stored as received
    received = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    async with opened(url) as store:
        assert await store.record_delivery(delivery("d1", payload=raw, received_at=received))
    async with opened(url) as store:  # a new process sees it
        stored = await store.get_delivery("d1")
    assert stored is not None
    assert stored.payload == raw
    assert stored.received_at == received
    assert (stored.event, stored.action, stored.installation_id, stored.repo) == (
        "check_run",
        "completed",
        42,
        "octo/repo",
    )
    assert (stored.state, stored.attempts, stored.error) == (DeliveryState.PENDING, 0, None)


async def test_postgres_compresses_bodies_with_lz4_and_returns_them_intact(
    tmp_path: Path,
) -> None:
    # Half the database CPU per delivery of no compression, and a quarter of the WAL (see the
    # migration). A real payload, repeated to the size of a large pull_request delivery.
    example = SHARED / "github" / "webhooks" / "pull_request" / "opened.payload.json"
    raw = example.read_bytes() * 2
    async with store_url("postgres", tmp_path) as url:
        async with opened(url) as store:
            assert isinstance(store, PostgresStore)
            assert await store.record_delivery(delivery("big", payload=raw))
            stored = await store.get_delivery("big")
        conn = await asyncpg.connect(postgres_url())
        try:
            table = f'"{store.schema}".deliveries'
            method, on_disk = await conn.fetchrow(
                f"SELECT pg_column_compression(payload), pg_column_size(payload) FROM {table}"  # noqa: S608
            )
        finally:
            await conn.close()
    assert stored is not None
    assert stored.payload == raw
    assert method == "lz4"
    assert on_disk < len(raw) / 2


async def test_record_delivery_dedupes_concurrent_and_later_duplicates(store: Store) -> None:
    results = await asyncio.gather(*(store.record_delivery(delivery("same")) for _ in range(20)))
    assert sorted(results) == [False] * 19 + [True]
    assert not await store.record_delivery(delivery("same"))
    assert await store.get_delivery("missing") is None


async def test_group_commit_200_concurrent_deliveries_all_survive_reopen(url: str) -> None:
    ids = [f"d{n:03}" for n in range(200)]
    async with opened(url) as store:
        results = await asyncio.gather(*(store.record_delivery(delivery(i)) for i in ids))
        assert results == [True] * 200
    async with opened(url) as store:
        stored = await asyncio.gather(*(store.get_delivery(i) for i in ids))
        stats = await store.stats()
    assert [d.id if d else None for d in stored] == ids
    assert stats.deliveries_pending == 200


async def test_claim_returns_oldest_first_and_respects_limit_and_leases(store: Store) -> None:
    base = now() - HOUR
    for n, offset in [(1, 3), (2, 1), (3, 2)]:
        await store.record_delivery(delivery(f"d{n}", received_at=base + timedelta(seconds=offset)))
    claimed = await store.claim_deliveries("w1", limit=2, lease_seconds=60)
    assert [d.id for d in claimed] == ["d2", "d3"]
    assert all(d.state is DeliveryState.PROCESSING and d.attempts == 1 for d in claimed)
    # Leased ones are not handed out again while the lease holds.
    assert [d.id for d in await store.claim_deliveries("w2", limit=10, lease_seconds=60)] == ["d1"]
    assert await store.claim_deliveries("w3", limit=10, lease_seconds=60) == []


async def test_delivery_is_completed_exactly_once_after_a_lease_takeover(store: Store) -> None:
    await store.record_delivery(delivery("d1"))
    [_first] = await store.claim_deliveries("dead-worker", limit=5, lease_seconds=-1)
    [again] = await store.claim_deliveries("w2", limit=5, lease_seconds=60)  # lease had expired
    assert (again.id, again.attempts) == ("d1", 2)

    stale = await store.complete_delivery(
        "d1",
        "dead-worker",
        jobs=[job("from-stale")],
        events=[EventSpec("octo/repo", 1, "stale", {})],
    )
    assert stale is False
    assert await store.find_job("from-stale") is None
    assert await store.list_events("octo/repo", 1) == []

    assert await store.complete_delivery(
        "d1", "w2", jobs=[job("repair:octo/repo#1@abc")], events=[], error=None
    )
    stored = await store.get_delivery("d1")
    assert stored is not None
    assert stored.state is DeliveryState.DONE
    assert await store.find_job("repair:octo/repo#1@abc") is not None
    # Done is final: neither owner can complete it again, and it is never claimed again.
    assert not await store.complete_delivery("d1", "w2", jobs=[], events=[])
    assert await store.claim_deliveries("w3", limit=5, lease_seconds=-1) == []


async def test_complete_delivery_with_error_marks_it_failed_and_still_records(
    store: Store,
) -> None:
    await store.record_delivery(delivery("d1"))
    await store.claim_deliveries("w", limit=1, lease_seconds=60)
    event = EventSpec("octo/repo", 7, "handler_failed", {"handler": "triage"}, delivery_id="d1")
    assert await store.complete_delivery("d1", "w", jobs=[], events=[event], error="boom")
    stored = await store.get_delivery("d1")
    assert stored is not None
    assert (stored.state, stored.error) == (DeliveryState.FAILED, "boom")
    [logged] = await store.list_events("octo/repo", 7)
    assert (logged.kind, logged.delivery_id, logged.data) == ("handler_failed", "d1", event.data)


async def test_a_delivery_whose_lease_keeps_expiring_ends_failed(store: Store) -> None:
    await store.record_delivery(delivery("poison"))
    attempts = []
    for _ in range(10):
        claimed = await store.claim_deliveries("w", limit=1, lease_seconds=-1)
        if not claimed:
            break
        attempts.append(claimed[0].attempts)
    assert attempts == [1, 2, 3, 4, 5]
    stored = await store.get_delivery("poison")
    assert stored is not None
    assert stored.state is DeliveryState.FAILED
    assert stored.error is not None
    assert "expired" in stored.error


async def test_prune_removes_only_finished_deliveries_received_before_the_cutoff(
    store: Store,
) -> None:
    old = now() - timedelta(days=40)
    for name in ("old-done", "old-failed", "old-processing"):
        await store.record_delivery(delivery(name, received_at=old))
    await store.record_delivery(delivery("new-done"))
    claimed = await store.claim_deliveries("w", limit=10, lease_seconds=60)
    assert len(claimed) == 4
    event = EventSpec("octo/repo", 7, "pr.push", {}, delivery_id="old-done")
    job_spec = job("repair:octo/repo#7@abc")
    assert await store.complete_delivery("old-done", "w", jobs=[job_spec], events=[event])
    assert await store.complete_delivery("old-failed", "w", jobs=[], events=[], error="boom")
    assert await store.complete_delivery("new-done", "w", jobs=[], events=[])
    await store.record_delivery(delivery("old-pending", received_at=old))

    pruned = await store.prune_deliveries(now() - timedelta(days=30))

    assert pruned.deliveries == 2
    assert await store.get_delivery("old-done") is None
    assert await store.get_delivery("old-failed") is None
    for kept in ("old-processing", "old-pending", "new-done"):
        assert await store.get_delivery(kept) is not None, kept
    # The history that explain and the loop guards read is not a delivery: it stays.
    assert [e.delivery_id for e in await store.list_events("octo/repo", 7)] == ["old-done"]
    assert await store.find_job(job_spec.key) is not None
    assert (await store.prune_deliveries(now() - timedelta(days=30))).deliveries == 0


# -- jobs --------------------------------------------------------------------------------------


async def test_upsert_debounces_a_queued_job_and_leaves_started_ones_alone(store: Store) -> None:
    t0 = now() - 3 * HOUR
    job_id = await store.upsert_job(job("k", payload={"v": 1}, run_after=t0 + HOUR))
    assert await store.upsert_job(job("k", payload={"v": 2}, run_after=t0)) == job_id
    queued = await store.get_job(job_id)
    assert queued is not None
    # The newest payload wins; the debounce only ever moves the start later.
    assert (queued.payload, queued.run_after) == ({"v": 2}, t0 + HOUR)
    assert await store.upsert_job(job("k", payload={"v": 3}, run_after=t0 + 2 * HOUR)) == job_id
    queued = await store.get_job(job_id)
    assert queued is not None
    assert queued.run_after == t0 + 2 * HOUR

    leased = await store.lease_job("w", 60)
    assert leased is not None
    assert leased.id == job_id
    assert await store.upsert_job(job("k", payload={"v": 4})) == job_id
    running = await store.find_job("k")
    assert running is not None
    assert (running.state, running.payload) == (JobState.RUNNING, {"v": 3})

    assert await store.complete_job(job_id, "w", outcome="fixed", result={"sha": "abc"})
    assert await store.upsert_job(job("k", payload={"v": 5})) == job_id
    done = await store.get_job(job_id)
    assert done is not None
    assert (done.state, done.payload, done.outcome, done.result) == (
        JobState.DONE,
        {"v": 3},
        "fixed",
        {"sha": "abc"},
    )
    assert await store.find_job("missing") is None


async def test_lease_respects_run_after_order_and_kinds(store: Store) -> None:
    await store.upsert_job(job("later", run_after=now() + HOUR))
    await store.upsert_job(job("second", run_after=now() - HOUR))
    await store.upsert_job(job("first", run_after=now() - 2 * HOUR))
    await store.upsert_job(job("triage", kind="triage", run_after=now() - 3 * HOUR))

    assert await store.lease_job("w", 60, kinds=[]) is None
    got = await store.lease_job("w", 60, kinds=["repair"])
    assert got is not None
    assert (got.key, got.state, got.attempts, got.lease_owner) == (
        "first",
        JobState.RUNNING,
        1,
        "w",
    )
    assert got.lease_expires is not None
    assert got.lease_expires > now()
    nxt = await store.lease_job("w", 60, kinds=["repair"])
    assert nxt is not None
    assert nxt.key == "second"
    assert await store.lease_job("w", 60, kinds=["repair"]) is None  # "later" is not due
    any_kind = await store.lease_job("w", 60)
    assert any_kind is not None
    assert any_kind.key == "triage"
    assert await store.lease_job("w", 60) is None


async def test_lease_serializes_jobs_that_share_a_concurrency_key(store: Store) -> None:
    past = now() - HOUR
    a1 = await store.upsert_job(job("a1", concurrency_key="o/r#1", run_after=past))
    a2 = await store.upsert_job(job("a2", concurrency_key="o/r#1", run_after=past))
    b1 = await store.upsert_job(job("b1", concurrency_key="o/r#2", run_after=past))

    first = await store.lease_job("w1", 60)
    second = await store.lease_job("w2", 60)
    assert (first and first.id, second and second.id) == (a1, b1)
    assert await store.lease_job("w3", 60) is None  # a2 waits for a1

    assert await store.complete_job(a1, "w1", outcome="noop")
    third = await store.lease_job("w3", 60)
    assert third is not None
    assert third.id == a2


async def test_an_expired_job_lease_makes_the_job_runnable_again(store: Store) -> None:
    job_id = await store.upsert_job(job("k", concurrency_key="o/r#1"))
    dead = await store.lease_job("dead-worker", -1)
    assert dead is not None
    assert dead.id == job_id
    # The expired lease no longer holds the key either.
    other = await store.upsert_job(job("other", concurrency_key="o/r#1", run_after=now() + HOUR))
    taken = await store.lease_job("w2", 60)
    assert taken is not None
    assert (taken.id, taken.attempts, taken.lease_owner) == (job_id, 2, "w2")

    assert not await store.heartbeat(job_id, "dead-worker", 60)
    assert not await store.complete_job(job_id, "dead-worker", outcome="fixed")
    assert not await store.fail_job(job_id, "dead-worker", error="x", retry_at=None)
    assert await store.complete_job(job_id, "w2", outcome="fixed")
    final = await store.get_job(job_id)
    assert final is not None
    assert (final.state, final.lease_owner) == (JobState.DONE, "w2")
    assert (await store.get_job(other)) is not None


async def test_heartbeat_extends_the_lease_and_reports_a_lost_one(store: Store) -> None:
    job_id = await store.upsert_job(job("k"))
    leased = await store.lease_job("w", 30)
    assert leased is not None
    assert leased.lease_expires is not None
    assert await store.heartbeat(job_id, "w", 3600)
    beaten = await store.get_job(job_id)
    assert beaten is not None
    assert beaten.lease_expires is not None
    assert beaten.lease_expires > leased.lease_expires + timedelta(minutes=30)
    assert not await store.heartbeat(job_id, "intruder", 3600)
    # An expired lease is lost even before anyone else takes the job.
    assert await store.heartbeat(job_id, "w", -1)
    assert not await store.heartbeat(job_id, "w", 3600)


async def test_fail_job_retries_with_backoff_then_goes_dead(store: Store) -> None:
    job_id = await store.upsert_job(job("k", max_attempts=2))
    assert await store.lease_job("w", 60) is not None
    assert await store.fail_job(job_id, "w", error="flaky", retry_at=now() + HOUR)
    queued = await store.get_job(job_id)
    assert queued is not None
    assert (queued.state, queued.attempts, queued.error) == (JobState.QUEUED, 1, "flaky")
    assert await store.lease_job("w", 60) is None  # backing off

    assert await store.fail_job(job_id, "w", error="again", retry_at=None) is False  # not leased
    # Bring the retry forward by re-running with a past retry time.
    await store.upsert_job(job("k", max_attempts=2))  # queued: payload refresh, run_after stays
    assert await store.lease_job("w", 60) is None

    other = await store.upsert_job(job("k2", max_attempts=2))
    assert await store.lease_job("w", 60) is not None
    assert await store.fail_job(other, "w", error="e1", retry_at=now() - HOUR)
    retried = await store.lease_job("w", 60)
    assert retried is not None
    assert (retried.id, retried.attempts) == (other, 2)
    assert await store.fail_job(other, "w", error="e2", retry_at=now() - HOUR)
    dead = await store.get_job(other)
    assert dead is not None
    assert (dead.state, dead.attempts, dead.error) == (JobState.DEAD, 2, "e2")


async def test_fail_job_without_retry_is_dead_at_once(store: Store) -> None:
    job_id = await store.upsert_job(job("k"))
    assert await store.lease_job("w", 60) is not None
    assert await store.fail_job(job_id, "w", error="policy", retry_at=None)
    dead = await store.get_job(job_id)
    assert dead is not None
    assert (dead.state, dead.attempts) == (JobState.DEAD, 1)
    assert await store.lease_job("w", 60) is None


async def test_a_job_whose_lease_keeps_expiring_ends_dead(store: Store) -> None:
    job_id = await store.upsert_job(job("k", max_attempts=3))
    owners = []
    for n in range(6):
        leased = await store.lease_job(f"w{n}", -1)
        if leased is None:
            break
        owners.append(leased.attempts)
    assert owners == [1, 2, 3]
    dead = await store.get_job(job_id)
    assert dead is not None
    assert dead.state is JobState.DEAD
    assert dead.error is not None
    assert "expired" in dead.error


# -- events and stats --------------------------------------------------------------------------


async def test_events_are_listed_per_pr_in_append_order(store: Store) -> None:
    job_id = await store.upsert_job(job("k"))
    ids = [
        await store.append_event(EventSpec("octo/repo", 1, "triaged", {"size": "S"})),
        await store.append_event(EventSpec("octo/repo", 2, "triaged", {"size": "XL"})),
        await store.append_event(EventSpec("other/repo", 1, "triaged", {})),
    ]
    assert await store.lease_job("w", 60) is not None
    assert await store.complete_job(
        job_id,
        "w",
        outcome="fixed",
        events=[
            EventSpec("octo/repo", 1, "pushed", {"sha": "abc"}, job_id=job_id),
            EventSpec("octo/repo", 1, "reported", {"nested": {"list": [1, 2]}}, job_id=job_id),
        ],
    )
    events = await store.list_events("octo/repo", 1)
    assert [e.kind for e in events] == ["triaged", "pushed", "reported"]
    assert events[0].id == ids[0]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert events[2].data == {"nested": {"list": [1, 2]}}
    assert (events[1].job_id, events[1].delivery_id) == (job_id, None)
    assert events[1].created_at.tzinfo is not None
    assert [e.kind for e in await store.list_events("octo/repo", 2)] == ["triaged"]
    assert await store.list_events("octo/repo", 3) == []


async def test_stats_count_states_and_age_of_the_oldest_runnable_job(store: Store) -> None:
    empty = await store.stats()
    assert (empty.deliveries_pending, empty.jobs_queued, empty.oldest_queued_job_age) == (0, 0, 0)
    for n in range(3):
        await store.record_delivery(delivery(f"d{n}", received_at=now() - HOUR))
    await store.claim_deliveries("w", limit=1, lease_seconds=60)
    await store.upsert_job(job("late", run_after=now() - 2 * HOUR))
    await store.upsert_job(job("debounced", run_after=now() + HOUR))
    running = await store.upsert_job(job("running", run_after=now() - 3 * HOUR))
    assert (await store.lease_job("w", 60, kinds=["repair"])) is not None
    assert (await store.get_job(running)) is not None

    stats = await store.stats()
    assert stats.deliveries[DeliveryState.PENDING] == 2
    assert stats.deliveries[DeliveryState.PROCESSING] == 1
    assert stats.deliveries[DeliveryState.DONE] == 0
    assert stats.jobs[JobState.QUEUED] == 2
    assert stats.jobs[JobState.RUNNING] == 1
    assert stats.jobs[JobState.DEAD] == 0
    # The running job is not waiting and the debounced one is not due: "late" is the oldest.
    assert 2 * 3600 - 60 < stats.oldest_queued_job_age < 3 * 3600
    assert 3600 - 60 < stats.oldest_pending_delivery_age < 2 * 3600


@pytest.mark.parametrize("enqueue", ["delivery", "job"])
async def test_wait_for_work_wakes_when_another_instance_enqueues(url: str, enqueue: str) -> None:
    async with opened(url) as worker, opened(url) as server:
        await worker.wait_for_work(0)  # drain any wake-up left from opening
        waiting = asyncio.ensure_future(worker.wait_for_work(60))
        await asyncio.sleep(0.05)  # let the waiter start waiting
        assert not waiting.done()
        if enqueue == "delivery":
            assert await server.record_delivery(delivery("d1"))
        else:
            await server.upsert_job(job("k"))
        # Returns long before its own 60 s timeout; the bound only keeps a broken wake-up
        # from hanging the suite.
        await asyncio.wait_for(waiting, 10)


async def test_wait_for_work_wakes_in_process_on_record(store: Store) -> None:
    await store.wait_for_work(0)
    waiting = asyncio.ensure_future(store.wait_for_work(60))
    await asyncio.sleep(0)
    await store.record_delivery(delivery("d1"))
    await asyncio.wait_for(waiting, 10)


# -- the must-show: per-key serialization across two independent stores ----------------------


@dataclass
class StressReport:
    overlaps: list[tuple[str, int]] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    most_keys_at_once: int = 0


async def run_two_workers_pools(
    url: str, *, total: int, keys: list[str], hold: float = 0.002
) -> StressReport:
    """Two independent stores (two pools or two SQLite connections, as two processes would
    have), eight concurrent workers on each, all leasing from one queue of keyed jobs."""
    report = StressReport()
    async with opened(url) as one, opened(url) as two:
        for n in range(total):
            await one.upsert_job(
                job(f"j{n}", concurrency_key=keys[n % len(keys)], run_after=now() - HOUR)
            )
        running: dict[str, int] = dict.fromkeys(keys, 0)

        async def worker(store: Store, owner: str) -> None:
            while len(report.finished) < total:
                leased = await store.lease_job(owner, 30)
                if leased is None:
                    await asyncio.sleep(0.001)
                    continue
                key = leased.concurrency_key
                assert key is not None
                if running[key]:
                    report.overlaps.append((key, leased.id))
                running[key] += 1
                report.most_keys_at_once = max(
                    report.most_keys_at_once, sum(1 for v in running.values() if v)
                )
                await asyncio.sleep(hold)  # hold the key while the others keep trying
                # Leave the critical section before the completion commits, so any overlap we
                # record is a real one.
                running[key] -= 1
                assert await store.complete_job(leased.id, owner, outcome="done")
                report.finished.append(leased.id)

        workers = [worker(s, f"{tag}{n}") for tag, s in (("a", one), ("b", two)) for n in range(8)]
        await asyncio.wait_for(asyncio.gather(*workers), 60)
        stats = await two.stats()
    assert stats.jobs[JobState.DONE] == total
    return report


async def test_two_stores_never_run_two_jobs_with_the_same_concurrency_key(url: str) -> None:
    report = await run_two_workers_pools(url, total=48, keys=[f"octo/repo#{n}" for n in range(4)])
    assert report.overlaps == []
    assert sorted(report.finished) == sorted(set(report.finished))  # each job ran once
    assert len(report.finished) == 48
    assert report.most_keys_at_once >= 2  # different keys did run in parallel


# -- claims stay cheap however many deliveries are kept ----------------------------------------
# The table keeps every delivery for the retention period (30 days by default). A claim that
# scans it costs more with each day kept; on SQLite it runs on the one writer thread, in front of
# the next webhooks' commit.


@pytest.mark.parametrize("statement", ["_FAIL_POISONED_DELIVERIES", "_CLAIM_DELIVERIES"])
def test_sqlite_claims_find_their_rows_through_an_index(tmp_path: Path, statement: str) -> None:
    conn = sqlite3.connect(tmp_path / "plan.db")
    for migration in SQLITE_MIGRATIONS:
        for sql in migration:
            conn.execute(sql)
    # A long history of finished deliveries and a few live ones, with statistics, as in use.
    conn.executemany(
        """INSERT INTO deliveries (id, event, payload, received_at, state, updated_at)
           VALUES (?, 'ping', X'', ?, ?, 0)""",
        [(f"d{i}", float(i), "done" if i < 5000 else "pending") for i in range(5100)],
    )
    conn.execute("ANALYZE")
    sql = getattr(sqlite_store, statement)
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [0] * sql.count("?"))]
    conn.close()
    assert plan
    scans = [step for step in plan if step == "SCAN deliveries" or "TEMP B-TREE" in step]
    assert not scans, plan
    if statement == "_FAIL_POISONED_DELIVERIES":
        assert any("deliveries_leased" in step for step in plan), plan


async def test_postgres_claims_find_their_rows_through_an_index(tmp_path: Path) -> None:
    async with store_url("postgres", tmp_path) as url:
        async with opened(url) as store:
            assert isinstance(store, PostgresStore)
        conn = await asyncpg.connect(postgres_url())
        try:
            await conn.execute(f'SET search_path TO "{store.schema}"')
            # With sequential scans priced out, the planner still picks one if no index fits.
            await conn.execute("SET enable_seqscan = off")
            plans = [
                "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *args))
                for sql, args in (
                    (postgres._FAIL_POISONED_DELIVERIES, [3]),
                    (postgres._CLAIM_DELIVERIES, ["owner", 30.0, 4]),
                )
            ]
        finally:
            await conn.close()
    for plan in plans:
        assert "Seq Scan on deliveries" not in plan, plan
    assert "deliveries_leased" in plans[0]  # not the pending backlog's index


async def test_postgres_key_guard_holds_even_with_a_wide_race_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the guard exists for: worker B's candidate query takes its snapshot, worker A
    leases a job of the same key and commits, then B locks the key. Sleeping inside the
    candidate statement (after its snapshot) makes that interleaving common; a guard that
    trusted the candidate query's NOT EXISTS, or took the lock without re-checking in a new
    statement, fails here."""
    widened = f"SELECT c.* FROM pg_sleep(0.003), ({postgres._LEASE_CANDIDATES_SQL}) AS c"  # noqa: S608
    monkeypatch.setattr(postgres, "_LEASE_CANDIDATES_SQL", widened)
    async with store_url("postgres", tmp_path) as location:
        # Each job holds its key longer than the widened window, so an overlap is seen.
        report = await run_two_workers_pools(location, total=24, keys=["o/r#1", "o/r#2"], hold=0.02)
    assert report.overlaps == []
    assert len(report.finished) == 24


# -- the batching mechanism itself -------------------------------------------------------------


async def test_group_committer_batches_concurrent_submissions() -> None:
    batches: list[list[int]] = []

    async def flush(items: Any) -> list[int]:
        batches.append(list(items))
        await asyncio.sleep(0)
        return [item * 10 for item in items]

    committer: GroupCommitter[int, int] = GroupCommitter(flush)
    results = await asyncio.gather(*(committer.submit(n) for n in range(50)))
    assert results == [n * 10 for n in range(50)]
    assert sorted(n for batch in batches for n in batch) == list(range(50))
    assert len(batches) < 50
    await committer.close()
    with pytest.raises(StoreError):
        await committer.submit(1)


async def test_group_committer_hands_a_failed_flush_to_every_waiter() -> None:
    calls = 0

    async def flush(items: Any) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreError("disk full")
        return ["ok"] * len(items)

    committer: GroupCommitter[int, str] = GroupCommitter(flush)
    results = await asyncio.gather(*(committer.submit(n) for n in range(5)), return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results)
    assert await committer.submit(9) == "ok"  # the next batch is unaffected
    await committer.close()
