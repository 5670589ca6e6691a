"""The status page's store queries, run unchanged against SQLite and PostgreSQL: what a reader
sees is limited to their repositories (and installations), newest first, bounded, and the
outcome counts carry the LLM tokens their events recorded."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from bot.store import DeliveryState, EventSpec, NewDelivery, Scope, Store
from tests.store_support import BACKENDS, opened, postgres_url, store_url

DAY = timedelta(days=1)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with store_url(request.param, tmp_path) as location:
        yield location


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    async with opened(url) as opened_store:
        yield opened_store


async def backdate(url: str, event_ids: Sequence[int], moment: datetime) -> None:
    """Move events back in time (the store stamps them with the time of writing)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(urlsplit(url).path)
        with conn:
            conn.executemany(
                "UPDATE pr_events SET created_at = ? WHERE id = ?",
                [(moment.timestamp(), i) for i in event_ids],
            )
        conn.close()
        return
    schema = parse_qs(urlsplit(url).query)["schema"][0]
    conn = await asyncpg.connect(postgres_url())
    try:
        await conn.executemany(
            f'UPDATE "{schema}".pr_events SET created_at = $1 WHERE id = $2',  # noqa: S608
            [(moment, i) for i in event_ids],
        )
    finally:
        await conn.close()


def delivery(
    n: int, repo: str | None, *, installation: int = 1, at: datetime | None = None
) -> NewDelivery:
    return NewDelivery(
        id=f"d-{n}",
        event="installation" if repo is None else "pull_request",
        action="created" if repo is None else "opened",
        installation_id=installation,
        repo=repo,
        payload=b"{}",
        received_at=at or now(),
    )


async def outcome(store: Store, repo: str, pr: int, result: str, **data: object) -> int:
    return await store.append_event(
        EventSpec(repo=repo, pr=pr, kind="repair.outcome", data={"outcome": result, **data})
    )


async def test_recent_deliveries_only_in_scope_newest_first_bounded(store: Store) -> None:
    base = now() - timedelta(hours=1)
    await store.record_delivery(delivery(12, "acme/api", at=now() - 10 * DAY))  # too old
    await store.record_delivery(delivery(10, None, installation=7, at=base))  # installation event
    await store.record_delivery(delivery(11, None, installation=8, at=base))
    for n, repo in enumerate(["acme/api", "acme/web", "acme/api", "bob/tools", "acme/api"]):
        await store.record_delivery(delivery(n, repo, at=base + timedelta(minutes=n + 1)))

    scope = Scope(repos=frozenset({"acme/api"}), installations=frozenset({7}))
    rows = await store.recent_deliveries(scope, since=now() - 7 * DAY, limit=10)
    assert [r.id for r in rows] == ["d-4", "d-2", "d-0", "d-10"]
    assert rows[0].repo == "acme/api"
    assert rows[0].state is DeliveryState.PENDING
    assert rows[0].received_at.tzinfo is not None
    assert rows[-1].repo is None
    assert rows[-1].installation_id == 7

    assert [r.id for r in await store.recent_deliveries(scope, since=now() - 7 * DAY, limit=2)] == [
        "d-4",
        "d-2",
    ]
    nothing = await store.recent_deliveries(Scope(), since=now() - 30 * DAY, limit=10)
    assert nothing == []


async def test_pr_activity_is_per_pull_request_most_recent_first(store: Store, url: str) -> None:
    old = await store.append_event(EventSpec("acme/api", 1, "pr.triaged", {"size": "S"}))
    await backdate(url, [old], now() - 3 * DAY)
    await store.append_event(EventSpec("acme/api", 2, "pr.triaged", {"size": "M"}))
    await outcome(store, "acme/api", 2, "fixed")
    await store.append_event(EventSpec("acme/web", 5, "pr.triaged", {}))  # not in scope
    ancient = await store.append_event(EventSpec("acme/api", 9, "pr.triaged", {}))
    await backdate(url, [ancient], now() - 40 * DAY)

    rows = await store.pr_activity(frozenset({"acme/api"}), since=now() - 30 * DAY, limit=10)
    assert [(r.repo, r.pr, r.events) for r in rows] == [("acme/api", 2, 2), ("acme/api", 1, 1)]
    assert rows[0].last_at > rows[1].last_at
    assert len(await store.pr_activity(frozenset({"acme/api"}), since=now() - DAY, limit=1)) == 1


async def test_outcome_counts_per_repo_day_outcome_and_model_with_tokens(
    store: Store, url: str
) -> None:
    usage = {"input": 1000, "output": 200, "cache_read": 50, "cache_write": 10}
    await outcome(store, "acme/api", 1, "fixed", llm_usage=usage, llm_model="claude-sonnet-4-6")
    await outcome(store, "acme/api", 2, "fixed", llm_usage=usage, llm_model="claude-sonnet-4-6")
    await outcome(store, "acme/api", 3, "handoff", llm_usage={}, llm_model=None)
    two_days = await outcome(store, "acme/api", 4, "rerun")  # written before llm_usage existed
    await backdate(url, [two_days], now() - 2 * DAY)
    await outcome(store, "acme/web", 5, "fixed")  # another repository
    await store.append_event(EventSpec("acme/api", 1, "repair.classified", {"outcome": "x"}))

    rows = await store.outcome_counts(frozenset({"acme/api"}), since=now() - 30 * DAY)
    today = now().date()
    by_key = {(r.day, r.outcome, r.llm_model): r for r in rows}
    assert set(by_key) == {
        (today, "fixed", "claude-sonnet-4-6"),
        (today, "handoff", None),
        (today - timedelta(days=2), "rerun", None),
    }
    fixed = by_key[(today, "fixed", "claude-sonnet-4-6")]
    assert (fixed.repo, fixed.count) == ("acme/api", 2)
    assert (fixed.llm_input, fixed.llm_output) == (2000, 400)
    assert (fixed.llm_cache_read, fixed.llm_cache_write) == (100, 20)
    assert isinstance(fixed.day, date)
    rerun = by_key[(today - timedelta(days=2), "rerun", None)]
    assert (rerun.count, rerun.llm_input) == (1, 0)

    assert await store.outcome_counts(frozenset({"acme/api"}), since=now() - DAY) != rows
    assert await store.outcome_counts(frozenset(), since=now() - 30 * DAY) == []


async def test_many_repositories_in_one_scope(store: Store) -> None:
    # A user of a large organisation sees thousands of repositories: no parameter limit applies.
    repos = frozenset(f"org/repo-{n}" for n in range(5000))
    await store.record_delivery(delivery(1, "org/repo-4999"))
    rows = await store.recent_deliveries(Scope(repos=repos), since=now() - DAY, limit=5)
    assert [r.id for r in rows] == ["d-1"]
    await outcome(store, "org/repo-17", 1, "fixed")
    assert len(await store.outcome_counts(repos, since=now() - DAY)) == 1
