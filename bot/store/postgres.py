"""The PostgreSQL backend, for several worker processes on several machines.

asyncpg pool; ``synchronous_commit`` is forced on so a commit is durable. Deliveries are
group-committed with one ``INSERT ... SELECT FROM unnest(...)`` statement per batch. Jobs and
deliveries are claimed with ``FOR UPDATE SKIP LOCKED``; per-concurrency-key serialization across
processes is guarded by a transaction-scoped advisory lock on the key followed by a re-check in a
new statement (see ``lease_job``). Leases are compared against the database clock (``now()``).
Writers NOTIFY ``shepherd_work`` in the transaction that creates or frees work, and a dedicated
listening connection turns that into an in-process wake-up.

``?schema=NAME`` in the URL keeps all tables in that schema (created on open), so several
deployments or test runs can share one database.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from bot.kernel import JSONObject
from bot.kernel.errors import StoreError
from bot.store.base import (
    MAX_DELIVERY_ATTEMPTS,
    WORK_CHANNEL,
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
    check_identifier,
    first_wins,
)

log = logging.getLogger(__name__)

#: First key of the two-key advisory locks; the second is hashtext(schema:...).
_MIGRATION_LOCK = 0x5348_0001
_CONCURRENCY_LOCK = 0x5348_0002
#: How many candidates one lease attempt looks at before giving up (others may hold their keys).
_LEASE_CANDIDATES = 8
_CONNECT_TIMEOUT = 10.0
_PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE deliveries (
            id text PRIMARY KEY,
            seq bigint GENERATED ALWAYS AS IDENTITY,
            event text NOT NULL,
            action text,
            installation_id bigint,
            repo text,
            payload bytea NOT NULL,
            received_at timestamptz NOT NULL,
            state text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'processing', 'done', 'failed')),
            attempts integer NOT NULL DEFAULT 0,
            error text,
            lease_owner text,
            lease_expires timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
        """CREATE INDEX deliveries_claimable ON deliveries (received_at, seq)
            WHERE state IN ('pending', 'processing')""",
        """CREATE TABLE jobs (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind text NOT NULL,
            key text NOT NULL UNIQUE,
            payload jsonb NOT NULL,
            concurrency_key text,
            state text NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'running', 'done', 'failed', 'dead')),
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL,
            run_after timestamptz NOT NULL,
            lease_owner text,
            lease_expires timestamptz,
            outcome text,
            result jsonb,
            error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX jobs_runnable ON jobs (run_after, id) WHERE state IN ('queued', 'running')",
        "CREATE INDEX jobs_running_key ON jobs (concurrency_key) WHERE state = 'running'",
        """CREATE TABLE pr_events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            repo text NOT NULL,
            pr integer NOT NULL,
            kind text NOT NULL,
            data jsonb NOT NULL,
            delivery_id text,
            job_id bigint,
            created_at timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX pr_events_by_pr ON pr_events (repo, pr, id)",
    ),
    (
        # Webhook bodies are stored out of line but uncompressed: pglz on a 24 KB body costs more
        # CPU than the whole rest of the insert, on the path that must answer GitHub fast.
        "ALTER TABLE deliveries ALTER COLUMN payload SET STORAGE EXTERNAL",
    ),
    (
        # lz4 instead: measured on the real example payloads (~18 KB), it halves PostgreSQL's
        # CPU per stored delivery against no compression (80 vs 110 us) and writes a quarter of
        # the bytes to the WAL and the table. A server built without lz4, or older than 14, keeps
        # the bodies uncompressed.
        """DO $$
        BEGIN
            ALTER TABLE deliveries ALTER COLUMN payload SET COMPRESSION lz4;
            ALTER TABLE deliveries ALTER COLUMN payload SET STORAGE EXTENDED;
        EXCEPTION WHEN feature_not_supported OR syntax_error THEN
            RAISE NOTICE 'no lz4 compression here: delivery bodies stay uncompressed';
        END $$""",
    ),
    (
        # The leases a claim checks for poison, without walking the whole pending backlog.
        "CREATE INDEX deliveries_leased ON deliveries (lease_expires) WHERE state = 'processing'",
    ),
    (
        # The status page reads the newest deliveries. A BRIN index fits a column that grows with
        # the table's physical order and costs ingest next to nothing (a B-tree would be one more
        # tree insert per webhook); the newest, not yet summarised ranges are always read.
        "CREATE INDEX deliveries_received_brin ON deliveries USING brin (received_at)",
    ),
)

_INSERT_DELIVERIES = """
WITH ins AS (
    INSERT INTO deliveries (id, event, action, installation_id, repo, payload, received_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                         $6::bytea[], $7::timestamptz[])
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), woke AS (
    SELECT pg_notify($8, '') FROM (SELECT 1 FROM ins LIMIT 1) AS any_new
)
SELECT id FROM ins UNION ALL SELECT NULL FROM woke
"""

_FAIL_POISONED_DELIVERIES = """
WITH poisoned AS (
    SELECT id FROM deliveries
    WHERE state = 'processing' AND lease_expires < now() AND attempts >= $1
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries AS d SET state = 'failed', lease_expires = NULL, updated_at = now(),
    error = 'processing lease expired ' || d.attempts || ' times'
FROM poisoned WHERE d.id = poisoned.id
"""

_CLAIM_DELIVERIES = """
WITH claimable AS (
    SELECT id FROM deliveries
    WHERE state = 'pending' OR (state = 'processing' AND lease_expires < now())
    ORDER BY received_at, seq
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries AS d SET state = 'processing', lease_owner = $1,
    lease_expires = now() + make_interval(secs => $2::float8),
    attempts = d.attempts + 1, updated_at = now()
FROM claimable WHERE d.id = claimable.id
RETURNING d.*
"""

_UPSERT_JOB = """
INSERT INTO jobs (kind, key, payload, concurrency_key, max_attempts, run_after)
VALUES ($1, $2, $3, $4, $5, coalesce($6::timestamptz, now()))
ON CONFLICT (key) DO UPDATE SET
    payload = excluded.payload,
    run_after = greatest(jobs.run_after, excluded.run_after),
    updated_at = now()
WHERE jobs.state = 'queued'
RETURNING id
"""

_KILL_EXPIRED_JOBS = """
WITH expired AS (
    SELECT id FROM jobs
    WHERE state = 'running' AND lease_expires < now() AND attempts >= max_attempts
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j SET state = 'dead', lease_expires = NULL, updated_at = now(),
    error = 'lease expired on attempt ' || j.attempts || ' of ' || j.max_attempts
        || ' (the worker died or hung)'
FROM expired WHERE j.id = expired.id
"""

_LEASE_CANDIDATES_SQL = f"""
SELECT id, concurrency_key FROM jobs AS j
WHERE ((state = 'queued' AND run_after <= now())
       OR (state = 'running' AND lease_expires < now() AND attempts < max_attempts))
  AND ($1::text[] IS NULL OR kind = ANY($1::text[]))
  AND (concurrency_key IS NULL OR NOT EXISTS (
      SELECT 1 FROM jobs AS r
      WHERE r.concurrency_key = j.concurrency_key AND r.state = 'running'
        AND r.lease_expires >= now() AND r.id <> j.id))
ORDER BY run_after, id
LIMIT {_LEASE_CANDIDATES}
FOR UPDATE SKIP LOCKED
"""  # noqa: S608 -- a constant, not input

_KEY_HELD = """
SELECT EXISTS (
    SELECT 1 FROM jobs
    WHERE concurrency_key = $1 AND state = 'running' AND lease_expires >= now() AND id <> $2)
"""

_START_JOB = """
UPDATE jobs SET state = 'running', lease_owner = $2,
    lease_expires = now() + make_interval(secs => $3::float8),
    attempts = attempts + 1, updated_at = now()
WHERE id = $1
RETURNING *
"""


def _delivery(row: Any) -> StoredDelivery:
    return StoredDelivery(
        id=row["id"],
        event=row["event"],
        action=row["action"],
        installation_id=row["installation_id"],
        repo=row["repo"],
        payload=bytes(row["payload"]),
        received_at=row["received_at"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        error=row["error"],
    )


def _job(row: Any) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        key=row["key"],
        payload=json.loads(row["payload"]),
        concurrency_key=row["concurrency_key"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        run_after=row["run_after"],
        lease_owner=row["lease_owner"],
        lease_expires=row["lease_expires"],
        outcome=row["outcome"],
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        max_attempts=row["max_attempts"],
    )


def _event(row: Any) -> PrEvent:
    return PrEvent(
        id=row["id"],
        repo=row["repo"],
        pr=row["pr"],
        kind=row["kind"],
        data=json.loads(row["data"]),
        delivery_id=row["delivery_id"],
        job_id=row["job_id"],
        created_at=row["created_at"],
    )


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except _PG_ERRORS as exc:
        raise StoreError(f"PostgreSQL {what} failed: {exc}") from exc


class PostgresStore:
    """PostgreSQL implementation of ``bot.store.base.Store``.

    ``dsn`` is what asyncpg accepts (without the ``schema`` parameter, which is passed apart).
    """

    def __init__(
        self, dsn: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10
    ) -> None:
        self._dsn = dsn
        self.schema = None if schema is None else check_identifier(schema, "schema")
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None
        self._listener: Any = None
        self._committer: GroupCommitter[NewDelivery, bool] | None = None
        self._signal = WorkSignal()

    # -- lifecycle -------------------------------------------------------------------------

    def _server_settings(self) -> dict[str, str]:
        settings = {"synchronous_commit": "on", "application_name": "shepherd"}
        if self.schema is not None:
            settings["search_path"] = self.schema
        return settings

    async def _connect(self) -> Any:
        return await asyncpg.connect(
            self._dsn, timeout=_CONNECT_TIMEOUT, server_settings=self._server_settings()
        )

    async def open(self) -> None:
        with _mapped("open"):
            conn = await self._connect()
            try:
                await self._migrate(conn)
                # The migration connection stays open as the LISTEN connection: one connect less.
                await conn.add_listener(WORK_CHANNEL, self._on_notify)
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=_CONNECT_TIMEOUT,
                    server_settings=self._server_settings(),
                )
            except BaseException:
                await conn.close()
                raise
            self._listener = conn
        self._committer = GroupCommitter(self._flush_deliveries, concurrency=4)

    async def _migrate(self, conn: Any) -> None:
        scope = self.schema or "public"
        # A session lock, not a transaction lock: CREATE SCHEMA must be serialized too, or two
        # processes starting at once race on it.
        await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", _MIGRATION_LOCK, scope)
        try:
            if self.schema is not None:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                await conn.execute(f'SET search_path TO "{self.schema}"')
            async with conn.transaction():
                await conn.execute(
                    """CREATE TABLE IF NOT EXISTS schema_version (
                           version integer PRIMARY KEY,
                           applied_at timestamptz NOT NULL DEFAULT now())"""
                )
                current = await conn.fetchval(
                    "SELECT coalesce(max(version), 0) FROM schema_version"
                )
                for version, statements in enumerate(MIGRATIONS, start=1):
                    if version <= current:
                        continue
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock($1, hashtext($2))", _MIGRATION_LOCK, scope
            )

    async def _listen(self) -> None:
        self._listener = await self._connect()
        await self._listener.add_listener(WORK_CHANNEL, self._on_notify)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._signal.notify()

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer.close()
            self._committer = None
        with _mapped("close"):
            if self._listener is not None:
                listener, self._listener = self._listener, None
                await listener.close()
            if self._pool is not None:
                pool, self._pool = self._pool, None
                await pool.close()

    async def ping(self) -> None:
        with _mapped("ping"):
            async with self._acquire() as conn:
                await conn.fetchval("SELECT 1")

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109
        if self._listener is not None and self._listener.is_closed():
            # The listening connection died (server restart): reconnect, or fall back to polling.
            try:
                await self._listen()
            except _PG_ERRORS as exc:
                log.warning(
                    "store: cannot re-listen on %s (%s); polling instead", WORK_CHANNEL, exc
                )
        await self._signal.wait(timeout)

    @contextlib.asynccontextmanager
    async def _acquire(self) -> Any:
        if self._pool is None:
            raise StoreError("the store is not open")
        async with self._pool.acquire(timeout=_CONNECT_TIMEOUT) as conn:
            yield conn

    async def _notify(self, conn: Any) -> None:
        await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)

    # -- deliveries ------------------------------------------------------------------------

    async def record_delivery(self, d: NewDelivery) -> bool:
        if self._committer is None:
            raise StoreError("the store is not open")
        return await self._committer.submit(d)

    async def _flush_deliveries(self, batch: Sequence[NewDelivery]) -> list[bool]:
        with _mapped("record_delivery"):
            async with self._acquire() as conn:
                # One statement is one implicit transaction: a single round trip and a single
                # durable commit for the whole batch, NOTIFY included.
                rows = await conn.fetch(
                    _INSERT_DELIVERIES,
                    [d.id for d in batch],
                    [d.event for d in batch],
                    [d.action for d in batch],
                    [d.installation_id for d in batch],
                    [d.repo for d in batch],
                    [d.payload for d in batch],
                    [as_utc(d.received_at) for d in batch],
                    WORK_CHANNEL,
                )
        inserted = {row["id"] for row in rows if row["id"] is not None}
        if inserted:
            self._signal.notify()
        return first_wins((d.id for d in batch), inserted)

    async def get_delivery(self, delivery_id: str) -> StoredDelivery | None:
        with _mapped("get_delivery"):
            async with self._acquire() as conn:
                row = await conn.fetchrow("SELECT * FROM deliveries WHERE id = $1", delivery_id)
        return None if row is None else _delivery(row)

    async def claim_deliveries(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[StoredDelivery]:
        with _mapped("claim_deliveries"):
            async with self._acquire() as conn:
                await conn.execute(_FAIL_POISONED_DELIVERIES, MAX_DELIVERY_ATTEMPTS)
                rows = await conn.fetch(_CLAIM_DELIVERIES, owner, lease_seconds, limit)
        rows.sort(key=lambda r: (r["received_at"], r["seq"]))
        return [_delivery(r) for r in rows]

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
        with _mapped("complete_delivery"):
            async with self._acquire() as conn, conn.transaction():
                held = await conn.fetchval(
                    """UPDATE deliveries SET state = $3, error = $4, lease_expires = NULL,
                           updated_at = now()
                       WHERE id = $1 AND lease_owner = $2 AND state = 'processing'
                       RETURNING true""",
                    delivery_id,
                    owner,
                    state.value,
                    error,
                )
                if not held:
                    return False
                changed = False
                # Sorted, so two transactions upserting overlapping keys cannot deadlock.
                for spec in sorted(jobs, key=lambda s: s.key):
                    changed |= (await self._upsert_job(conn, spec))[1]
                for event in events:
                    await self._append_event(conn, event)
                if changed:
                    await self._notify(conn)
        if changed:
            self._signal.notify()
        return True

    # -- jobs ------------------------------------------------------------------------------

    @staticmethod
    async def _upsert_job(conn: Any, spec: JobSpec) -> tuple[int, bool]:
        run_after = None if spec.run_after is None else as_utc(spec.run_after)
        job_id = await conn.fetchval(
            _UPSERT_JOB,
            spec.kind,
            spec.key,
            json.dumps(spec.payload),
            spec.concurrency_key,
            spec.max_attempts,
            run_after,
        )
        if job_id is not None:
            return int(job_id), True
        # The key exists and is no longer queued: the work it names is already under way or over.
        existing = await conn.fetchval("SELECT id FROM jobs WHERE key = $1", spec.key)
        return int(existing), False

    async def upsert_job(self, spec: JobSpec) -> int:
        with _mapped("upsert_job"):
            async with self._acquire() as conn, conn.transaction():
                job_id, changed = await self._upsert_job(conn, spec)
                if changed:
                    await self._notify(conn)
        if changed:
            self._signal.notify()
        return job_id

    async def lease_job(
        self, owner: str, lease_seconds: float, kinds: Sequence[str] | None = None
    ) -> Job | None:
        if kinds is not None and not kinds:
            return None
        scope = self.schema or "public"
        with _mapped("lease_job"):
            async with self._acquire() as conn:
                await conn.execute(_KILL_EXPIRED_JOBS)
                async with conn.transaction():
                    candidates = await conn.fetch(
                        _LEASE_CANDIDATES_SQL, None if kinds is None else list(kinds)
                    )
                    for candidate in candidates:
                        key = candidate["concurrency_key"]
                        if key is not None:
                            # The candidate query's NOT EXISTS used a snapshot taken before we
                            # held anything, so two workers could both pass it for two jobs of
                            # one key. The advisory lock serializes them until commit, and the
                            # re-check is a NEW statement, so its snapshot includes every lease
                            # committed before we got the lock. Race-free under READ COMMITTED.
                            got = await conn.fetchval(
                                "SELECT pg_try_advisory_xact_lock($1, hashtext($2))",
                                _CONCURRENCY_LOCK,
                                f"{scope}:{key}",
                            )
                            if not got or await conn.fetchval(_KEY_HELD, key, candidate["id"]):
                                continue
                        row = await conn.fetchrow(_START_JOB, candidate["id"], owner, lease_seconds)
                        return _job(row)
        return None

    async def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> bool:
        with _mapped("heartbeat"):
            async with self._acquire() as conn:
                # An expired lease is lost even if nobody took the job yet: another job with the
                # same concurrency key may already be running, so this worker must stop.
                held = await conn.fetchval(
                    """UPDATE jobs SET lease_expires = now() + make_interval(secs => $3::float8),
                           updated_at = now()
                       WHERE id = $1 AND lease_owner = $2 AND state = 'running'
                         AND lease_expires >= now()
                       RETURNING true""",
                    job_id,
                    owner,
                    lease_seconds,
                )
        return bool(held)

    async def complete_job(
        self,
        job_id: int,
        owner: str,
        *,
        outcome: str,
        result: JSONObject | None = None,
        events: Sequence[EventSpec] = (),
    ) -> bool:
        with _mapped("complete_job"):
            async with self._acquire() as conn, conn.transaction():
                held = await conn.fetchval(
                    """UPDATE jobs SET state = 'done', outcome = $3, result = $4,
                           lease_expires = NULL, updated_at = now()
                       WHERE id = $1 AND lease_owner = $2 AND state = 'running'
                       RETURNING true""",
                    job_id,
                    owner,
                    outcome,
                    None if result is None else json.dumps(result),
                )
                if not held:
                    return False
                for event in events:
                    await self._append_event(conn, event)
                await self._notify(conn)  # the concurrency key is free again
        self._signal.notify()
        return True

    async def fail_job(
        self, job_id: int, owner: str, *, error: str, retry_at: datetime | None
    ) -> bool:
        retry = None if retry_at is None else as_utc(retry_at)
        with _mapped("fail_job"):
            async with self._acquire() as conn, conn.transaction():
                held = await conn.fetchval(
                    """UPDATE jobs SET
                           state = CASE WHEN $3::timestamptz IS NULL OR attempts >= max_attempts
                                        THEN 'dead' ELSE 'queued' END,
                           run_after = CASE WHEN $3::timestamptz IS NULL
                                                 OR attempts >= max_attempts
                                            THEN run_after ELSE $3::timestamptz END,
                           error = $4, lease_expires = NULL, updated_at = now()
                       WHERE id = $1 AND lease_owner = $2 AND state = 'running'
                       RETURNING true""",
                    job_id,
                    owner,
                    retry,
                    error,
                )
                if not held:
                    return False
                await self._notify(conn)
        self._signal.notify()
        return True

    async def get_job(self, job_id: int) -> Job | None:
        with _mapped("get_job"):
            async with self._acquire() as conn:
                row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        return None if row is None else _job(row)

    async def find_job(self, key: str) -> Job | None:
        with _mapped("find_job"):
            async with self._acquire() as conn:
                row = await conn.fetchrow("SELECT * FROM jobs WHERE key = $1", key)
        return None if row is None else _job(row)

    # -- events ----------------------------------------------------------------------------

    @staticmethod
    async def _append_event(conn: Any, e: EventSpec) -> int:
        event_id = await conn.fetchval(
            """INSERT INTO pr_events (repo, pr, kind, data, delivery_id, job_id)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
            e.repo,
            e.pr,
            e.kind,
            json.dumps(e.data),
            e.delivery_id,
            e.job_id,
        )
        return int(event_id)

    async def append_event(self, e: EventSpec) -> int:
        with _mapped("append_event"):
            async with self._acquire() as conn:
                return await self._append_event(conn, e)

    async def list_events(self, repo: str, pr: int) -> list[PrEvent]:
        with _mapped("list_events"):
            async with self._acquire() as conn:
                rows = await conn.fetch(
                    "SELECT * FROM pr_events WHERE repo = $1 AND pr = $2 ORDER BY id", repo, pr
                )
        return [_event(r) for r in rows]

    async def prune_deliveries(self, before: datetime) -> Pruned:
        with _mapped("prune_deliveries"):
            async with self._acquire() as conn:
                status = await conn.execute(
                    """DELETE FROM deliveries
                       WHERE state IN ('done', 'failed') AND received_at < $1""",
                    as_utc(before),
                )
        return Pruned(deliveries=int(status.split()[-1]))

    async def recent_deliveries(
        self, scope: Scope, *, since: datetime, limit: int
    ) -> list[DeliverySummary]:
        with _mapped("recent_deliveries"):
            async with self._acquire() as conn:
                rows = await conn.fetch(
                    """SELECT id, event, action, installation_id, repo, state, attempts, error,
                              received_at, updated_at
                       FROM deliveries
                       WHERE received_at >= $1
                         AND (repo = ANY($2::text[])
                              OR (repo IS NULL AND installation_id = ANY($3::bigint[])))
                       ORDER BY received_at DESC, seq DESC LIMIT $4""",
                    as_utc(since),
                    sorted(scope.repos),
                    sorted(scope.installations),
                    limit,
                )
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
                received_at=r["received_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]

    async def pr_activity(
        self, repos: frozenset[str], *, since: datetime, limit: int
    ) -> list[PrActivity]:
        with _mapped("pr_activity"):
            async with self._acquire() as conn:
                rows = await conn.fetch(
                    """SELECT repo, pr, count(*) AS events, max(created_at) AS last_at
                       FROM pr_events
                       WHERE repo = ANY($1::text[]) AND created_at >= $2
                       GROUP BY repo, pr ORDER BY last_at DESC, repo, pr LIMIT $3""",
                    sorted(repos),
                    as_utc(since),
                    limit,
                )
        return [
            PrActivity(
                repo=r["repo"],
                pr=r["pr"],
                events=r["events"],
                last_at=r["last_at"],
            )
            for r in rows
        ]

    async def outcome_counts(self, repos: frozenset[str], *, since: datetime) -> list[OutcomeCount]:
        with _mapped("outcome_counts"):
            async with self._acquire() as conn:
                rows = await conn.fetch(
                    """SELECT repo, (created_at AT TIME ZONE 'UTC')::date AS day,
                              data->>'outcome' AS outcome, data->>'llm_model' AS model,
                              count(*) AS n,
                              sum(coalesce((data->'llm_usage'->>'input')::bigint, 0)) AS input,
                              sum(coalesce((data->'llm_usage'->>'output')::bigint, 0)) AS output,
                              sum(coalesce((data->'llm_usage'->>'cache_read')::bigint, 0))
                                  AS cread,
                              sum(coalesce((data->'llm_usage'->>'cache_write')::bigint, 0))
                                  AS cwrite
                       FROM pr_events
                       WHERE repo = ANY($1::text[]) AND kind = 'repair.outcome'
                         AND created_at >= $2
                       GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""",
                    sorted(repos),
                    as_utc(since),
                )
        return [
            OutcomeCount(
                repo=r["repo"],
                day=r["day"],
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

    async def stats(self) -> StoreStats:
        with _mapped("stats"):
            async with (
                self._acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                deliveries = dict(
                    await conn.fetch("SELECT state, count(*) FROM deliveries GROUP BY state")
                )
                jobs = dict(await conn.fetch("SELECT state, count(*) FROM jobs GROUP BY state"))
                ages = await conn.fetchrow(
                    """SELECT
                         (SELECT extract(epoch FROM now() - min(run_after))::float8 FROM jobs
                          WHERE state = 'queued' AND run_after <= now()) AS job_age,
                         (SELECT extract(epoch FROM now() - min(received_at))::float8
                          FROM deliveries WHERE state = 'pending') AS delivery_age"""
                )
        return StoreStats(
            deliveries={s: int(deliveries.get(s.value, 0)) for s in DeliveryState},
            jobs={s: int(jobs.get(s.value, 0)) for s in JobState},
            oldest_queued_job_age=max(0.0, ages["job_age"] or 0.0),
            oldest_pending_delivery_age=max(0.0, ages["delivery_age"] or 0.0),
        )
