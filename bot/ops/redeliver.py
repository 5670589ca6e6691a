"""``shepherd redeliver --since DURATION``: recover the deliveries GitHub failed to make.

GitHub never retries a failed webhook delivery by itself; after downtime the documented recovery
is to list the App's recent deliveries and ask for the failed ones again
(https://docs.github.com/en/webhooks/using-webhooks/automatically-redelivering-failed-deliveries-for-a-github-app-webhook).
Shepherd asks only for deliveries that failed and that its store has not seen; a GUID GitHub
delivered successfully on any attempt is never asked for again.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bot.kernel import JSONObject
from bot.kernel.errors import ConfigError
from bot.store import Store

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``6h``, ``3d`` (GitHub keeps the delivery log for 3 days)."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ConfigError(f"invalid duration {text!r}: use e.g. 30m, 6h or 2d")
    delta = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if delta > timedelta(days=3):
        raise ConfigError("GitHub keeps webhook deliveries for 3 days: use at most 3d")
    return delta


@dataclass(frozen=True)
class LoggedDelivery:
    id: int
    guid: str
    delivered_at: datetime
    status_code: int
    event: str

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> LoggedDelivery:
        return cls(
            id=int(item["id"]),
            guid=str(item["guid"]),
            delivered_at=datetime.fromisoformat(str(item["delivered_at"]).replace("Z", "+00:00")),
            status_code=int(item.get("status_code") or 0),
            event=str(item.get("event", "")),
        )


def select_for_redelivery(
    logged: Iterable[LoggedDelivery], *, seen: set[str], since: datetime
) -> list[LoggedDelivery]:
    """Pure: the latest failed attempt of every GUID that never succeeded and that the store has
    not seen, delivered since ``since``; oldest first, so they replay in order."""
    attempts: dict[str, list[LoggedDelivery]] = {}
    for d in logged:
        if d.delivered_at >= since:
            attempts.setdefault(d.guid, []).append(d)
    chosen = []
    for guid, tries in attempts.items():
        if guid in seen or any(t.succeeded for t in tries):
            continue
        chosen.append(max(tries, key=lambda t: t.delivered_at))
    return sorted(chosen, key=lambda t: t.delivered_at)


@dataclass(frozen=True)
class RedeliveryReport:
    examined: int
    requested: list[LoggedDelivery]
    dry_run: bool

    def render(self) -> str:
        verb = "would redeliver" if self.dry_run else "redelivery requested for"
        lines = [f"examined {self.examined} logged deliveries; {verb} {len(self.requested)}"]
        lines += [
            f"  {d.guid} {d.event} (failed with {d.status_code or 'no answer'} at "
            f"{d.delivered_at:%Y-%m-%d %H:%M:%S}Z)"
            for d in self.requested
        ]
        return "\n".join(lines)


class DeliveryLog(Protocol):
    """The App's webhook delivery log on GitHub (``bot.github.client.GitHubApp``)."""

    def iter_hook_deliveries(self) -> AsyncIterator[JSONObject]: ...

    async def redeliver_hook_delivery(self, delivery_id: int) -> None: ...


async def redeliver(
    client: DeliveryLog,
    store: Store,
    *,
    window: timedelta,
    dry_run: bool,
    now: datetime | None = None,
) -> RedeliveryReport:
    """List the log back to ``now - window``, pick, and ask GitHub to redeliver."""
    since = (now or datetime.now(UTC)) - window
    logged: list[LoggedDelivery] = []
    async for item in client.iter_hook_deliveries():
        delivery = LoggedDelivery.from_api(item)
        if delivery.delivered_at < since:
            break  # the log is newest first
        logged.append(delivery)
    seen = {d.guid for d in logged if await store.get_delivery(d.guid) is not None}
    chosen = select_for_redelivery(logged, seen=seen, since=since)
    if not dry_run:
        for delivery in chosen:
            await client.redeliver_hook_delivery(delivery.id)
    return RedeliveryReport(examined=len(logged), requested=chosen, dry_run=dry_run)
