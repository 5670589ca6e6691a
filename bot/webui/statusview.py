"""What /status shows, computed from store rows (pure: no I/O, ``now`` is passed in).

The fix rate of a repository is the share of its repair outcomes that were ``fixed`` among those
where Shepherd acted (``fixed``, ``rerun``, ``handoff``); ``noop`` (nothing to do) does not count.
LLM cost is estimated from the recorded tokens with the price table of ``bot/llm/pricing.py``; tokens
spent on a model the table does not know are counted but not priced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from bot.commands.explain import describe_plain, is_bookkeeping
from bot.llm.pricing import TokenUsage, estimate_cost
from bot.store import (
    DeliveryState,
    DeliverySummary,
    JobState,
    OutcomeCount,
    PrActivity,
    PrEvent,
    StoreStats,
)
from bot.webui.chart import OUTCOME_ORDER, Chart, outcomes_per_day

WINDOWS = (7, 30)
ACTED = ("fixed", "rerun", "handoff")


def age(seconds: float) -> str:
    """``42 s``, ``5 min``, ``3 h``, ``2 d``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


@dataclass(frozen=True)
class QueueView:
    deliveries_pending: int
    jobs_queued: int
    jobs_running: int
    oldest_job: str
    oldest_delivery: str


@dataclass(frozen=True)
class RepoOutcomes:
    repo: str
    #: window (days) -> outcome -> count
    counts: Mapping[int, Mapping[str, int]]

    def count(self, window: int, outcome: str) -> int:
        return self.counts.get(window, {}).get(outcome, 0)

    def total(self, window: int) -> int:
        return sum(self.counts.get(window, {}).values())

    def fix_rate(self, window: int) -> str:
        acted = sum(self.count(window, o) for o in ACTED)
        if acted == 0:
            return "–"
        return f"{100 * self.count(window, 'fixed') / acted:.0f}%"


@dataclass(frozen=True)
class LlmView:
    window: int
    usage: TokenUsage
    cost_usd: float
    unpriced_models: tuple[str, ...]


@dataclass(frozen=True)
class DeliveryRow:
    event: str
    action: str
    repo: str
    result: str
    css: str
    age: str
    received_at: str


@dataclass(frozen=True)
class TimelineEntry:
    at: str
    kind: str
    summary: str


@dataclass(frozen=True)
class PrView:
    repo: str
    pr: int
    url: str
    last_active: str
    events: int
    timeline: tuple[TimelineEntry, ...]


@dataclass(frozen=True)
class StatusView:
    login: str
    installations: tuple[str, ...]
    repo_count: int
    queue: QueueView
    outcomes: tuple[RepoOutcomes, ...]
    totals: RepoOutcomes
    llm: tuple[LlmView, ...]
    chart: Chart
    deliveries: tuple[DeliveryRow, ...]
    prs: tuple[PrView, ...]
    windows: tuple[int, ...] = WINDOWS
    outcome_names: tuple[str, ...] = OUTCOME_ORDER
    generated_at: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


def queue_view(stats: StoreStats) -> QueueView:
    return QueueView(
        deliveries_pending=stats.deliveries_pending,
        jobs_queued=stats.jobs_queued,
        jobs_running=stats.jobs.get(JobState.RUNNING, 0),
        oldest_job=age(stats.oldest_queued_job_age) if stats.jobs_queued else "–",
        oldest_delivery=(
            age(stats.oldest_pending_delivery_age) if stats.deliveries_pending else "–"
        ),
    )


def outcome_tables(
    rows: Iterable[OutcomeCount], today: date
) -> tuple[tuple[RepoOutcomes, ...], RepoOutcomes]:
    per_repo: dict[str, dict[int, dict[str, int]]] = defaultdict(
        lambda: {w: defaultdict(int) for w in WINDOWS}
    )
    totals: dict[int, dict[str, int]] = {w: defaultdict(int) for w in WINDOWS}
    for row in rows:
        for window in WINDOWS:
            if row.day > today - timedelta(days=window):
                per_repo[row.repo][window][row.outcome] += row.count
                totals[window][row.outcome] += row.count
    repos = tuple(
        RepoOutcomes(repo, {w: dict(c) for w, c in counts.items()})
        for repo, counts in sorted(per_repo.items())
    )
    return repos, RepoOutcomes("all repositories", {w: dict(c) for w, c in totals.items()})


def llm_views(rows: Sequence[OutcomeCount], today: date) -> tuple[LlmView, ...]:
    views = []
    for window in WINDOWS:
        usage = TokenUsage()
        cost = 0.0
        unpriced: set[str] = set()
        for row in rows:
            if row.day <= today - timedelta(days=window):
                continue
            spent = TokenUsage(
                input_tokens=row.llm_input,
                output_tokens=row.llm_output,
                cache_read_input_tokens=row.llm_cache_read,
                cache_creation_input_tokens=row.llm_cache_write,
            )
            if spent.total_input_tokens + spent.output_tokens == 0:
                continue
            usage = usage + spent
            price = estimate_cost(row.llm_model or "", spent)
            if price is None:
                unpriced.add(row.llm_model or "unknown model")
            else:
                cost += price
        views.append(LlmView(window, usage, round(cost, 4), tuple(sorted(unpriced))))
    return tuple(views)


def daily_chart(rows: Iterable[OutcomeCount], today: date, days: int = 30) -> Chart:
    span = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    counts: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        if row.day >= span[0]:
            counts[row.day][row.outcome] += row.count
    return outcomes_per_day(span, counts)


def delivery_rows(deliveries: Iterable[DeliverySummary], now: datetime) -> tuple[DeliveryRow, ...]:
    rows = []
    for d in deliveries:
        if d.state is DeliveryState.FAILED:
            result, css = f"failed: {d.error or 'unknown error'}", "bad"
        elif d.state is DeliveryState.DONE:
            result, css = ("done with errors: " + d.error, "warn") if d.error else ("done", "ok")
        else:
            result, css = d.state.value, "pending"
        rows.append(
            DeliveryRow(
                event=d.event,
                action=d.action or "",
                repo=d.repo or f"installation {d.installation_id}",
                result=result[:200],
                css=css,
                age=age((now - d.received_at).total_seconds()),
                received_at=d.received_at.isoformat(timespec="seconds"),
            )
        )
    return tuple(rows)


def _sentence(event: PrEvent) -> str:
    """``/shepherd explain``'s sentence; for kinds it has none for, the event's plain fields."""
    text = describe_plain(event)
    if text != event.kind:
        return text
    fields = [
        f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in event.data.items()
        if isinstance(v, str | int | float | bool | list) and v not in ("", [])
    ]
    return "; ".join(fields[:4])


def pr_views(
    activity: Sequence[PrActivity],
    events: Mapping[tuple[str, int], Sequence[PrEvent]],
    *,
    web_url: str,
    now: datetime,
    per_pr: int = 12,
) -> tuple[PrView, ...]:
    views = []
    for item in activity:
        shown = [e for e in events.get((item.repo, item.pr), ()) if not is_bookkeeping(e.kind)]
        timeline = shown[-per_pr:]
        views.append(
            PrView(
                repo=item.repo,
                pr=item.pr,
                url=f"{web_url.rstrip('/')}/{item.repo}/pull/{item.pr}",
                last_active=age((now - item.last_at).total_seconds()),
                events=item.events,
                timeline=tuple(
                    TimelineEntry(
                        at=e.created_at.strftime("%Y-%m-%d %H:%M"),
                        kind=e.kind,
                        summary=_sentence(e)[:300],
                    )
                    for e in timeline
                ),
            )
        )
    return tuple(views)
