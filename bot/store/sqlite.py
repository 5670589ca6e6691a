"""The embedded SQLite backend (the default).

Every write runs on ONE dedicated writer thread with its own connection, inside ``BEGIN
IMMEDIATE`` so that several processes sharing the file (``serve`` plus ``worker``) serialize
cleanly; reads use a second connection on a second thread, so the event loop never blocks on disk.
WAL mode with ``synchronous=FULL`` makes every commit fsync the WAL. Deliveries are the
exception: ``record_delivery`` appends them to a log of segment files (``<db>-bodies/``, see
``bot/store/bodies.py``) with one fdatasync per batch, then commits the rows that index them
(and say where each body is) without an fsync of their own; ``open`` restores any row a power
cut took from the log. When ``record_delivery`` returns, the delivery survives a power cut, for
one fsync per batch instead of two. Timestamps are stored as UTC epoch seconds (REAL) and leases
are compared against ``time.time()``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from bot.kernel import JSONObject
from bot.kernel.errors import StoreError
from bot.store.base import (
    MAX_DELIVERY_ATTEMPTS,
    DeliveryState,
    DeliverySummary,
    EventSpec,
    GroupCommitter,
    Job,
    JobSpec,
    JobState,
    NewDelivery,
    OutcomeCount,
    PrActivity,
    PrEvent,
    Pruned,
    Scope,
    StoredDelivery,
    StoreStats,
    WorkSignal,
    as_utc,
    first_wins,
)
from bot.store.bodies import SEGMENT_BYTES, BodyLog, BodyRef

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Each entry is one schema version, applied in order inside one write transaction.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE deliveries (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            event TEXT NOT NULL,
            action TEXT,
            installation_id INTEGER,
            repo TEXT,
            payload BLOB NOT NULL,
            received_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            lease_owner TEXT,
            lease_expires REAL,
            updated_at REAL NOT NULL
        )""",
        """CREATE INDEX deliveries_claimable ON deliveries (received_at, seq)
            WHERE state IN ('pending', 'processing')""",
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            key TEXT NOT NULL UNIQUE,
            payload TEXT NOT NULL,
            concurrency_key TEXT,
            state TEXT NOT NULL DEFAULT 'queued',
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            run_after REAL NOT NULL,
            lease_owner TEXT,
            lease_expires REAL,
            outcome TEXT,
            result TEXT,
            error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX jobs_runnable ON jobs (run_after, id) WHERE state IN ('queued', 'running')",
        "CREATE INDEX jobs_running_key ON jobs (concurrency_key) WHERE state = 'running'",
        """CREATE TABLE pr_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL,
            delivery_id TEXT,
            job_id INTEGER,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX pr_events_by_pr ON pr_events (repo, pr, id)",
    ),
    # v2: deliveries are logged in segment files (bot/store/bodies.py); the row says where the
    # body is. Rows written before keep their BLOB, new rows store an empty one in its place.
    # body_segments: how far each segment is indexed by rows, where recovery resumes.
    (
        "ALTER TABLE deliveries ADD COLUMN body_segment TEXT",
        "ALTER TABLE deliveries ADD COLUMN body_offset INTEGER",
        "ALTER TABLE deliveries ADD COLUMN body_length INTEGER",
        "ALTER TABLE deliveries ADD COLUMN body_crc INTEGER",
        """CREATE TABLE body_segments (
            name TEXT PRIMARY KEY,
            indexed_to INTEGER NOT NULL
        )""",
    ),
    # v3: pruning asks which segments rows still point into.
    (
        """CREATE INDEX deliveries_by_segment ON deliveries (body_segment)
            WHERE body_segment IS NOT NULL""",
    ),
    # v4: the leases a claim checks for poison, without a scan of every delivery ever kept.
    ("CREATE INDEX deliveries_leased ON deliveries (lease_expires) WHERE state = 'processing'",),
)

# Both claim statements must find their rows through an index (tests/test_store.py checks the
# plans): the table keeps every delivery for the retention period, and a claim runs on the one
# writer thread, in front of the next webhooks' commit.
_FAIL_POISONED_DELIVERIES = """
UPDATE deliveries SET state = 'failed', lease_expires = NULL, updated_at = ?,
    error = 'processing lease expired ' || attempts || ' times'
WHERE state = 'processing' AND lease_expires < ? AND attempts >= ?"""

_CLAIM_DELIVERIES = """
UPDATE deliveries SET state = 'processing', lease_owner = ?, lease_expires = ?,
    attempts = attempts + 1, updated_at = ?
WHERE seq IN (
    SELECT seq FROM deliveries
    -- The IN term lets SQLite use deliveries_claimable: it uses a partial index only when the
    -- query repeats the index's condition. Without it, each claim scanned and sorted the table.
    WHERE state IN ('pending', 'processing') AND (state = 'pending' OR lease_expires < ?)
    ORDER BY received_at, seq LIMIT ?)
RETURNING *"""

#: How often BEGIN IMMEDIATE is retried after busy_timeout already waited (another process holds
#: the write lock for a long time, e.g. a checkpoint on a slow disk).
_BUSY_RETRIES = 5
#: Write transactions between two background WAL checkpoints. Checkpoints run on their own
#: thread and connection (PASSIVE: they never block the writer), so a commit does not pay for one;
#: the writer's own autocheckpoint stays as a backstop should the background one fall behind.
_CHECKPOINT_EVERY_WRITES = 50
_BACKSTOP_AUTOCHECKPOINT_PAGES = 10000
#: How much lower than the event loop the store's threads run (see _defer_to_event_loop).
_STORE_THREAD_NICE = 2
#: While idle, how often ``wait_for_work`` looks whether another process wrote to the file.
_CROSS_PROCESS_POLL_SECONDS = 0.25


def _ts(moment: datetime) -> float:
    return as_utc(moment).timestamp()


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _store_thread(name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix=name, initializer=_defer_to_event_loop)


def _defer_to_event_loop() -> None:
    """Run this store thread a little below the event loop's thread (nice +2, this thread only).

    Every fsync that completes wakes the writer, and at equal priority it preempts the event loop
    in the middle of a request. Measured with bench/ingest.py on one core: 1.1 context switches
    per webhook at nice 0, 0.9 at +2, with ~10 µs less CPU per webhook and ~4 % more throughput.
    Linux keeps nice per thread: https://man7.org/linux/man-pages/man2/getpriority.2.html (BUGS)
    """
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, min(current + _STORE_THREAD_NICE, 19))
    except OSError as exc:  # a sandbox without the syscall: correct, only a little slower
        log.debug("store thread keeps its priority: %s", exc)


def _meta(d: NewDelivery) -> bytes:
    """What the log keeps beside a body, so that recovery can rebuild the row."""
    return orjson.dumps(
        {"id": d.id, "event": d.event, "action": d.action, "installation_id": d.installation_id,
         "repo": d.repo, "received_at": _ts(d.received_at)}
    )  # fmt: skip


def _delivery_from_meta(meta: bytes, payload: bytes) -> NewDelivery:
    data = orjson.loads(meta)
    return NewDelivery(
        id=data["id"],
        event=data["event"],
        action=data["action"],
        installation_id=data["installation_id"],
        repo=data["repo"],
        payload=payload,
        received_at=_dt(data["received_at"]),
    )


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _delivery(row: sqlite3.Row, bodies: BodyLog) -> StoredDelivery:
    """The delivery a row describes, its body read from its segment (or the row, before v2)."""
    if row["body_segment"] is None:
        payload = bytes(row["payload"])
    else:
        payload = bodies.read(
            BodyRef(row["body_segment"], row["body_offset"], row["body_length"], row["body_crc"])
        )
    return StoredDelivery(
        id=row["id"],
        event=row["event"],
        action=row["action"],
        installation_id=row["installation_id"],
        repo=row["repo"],
        payload=payload,
        received_at=_dt(row["received_at"]),
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        error=row["error"],
    )


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        key=row["key"],
        payload=json.loads(row["payload"]),
        concurrency_key=row["concurrency_key"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        run_after=_dt(row["run_after"]),
        lease_owner=row["lease_owner"],
        lease_expires=None if row["lease_expires"] is None else _dt(row["lease_expires"]),
        outcome=row["outcome"],
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
        created_at=_dt(row["created_at"]),
        updated_at=_dt(row["updated_at"]),
        max_attempts=row["max_attempts"],
    )


def _event(row: sqlite3.Row) -> PrEvent:
    return PrEvent(
        id=row["id"],
        repo=row["repo"],
        pr=row["pr"],
        kind=row["kind"],
        data=json.loads(row["data"]),
        delivery_id=row["delivery_id"],
        job_id=row["job_id"],
        created_at=_dt(row["created_at"]),
    )


class SqliteStore:
    """SQLite implementation of ``bot.store.base.Store``."""

    def __init__(
        self, path: Path, *, busy_timeout_ms: int = 5000, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.path = path
        self._bodies = BodyLog(path.with_name(path.name + "-bodies"), segment_bytes=segment_bytes)
        self._busy_timeout_ms = busy_timeout_ms
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._checkpointer: ThreadPoolExecutor | None = None
        self._cconn: sqlite3.Connection | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._writes_since_checkpoint = 0
        self._committer: GroupCommitter[NewDelivery, bool] | None = None
        self._signal = WorkSignal()
        self._data_version = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {self.path}: {exc}") from exc
        self._writer = _store_thread("sqlite-writer")
        self._reader = _store_thread("sqlite-reader")
        self._checkpointer = _store_thread("sqlite-checkpoint")
        try:
            self._wconn = await self._run(self._writer, self._connect, True)
            await self._write(self._migrate)
            await self._on_writer(self._recover_bodies)
            self._rconn = await self._run(self._reader, self._connect, False)
            self._cconn = await self._run(self._checkpointer, self._connect, False)
        except BaseException:
            await self.close()
            raise
        self._committer = GroupCommitter(self._flush_deliveries)

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer.close()
            self._committer = None
        if self._checkpoint_task is not None:
            await self._checkpoint_task
            self._checkpoint_task = None
        for executor, conn in (
            (self._writer, self._wconn),
            (self._reader, self._rconn),
            (self._checkpointer, self._cconn),
        ):
            if executor is None:
                continue
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            # Both threads are idle now, so this does not block the loop for long.
            executor.shutdown(wait=True)
        self._bodies.close()  # the writer thread, its only user, has stopped
        self._writer = self._reader = self._checkpointer = None
        self._wconn = self._rconn = self._cconn = None

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return when this process recorded work, another process wrote, or after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            if await self._signal.wait(min(remaining, _CROSS_PROCESS_POLL_SECONDS)):
                return
            # data_version changes when any OTHER connection (another process, or our own
            # writer) committed: the cheap way to notice a `serve` process enqueueing work.
            version = await self._read(
                lambda c: int(c.execute("PRAGMA data_version").fetchone()[0])
            )
            if version != self._data_version:
                self._data_version = version
                return

    # -- deliveries ------------------------------------------------------------------------

    async def record_delivery(self, d: NewDelivery) -> bool:
        if self._committer is None:
            raise StoreError("the store is not open")
        return await self._committer.submit(d)

    async def _flush_deliveries(self, batch: Sequence[NewDelivery]) -> list[bool]:
        def log_then_index() -> list[bool]:
            # The fsynced log makes the batch durable; the rows that index it need no fsync of
            # their own: a power cut that loses them is mended by _recover_bodies.
            refs, end = self._bodies.append([(_meta(d), d.payload) for d in batch])
            return self._in_write_transaction(
                functools.partial(self._index_deliveries, batch, refs, refs[0].segment, end),
                durable=False,
            )

        results = await self._on_writer(log_then_index)
        if any(results):
            self._signal.notify()
        return results

    @staticmethod
    def _index_deliveries(
        batch: Sequence[NewDelivery],
        refs: Sequence[BodyRef],
        segment: str,
        end: int,
        conn: sqlite3.Connection,
    ) -> list[bool]:
        """Insert the rows for logged deliveries; ``segment`` is indexed up to ``end`` now."""
        now = time.time()
        inserted: set[str] = set()
        for d, ref in zip(batch, refs, strict=True):
            cursor = conn.execute(
                """INSERT INTO deliveries
                   (id, event, action, installation_id, repo, payload, received_at, updated_at,
                    body_segment, body_offset, body_length, body_crc)
                   VALUES (?, ?, ?, ?, ?, X'', ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING""",
                (d.id, d.event, d.action, d.installation_id, d.repo, _ts(d.received_at), now,
                 ref.segment, ref.offset, ref.length, ref.crc),
            )  # fmt: skip
            if cursor.rowcount == 1:
                inserted.add(d.id)
        conn.execute(
            """INSERT INTO body_segments (name, indexed_to) VALUES (?, ?)
               ON CONFLICT (name) DO UPDATE SET indexed_to = max(indexed_to, excluded.indexed_to)""",
            (segment, end),
        )
        return first_wins((d.id for d in batch), inserted)

    def _recover_bodies(self) -> int:
        """Index the logged deliveries whose rows a power cut took (writer thread, at open)."""
        conn = self._wconn
        if conn is None:
            raise StoreError("the store is not open")
        indexed = dict(conn.execute("SELECT name, indexed_to FROM body_segments").fetchall())
        recovered = 0
        for segment in self._bodies.segments():
            start = indexed.get(segment, 0)
            scan = self._bodies.recover(segment, start)
            if scan is None or scan.size <= start:
                continue  # a live process is writing it, or every byte is indexed
            records = scan.records
            # Indexing needs only the metadata: the bodies stay where they are, in the log. The
            # whole file counts as indexed afterwards, torn end included, so pruning can drop it.
            batch = [_delivery_from_meta(r.meta, b"") for r in records]
            inserted = self._in_write_transaction(
                functools.partial(
                    self._index_deliveries, batch, [r.body for r in records], segment, scan.size
                )
            )
            recovered += sum(inserted)
            if records:
                log.warning(
                    "store: %d logged deliveries in %s had no row (lost in a crash?); %d restored",
                    len(records), segment, sum(inserted),
                )  # fmt: skip
            torn = scan.size - (records[-1].end if records else start)
            if torn:
                log.warning(
                    "store: %s ends in %d bytes of a batch cut short (never acknowledged): ignored",
                    segment, torn,
                )  # fmt: skip
        return recovered

    async def prune_deliveries(self, before: datetime) -> Pruned:
        deleted = await self._write(
            lambda conn: (
                conn.execute(
                    """DELETE FROM deliveries
                   WHERE state IN ('done', 'failed') AND received_at < ?""",
                    (_ts(before),),
                ).rowcount
            )
        )
        return Pruned(deliveries=deleted, segments=await self._on_writer(self._drop_segments))

    def _drop_segments(self) -> int:
        """Delete the log segments no row points into any more (writer thread)."""
        conn = self._wconn
        if conn is None:
            raise StoreError("the store is not open")
        referenced = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT body_segment FROM deliveries WHERE body_segment IS NOT NULL"
            )
        }
        indexed = dict(conn.execute("SELECT name, indexed_to FROM body_segments").fetchall())
        dropped = [
            segment
            for segment in self._bodies.segments()
            if segment not in referenced and self._bodies.drop(segment, indexed.get(segment, -1))
        ]
        if dropped:
            self._in_write_transaction(
                lambda c: c.executemany(
                    "DELETE FROM body_segments WHERE name = ?", [(name,) for name in dropped]
                )
            )
        return len(dropped)

    async def get_delivery(self, delivery_id: str) -> StoredDelivery | None:
        def read(conn: sqlite3.Connection) -> StoredDelivery | None:
            row = conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            return None if row is None else _delivery(row, self._bodies)

        return await self._read(read)

    async def claim_deliveries(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[StoredDelivery]:
        def claim(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            now = time.time()
            conn.execute(_FAIL_POISONED_DELIVERIES, (now, now, MAX_DELIVERY_ATTEMPTS))
            return conn.execute(
                _CLAIM_DELIVERIES, (owner, now + lease_seconds, now, now, limit)
            ).fetchall()

        def claim_and_read() -> list[StoredDelivery]:
            rows = self._in_write_transaction(claim)
            rows.sort(key=lambda r: (r["received_at"], r["seq"]))
            claimed: list[StoredDelivery] = []
            damaged: list[tuple[str, float, str]] = []
            for row in rows:
                try:
                    claimed.append(_delivery(row, self._bodies))
                except StoreError as exc:
                    # Retrying cannot mend a lost or damaged body: fail it now, loudly, and let
                    # the rest of the batch through.
                    log.error("delivery %s cannot be processed: %s", row["id"], exc)
                    damaged.append((str(exc), time.time(), row["id"]))
            if damaged:
                self._in_write_transaction(
                    lambda conn: conn.executemany(
                        """UPDATE deliveries SET state = 'failed', error = ?, lease_expires = NULL,
                               updated_at = ? WHERE id = ?""",
                        damaged,
                    )
                )
            return claimed

        return await self._on_writer(claim_and_read)

    async def complete_delivery(
        self,
        delivery_id: str,
        owner: str,
        *,
        jobs: Sequence[JobSpec],
        events: Sequence[EventSpec],
        error: str | None = None,
    ) -> bool:
        state = DeliveryState.DONE if error is None else DeliveryState.FAILED

        def complete(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cursor = conn.execute(
                """UPDATE deliveries SET state = ?, error = ?, lease_expires = NULL, updated_at = ?
                   WHERE id = ? AND lease_owner = ? AND state = 'processing'""",
                (state.value, error, now, delivery_id, owner),
            )
            if cursor.rowcount != 1:
                return False
            for spec in jobs:
                self._upsert_job(conn, spec, now)
            for event in events:
                self._append_event(conn, event, now)
            return True

        done = await self._write(complete)
        if done and jobs:
            self._signal.notify()
        return done

    # -- jobs ------------------------------------------------------------------------------

    @staticmethod
    def _upsert_job(conn: sqlite3.Connection, spec: JobSpec, now: float) -> tuple[int, bool]:
        run_after = now if spec.run_after is None else _ts(spec.run_after)
        row = conn.execute(
            """INSERT INTO jobs (kind, key, payload, concurrency_key, max_attempts, run_after,
                                 created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (key) DO UPDATE SET
                   payload = excluded.payload,
                   run_after = max(jobs.run_after, excluded.run_after),
                   updated_at = excluded.updated_at
               WHERE jobs.state = 'queued'
               RETURNING id""",
            (spec.kind, spec.key, json.dumps(spec.payload), spec.concurrency_key,
             spec.max_attempts, run_after, now, now),
        ).fetchone()  # fmt: skip
        if row is not None:
            return int(row[0]), True
        # The key exists and is no longer queued: the work it names is already under way or over.
        existing = conn.execute("SELECT id FROM jobs WHERE key = ?", (spec.key,)).fetchone()
        return int(existing[0]), False

    async def upsert_job(self, spec: JobSpec) -> int:
        job_id, changed = await self._write(lambda c: self._upsert_job(c, spec, time.time()))
        if changed:
            self._signal.notify()
        return job_id

    async def lease_job(
        self, owner: str, lease_seconds: float, kinds: Sequence[str] | None = None
    ) -> Job | None:
        if kinds is not None and not kinds:
            return None
        kind_filter = "" if kinds is None else f"AND kind IN ({', '.join('?' * len(kinds))})"

        def lease(conn: sqlite3.Connection) -> sqlite3.Row | None:
            now = time.time()
            conn.execute(
                """UPDATE jobs SET state = 'dead', lease_expires = NULL, updated_at = ?,
                       error = 'lease expired on attempt ' || attempts || ' of ' || max_attempts
                           || ' (the worker died or hung)'
                   WHERE state = 'running' AND lease_expires < ? AND attempts >= max_attempts""",
                (now, now),
            )
            candidate = conn.execute(
                f"""SELECT id FROM jobs AS j
                    WHERE ((state = 'queued' AND run_after <= ?)
                           OR (state = 'running' AND lease_expires < ?))
                      {kind_filter}
                      AND (concurrency_key IS NULL OR NOT EXISTS (
                          SELECT 1 FROM jobs AS r
                          WHERE r.concurrency_key = j.concurrency_key AND r.state = 'running'
                            AND r.lease_expires >= ? AND r.id <> j.id))
                    ORDER BY run_after, id LIMIT 1""",  # noqa: S608 -- only placeholders
                (now, now, *(kinds or ()), now),
            ).fetchone()
            if candidate is None:
                return None
            row: sqlite3.Row = conn.execute(
                """UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires = ?,
                       attempts = attempts + 1, updated_at = ?
                   WHERE id = ? RETURNING *""",
                (owner, now + lease_seconds, now, candidate[0]),
            ).fetchone()
            return row

        row = await self._write(lease)
        return None if row is None else _job(row)

    async def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> bool:
        def beat(conn: sqlite3.Connection) -> bool:
            now = time.time()
            # An expired lease is lost even if nobody took the job yet: another job with the same
            # concurrency key may already be running, so this worker must stop.
            cursor = conn.execute(
                """UPDATE jobs SET lease_expires = ?, updated_at = ?
                   WHERE id = ? AND lease_owner = ? AND state = 'running' AND lease_expires >= ?""",
                (now + lease_seconds, now, job_id, owner, now),
            )
            return cursor.rowcount == 1

        return await self._write(beat)

    async def complete_job(
        self,
        job_id: int,
        owner: str,
        *,
        outcome: str,
        result: JSONObject | None = None,
        events: Sequence[EventSpec] = (),
    ) -> bool:
        result_json = None if result is None else json.dumps(result)

        def complete(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cursor = conn.execute(
                """UPDATE jobs SET state = 'done', outcome = ?, result = ?, lease_expires = NULL,
                       updated_at = ?
                   WHERE id = ? AND lease_owner = ? AND state = 'running'""",
                (outcome, result_json, now, job_id, owner),
            )
            if cursor.rowcount != 1:
                return False
            for event in events:
                self._append_event(conn, event, now)
            return True

        done = await self._write(complete)
        if done:
            self._signal.notify()  # the concurrency key is free again
        return done

    async def fail_job(
        self, job_id: int, owner: str, *, error: str, retry_at: datetime | None
    ) -> bool:
        retry = None if retry_at is None else _ts(retry_at)

        def fail(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cursor = conn.execute(
                """UPDATE jobs SET
                       state = CASE WHEN ? IS NULL OR attempts >= max_attempts
                                    THEN 'dead' ELSE 'queued' END,
                       run_after = CASE WHEN ? IS NULL OR attempts >= max_attempts
                                        THEN run_after ELSE ? END,
                       error = ?, lease_expires = NULL, updated_at = ?
                   WHERE id = ? AND lease_owner = ? AND state = 'running'""",
                (retry, retry, retry, error, now, job_id, owner),
            )
            return cursor.rowcount == 1

        done = await self._write(fail)
        if done:
            self._signal.notify()
        return done

    async def get_job(self, job_id: int) -> Job | None:
        row = await self._read(
            lambda c: c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        )
        return None if row is None else _job(row)

    async def find_job(self, key: str) -> Job | None:
        row = await self._read(
            lambda c: c.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else _job(row)

    # -- events ----------------------------------------------------------------------------

    @staticmethod
    def _append_event(conn: sqlite3.Connection, e: EventSpec, now: float) -> int:
        row = conn.execute(
            """INSERT INTO pr_events (repo, pr, kind, data, delivery_id, job_id, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            (e.repo, e.pr, e.kind, json.dumps(e.data), e.delivery_id, e.job_id, now),
        ).fetchone()
        return int(row[0])

    async def append_event(self, e: EventSpec) -> int:
        return await self._write(lambda c: self._append_event(c, e, time.time()))

    async def list_events(self, repo: str, pr: int) -> list[PrEvent]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT * FROM pr_events WHERE repo = ? AND pr = ? ORDER BY id", (repo, pr)
            ).fetchall()
        )
        return [_event(r) for r in rows]

    async def stats(self) -> StoreStats:
        def read(conn: sqlite3.Connection) -> StoreStats:
            now = time.time()
            # One read transaction, so the numbers are one consistent snapshot.
            conn.execute("BEGIN")
            try:
                deliveries = dict(
                    conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state")
                )
                jobs = dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"))
                oldest_job = conn.execute(
                    "SELECT min(run_after) FROM jobs WHERE state = 'queued' AND run_after <= ?",
                    (now,),
                ).fetchone()[0]
                oldest_delivery = conn.execute(
                    "SELECT min(received_at) FROM deliveries WHERE state = 'pending'"
                ).fetchone()[0]
            finally:
                conn.execute("COMMIT")
            return StoreStats(
                deliveries={s: int(deliveries.get(s.value, 0)) for s in DeliveryState},
                jobs={s: int(jobs.get(s.value, 0)) for s in JobState},
                oldest_queued_job_age=0.0 if oldest_job is None else max(0.0, now - oldest_job),
                oldest_pending_delivery_age=(
                    0.0 if oldest_delivery is None else max(0.0, now - oldest_delivery)
                ),
            )

        return await self._read(read)

    # -- the status page ---------------------------------------------------------------------
    # Repositories are passed as one JSON array (json_each): no limit on how many a user sees.

    async def recent_deliveries(
        self, scope: Scope, *, since: datetime, limit: int
    ) -> list[DeliverySummary]:
        # Newest first by seq (the rowid): a backwards walk of the table that stops at ``limit``
        # matches, with no index that ingest would have to maintain.
        rows = await self._read(
            lambda c: c.execute(
                """SELECT id, event, action, installation_id, repo, state, attempts, error,
                          received_at, updated_at
                   FROM deliveries
                   WHERE received_at >= ?
                     AND (repo IN (SELECT value FROM json_each(?))
                          OR (repo IS NULL
                              AND installation_id IN (SELECT value FROM json_each(?))))
                   ORDER BY seq DESC LIMIT ?""",
                (_ts(since), json.dumps(sorted(scope.repos)),
                 json.dumps(sorted(scope.installations)), limit),
            ).fetchall()
        )  # fmt: skip
        return [
            DeliverySummary(
                id=r["id"],
                event=r["event"],
                action=r["action"],
                installation_id=r["installation_id"],
                repo=r["repo"],
                state=DeliveryState(r["state"]),
                attempts=r["attempts"],
                error=r["error"],
                received_at=_dt(r["received_at"]),
                updated_at=_dt(r["updated_at"]),
            )
            for r in rows
        ]

    async def pr_activity(
        self, repos: frozenset[str], *, since: datetime, limit: int
    ) -> list[PrActivity]:
        rows = await self._read(
            lambda c: c.execute(
                """SELECT repo, pr, count(*) AS events, max(created_at) AS last_at
                   FROM pr_events
                   WHERE repo IN (SELECT value FROM json_each(?)) AND created_at >= ?
                   GROUP BY repo, pr ORDER BY last_at DESC, repo, pr LIMIT ?""",
                (json.dumps(sorted(repos)), _ts(since), limit),
            ).fetchall()
        )
        return [
            PrActivity(
                repo=r["repo"],
                pr=r["pr"],
                events=r["events"],
                last_at=_dt(r["last_at"]),
            )
            for r in rows
        ]

    async def outcome_counts(self, repos: frozenset[str], *, since: datetime) -> list[OutcomeCount]:
        rows = await self._read(
            lambda c: c.execute(
                """SELECT repo, date(created_at, 'unixepoch') AS day,
                          json_extract(data, '$.outcome') AS outcome,
                          json_extract(data, '$.llm_model') AS model, count(*) AS n,
                          sum(coalesce(json_extract(data, '$.llm_usage.input'), 0)) AS input,
                          sum(coalesce(json_extract(data, '$.llm_usage.output'), 0)) AS output,
                          sum(coalesce(json_extract(data, '$.llm_usage.cache_read'), 0)) AS cread,
                          sum(coalesce(json_extract(data, '$.llm_usage.cache_write'), 0)) AS cwrite
                   FROM pr_events
                   WHERE repo IN (SELECT value FROM json_each(?)) AND kind = 'repair.outcome'
                     AND created_at >= ?
                   GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""",
                (json.dumps(sorted(repos)), _ts(since)),
            ).fetchall()
        )
        return [
            OutcomeCount(
                repo=r["repo"],
                day=date.fromisoformat(r["day"]),
                outcome=str(r["outcome"]),
                count=int(r["n"]),
                llm_model=r["model"],
                llm_input=int(r["input"]),
                llm_output=int(r["output"]),
                llm_cache_read=int(r["cread"]),
                llm_cache_write=int(r["cwrite"]),
            )
            for r in rows
        ]

    # -- plumbing --------------------------------------------------------------------------

    def _connect(self, writer: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        if writer:
            # journal_mode is persistent in the file; switching it needs a moment of exclusive
            # access, and SQLite answers "database is locked" at once (without the busy
            # handler) while another process is opening the same file: retry briefly.
            for attempt in range(1, _BUSY_RETRIES * 10 + 1):
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc) or attempt == _BUSY_RETRIES * 10:
                        raise
                    time.sleep(0.02 * attempt)
            conn.execute("PRAGMA synchronous = FULL")  # commit fsyncs the WAL: durable
            conn.execute(f"PRAGMA wal_autocheckpoint = {_BACKSTOP_AUTOCHECKPOINT_PAGES}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                   version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"""
        )
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, time.time()),
            )

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                executor, functools.partial(fn, *args)
            )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite {self.path}: {exc}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._on_writer(functools.partial(self._in_write_transaction, fn))

    async def _on_writer(self, call: Callable[[], T]) -> T:
        if self._writer is None:
            raise StoreError("the store is not open")
        result: T = await self._run(self._writer, call)
        self._writes_since_checkpoint += 1
        if self._writes_since_checkpoint >= _CHECKPOINT_EVERY_WRITES and (
            self._checkpoint_task is None or self._checkpoint_task.done()
        ):
            self._writes_since_checkpoint = 0
            self._checkpoint_task = asyncio.create_task(
                self._checkpoint(), name="sqlite-checkpoint"
            )
        return result

    async def _checkpoint(self) -> None:
        executor, conn = self._checkpointer, self._cconn
        if executor is None or conn is None:
            return
        try:
            await self._run(executor, conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
        except StoreError as exc:
            # Not fatal: the writer's autocheckpoint backstop keeps the WAL bounded.
            log.warning("store: background WAL checkpoint failed: %s", exc)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None or self._rconn is None:
            raise StoreError("the store is not open")
        return await self._run(self._reader, fn, self._rconn)

    def _in_write_transaction(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> T:
        """Run ``fn`` in BEGIN IMMEDIATE ... COMMIT on the writer thread, retrying SQLITE_BUSY.

        ``durable=False`` commits without fsyncing the WAL (``synchronous=NORMAL``), for rows a
        fsynced log can restore; the next durable commit fsyncs them along with its own.
        """
        conn = self._wconn
        if conn is None:
            raise StoreError("the store is not open")
        if not durable:
            conn.execute("PRAGMA synchronous = NORMAL")
            try:
                return self._in_write_transaction(fn)
            finally:
                conn.execute("PRAGMA synchronous = FULL")
        for attempt in range(1, _BUSY_RETRIES + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _is_busy(exc) and attempt < _BUSY_RETRIES:
                    time.sleep(0.05 * attempt)
                    continue
                raise
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result
        raise StoreError(f"SQLite {self.path}: still busy after {_BUSY_RETRIES} attempts")
