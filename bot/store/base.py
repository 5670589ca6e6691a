"""The durable store's contract: models, the ``Store`` protocol, and helpers both backends share.

Nothing here does I/O. ``GroupCommitter`` is the batching mechanism behind ``record_delivery``:
the webhook endpoint must not answer before a delivery is durable, and one fsync per request
cannot keep up with GitHub's bursts, so concurrent callers share one transaction and one fsync.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from bot.kernel import JSONObject
from bot.kernel.errors import ConfigError, StoreError

#: Processing leases that expire this many times mark a delivery failed instead of reclaiming it
#: again: a payload that kills its worker every time must not loop forever.
MAX_DELIVERY_ATTEMPTS = 5

#: PostgreSQL channel on which writers announce new work to workers in other processes.
WORK_CHANNEL = "shepherd_work"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class DeliveryState(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"


@dataclass(frozen=True)
class NewDelivery:
    """A webhook delivery as received, before any processing."""

    id: str  # the X-GitHub-Delivery GUID; a redelivery carries the same one
    event: str
    action: str | None
    installation_id: int | None
    repo: str | None  # "owner/name"
    payload: bytes  # the raw body, exactly as received
    received_at: datetime  # UTC


@dataclass(frozen=True)
class StoredDelivery:
    id: str
    event: str
    action: str | None
    installation_id: int | None
    repo: str | None
    payload: bytes
    received_at: datetime
    state: DeliveryState
    attempts: int
    error: str | None


@dataclass(frozen=True)
class JobSpec:
    """What to enqueue. ``key`` is the idempotency key, e.g. ``repair:owner/repo#12@<sha>``."""

    kind: str
    key: str
    payload: JSONObject
    concurrency_key: str | None = None  # jobs sharing one never run at the same time
    run_after: datetime | None = None  # debounce; None means now
    max_attempts: int = 5


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    key: str
    payload: JSONObject
    concurrency_key: str | None
    state: JobState
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_expires: datetime | None
    outcome: str | None
    result: JSONObject | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    max_attempts: int = 5


@dataclass(frozen=True)
class EventSpec:
    """One entry of a PR's decision log."""

    repo: str
    pr: int
    kind: str
    data: JSONObject
    delivery_id: str | None = None
    job_id: int | None = None


@dataclass(frozen=True)
class PrEvent:
    id: int
    repo: str
    pr: int
    kind: str
    data: JSONObject
    delivery_id: str | None
    job_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class Pruned:
    """What ``prune_deliveries`` removed."""

    deliveries: int
    segments: int = 0  # SQLite: delivery-log files no row points into any more


@dataclass(frozen=True)
class StoreStats:
    """Queue health for /metrics and /readyz."""

    deliveries: Mapping[DeliveryState, int] = field(default_factory=dict)
    jobs: Mapping[JobState, int] = field(default_factory=dict)
    #: Seconds the longest-waiting runnable job (queued, run_after in the past) has waited; 0 if
    #: none. A debounced job whose run_after is still ahead is not late, so it does not count.
    oldest_queued_job_age: float = 0.0
    #: Seconds since the oldest delivery still pending was received; 0 if none.
    oldest_pending_delivery_age: float = 0.0

    @property
    def deliveries_pending(self) -> int:
        return self.deliveries.get(DeliveryState.PENDING, 0)

    @property
    def jobs_queued(self) -> int:
        return self.jobs.get(JobState.QUEUED, 0)


@dataclass(frozen=True)
class Scope:
    """What one reader may see: repositories (``owner/name``) and installations.

    A delivery is in scope when its repository is, or, for deliveries that name no repository
    (``installation`` events), when its installation is.
    """

    repos: frozenset[str] = frozenset()
    installations: frozenset[int] = frozenset()


@dataclass(frozen=True)
class DeliverySummary:
    """A stored delivery without its body, for the status page."""

    id: str
    event: str
    action: str | None
    installation_id: int | None
    repo: str | None
    state: DeliveryState
    attempts: int
    error: str | None
    received_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class PrActivity:
    """One pull request's entries in the event log, summarised."""

    repo: str
    pr: int
    events: int
    last_at: datetime


@dataclass(frozen=True)
class OutcomeCount:
    """Repair outcomes (``repair.outcome`` events) of one repository, day and LLM model."""

    repo: str
    day: date  # UTC
    outcome: str
    count: int
    llm_model: str | None = None
    llm_input: int = 0
    llm_output: int = 0
    llm_cache_read: int = 0
    llm_cache_write: int = 0


class Store(Protocol):
    """The durable store of deliveries, jobs and per-PR events; see each backend's module docs.

    Every method raises ``StoreError`` (retryable) when the database fails or is unreachable.
    """

    async def open(self) -> None:
        """Connect and apply pending migrations (idempotent; safe when processes start at once)."""

    async def close(self) -> None:
        """Flush queued deliveries, then disconnect."""

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers."""

    async def record_delivery(self, d: NewDelivery) -> bool:
        """Store a delivery; True if new, False for a duplicate id. Durable when it returns."""

    async def get_delivery(self, delivery_id: str) -> StoredDelivery | None: ...

    async def claim_deliveries(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[StoredDelivery]:
        """Lease up to ``limit`` pending deliveries (or ones whose lease expired), oldest first.

        A delivery whose lease has already expired ``MAX_DELIVERY_ATTEMPTS`` times is marked
        failed instead of being handed out again.
        """

    async def complete_delivery(
        self,
        delivery_id: str,
        owner: str,
        *,
        jobs: Sequence[JobSpec],
        events: Sequence[EventSpec],
        error: str | None = None,
    ) -> bool:
        """In one transaction: mark done (failed if ``error``), upsert ``jobs``, append ``events``.

        False, changing nothing, unless ``owner`` still holds the delivery (another worker took
        it over after the lease expired, or it is already finished).
        """

    async def upsert_job(self, spec: JobSpec) -> int:
        """Enqueue by idempotency key and return the job id.

        Existing and queued: take the new payload, run_after = the later of the two (debounce).
        Existing in any other state: leave it alone. Otherwise insert.
        """

    async def lease_job(
        self, owner: str, lease_seconds: float, kinds: Sequence[str] | None = None
    ) -> Job | None:
        """Lease the due job with the oldest run_after whose concurrency key is free, if any.

        A running job whose lease expired is due again (its worker died); one that expired on
        its last allowed attempt is marked dead instead.
        """

    async def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> bool:
        """Extend the lease; False if it was lost (expired, taken over or finished): stop work."""

    async def complete_job(
        self,
        job_id: int,
        owner: str,
        *,
        outcome: str,
        result: JSONObject | None = None,
        events: Sequence[EventSpec] = (),
    ) -> bool:
        """Mark done and append ``events`` in one transaction; False if ``owner`` lost the job."""

    async def fail_job(
        self, job_id: int, owner: str, *, error: str, retry_at: datetime | None
    ) -> bool:
        """Queue again at ``retry_at``, or dead if None or attempts are used up; False if lost."""

    async def get_job(self, job_id: int) -> Job | None: ...

    async def find_job(self, key: str) -> Job | None: ...

    async def append_event(self, e: EventSpec) -> int: ...

    async def list_events(self, repo: str, pr: int) -> list[PrEvent]:
        """A PR's events in append order."""

    async def stats(self) -> StoreStats: ...

    async def recent_deliveries(
        self, scope: Scope, *, since: datetime, limit: int
    ) -> list[DeliverySummary]:
        """The newest deliveries in ``scope`` received since ``since``, newest first."""

    async def pr_activity(
        self, repos: frozenset[str], *, since: datetime, limit: int
    ) -> list[PrActivity]:
        """Pull requests of ``repos`` with events since ``since``, most recently active first."""

    async def outcome_counts(self, repos: frozenset[str], *, since: datetime) -> list[OutcomeCount]:
        """Repair outcomes of ``repos`` since ``since``, per repository, UTC day, outcome and
        LLM model, with the LLM tokens the outcome events recorded."""

    async def prune_deliveries(self, before: datetime) -> Pruned:
        """Delete deliveries finished (done or failed) and received before ``before``.

        Jobs and the per-PR event log are kept: they are small and they are the history that
        ``explain`` and the loop guards read. Pending and processing deliveries are never pruned.
        """

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 -- the contract
        """Return when new work may be runnable (also from another process), or after timeout."""


ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class GroupCommitter(Generic[ItemT, ResultT]):
    """Turns many concurrent ``submit`` calls into few ``flush`` calls (one transaction each).

    A single drain task takes everything queued, flushes it, resolves every waiter, and repeats
    while more arrived during the flush. There is no artificial delay: a lone request is flushed
    at once, and under load the batch grows by itself to whatever queued during the last commit.
    ``flush`` must return one result per item, in order.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT]]],
        *,
        max_batch: int = 1000,
        concurrency: int = 1,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        #: Flushes that may be in flight at once: 1 for a single-writer database (SQLite); more
        #: where the server overlaps commits itself (PostgreSQL's own group commit), so a batch
        #: need not wait for the previous one's round trip.
        self._concurrency = concurrency
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, item: ItemT) -> ResultT:
        if self._closed:
            raise StoreError("the store is closed")
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        # A drain task that saw an empty queue has already finished (in the same step), so a
        # task not yet done will still see this item.
        if sum(not t.done() for t in self._tasks) < self._concurrency:
            task = asyncio.create_task(self._drain(), name="store-group-commit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def close(self) -> None:
        """Refuse new items and wait until everything already submitted is flushed."""
        self._closed = True
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._flush([item for item, _ in batch])
                if len(results) != len(batch):
                    raise StoreError(
                        f"group commit returned {len(results)} results for {len(batch)} items"
                    )
            except Exception as exc:  # handed to every waiter, who re-raises it: nothing is lost
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:
                # Cancelled mid-flush (loop shutdown): the waiters must not hang forever.
                for _, future in batch + self._pending:
                    if not future.done():
                        future.set_exception(StoreError("the store was closed mid-commit"))
                self._pending.clear()
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


class WorkSignal:
    """In-process wake-up for idle workers: set when new work may be runnable."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True if woken by ``notify``."""
        if not self._event.is_set():
            try:
                await asyncio.wait_for(self._event.wait(), seconds)
            except TimeoutError:
                return False
        self._event.clear()
        return True


def first_wins(ids: Iterable[str], inserted: set[str]) -> list[bool]:
    """Per submitted id, whether it was newly stored: only the first of in-batch duplicates is."""
    seen: set[str] = set()
    results = []
    for delivery_id in ids:
        results.append(delivery_id in inserted and delivery_id not in seen)
        seen.add(delivery_id)
    return results


def as_utc(moment: datetime) -> datetime:
    """Aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def check_identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ConfigError(
            f"{what} {name!r} must be lower-case letters, digits and underscores, "
            "starting with a letter or underscore."
        )
    return name
