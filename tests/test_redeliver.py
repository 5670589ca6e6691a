"""``shepherd redeliver``: ask GitHub again for exactly the failed deliveries the store lacks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from bot.github.client import GitHubApp
from bot.kernel.errors import ConfigError
from bot.kernel.settings import Settings
from bot.ops.redeliver import LoggedDelivery, parse_duration, redeliver, select_for_redelivery
from bot.store import NewDelivery
from bot.store.connect import open_store
from tests.ghsim import GitHubSim

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def logged(id: int, guid: str, minutes_ago: int, status: int) -> LoggedDelivery:
    return LoggedDelivery(id, guid, NOW - timedelta(minutes=minutes_ago), status, "check_run")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("6h", timedelta(hours=6)),
        ("3d", timedelta(days=3)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "6", "h", "-1h", "4d", "1w", "1.5h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_selection_table() -> None:
    deliveries = [
        logged(1, "failed-once", 10, 502),
        logged(2, "failed-then-ok", 20, 500),
        logged(3, "failed-then-ok", 15, 202),
        logged(4, "seen-by-store", 5, 0),  # timed out on GitHub's side, but we stored it
        logged(5, "too-old", 90, 503),
        logged(6, "failed-twice", 40, 503),
        logged(7, "failed-twice", 30, 504),
        logged(8, "fine", 1, 202),
    ]
    chosen = select_for_redelivery(
        deliveries, seen={"seen-by-store"}, since=NOW - timedelta(hours=1)
    )
    assert [(d.guid, d.id) for d in chosen] == [("failed-twice", 7), ("failed-once", 1)]


def _log_entry(id: int, guid: str, minutes_ago: int, status: int) -> dict[str, object]:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {
        "id": id,
        "guid": guid,
        "delivered_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "redelivery": False,
        "duration": 0.1,
        "status": "OK" if status < 300 else "failed",
        "status_code": status,
        "event": "check_run",
        "action": "completed",
        "installation_id": 1,
        "repository_id": 1,
    }


async def test_redeliver_against_the_simulator(
    github_sim: GitHubSim, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    github_sim.hook_deliveries = [
        _log_entry(11, "lost-while-down", 30, 502),
        _log_entry(12, "stored-anyway", 25, 0),
        _log_entry(13, "ok", 20, 202),
        _log_entry(14, "ancient", 60 * 10, 502),
    ]
    store = open_store(f"sqlite:///{tmp_path / 'shepherd.db'}")
    await store.open()
    await store.record_delivery(
        NewDelivery("stored-anyway", "check_run", "completed", 1, None, b"{}", datetime.now(UTC))
    )
    async with aiohttp.ClientSession() as session:
        app = GitHubApp(
            app_id=github_sim.app_id,
            private_key=str(github_sim.private_key_pem),
            session=session,
            api_url=github_sim.base_url,
        )
        client = await app.app_client()
        dry = await redeliver(client, store, window=timedelta(hours=2), dry_run=True)
        assert [d.guid for d in dry.requested] == ["lost-while-down"]
        assert github_sim.redelivered == []
        report = await redeliver(client, store, window=timedelta(hours=2), dry_run=False)
    await store.close()
    assert github_sim.redelivered == [11]
    assert "lost-while-down" in report.render()
    assert report.examined == 3  # the log is read back only as far as the window
    github_sim.assert_no_violations()
