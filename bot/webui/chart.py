"""A small server-rendered chart: repair outcomes per day as stacked bars (pure).

The template draws the bars as inline SVG ``<rect>`` elements: no script, no build step, nothing
for the page's Content-Security-Policy to allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

OUTCOME_ORDER = ("fixed", "rerun", "handoff", "noop")
COLOURS = {"fixed": "#2da44e", "rerun": "#0969da", "handoff": "#d4a72c", "noop": "#8c959f"}


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    max_count: int
    first_day: date
    last_day: date
    legend: tuple[tuple[str, str], ...]

    @property
    def empty(self) -> bool:
        return self.max_count == 0


def outcomes_per_day(
    days: Sequence[date],
    counts: Mapping[date, Mapping[str, int]],
    *,
    width: int = 720,
    height: int = 140,
) -> Chart:
    """One column per day of ``days`` (oldest first), one stacked segment per outcome."""
    totals = [sum(counts.get(day, {}).values()) for day in days]
    top = max(totals, default=0)
    slot = width / max(len(days), 1)
    bar_width = max(slot * 0.7, 1.0)
    bars: list[Bar] = []
    for index, day in enumerate(days):
        y = float(height)
        for outcome in _ordered(counts.get(day, {})):
            n = counts[day][outcome]
            if n <= 0 or top == 0:
                continue
            h = height * n / top
            y -= h
            bars.append(
                Bar(
                    x=round(index * slot + (slot - bar_width) / 2, 2),
                    y=round(y, 2),
                    width=round(bar_width, 2),
                    height=round(h, 2),
                    colour=COLOURS.get(outcome, "#6e7781"),
                    title=f"{day.isoformat()}: {n} {outcome}",
                )
            )
    seen = {o for day in days for o in counts.get(day, {})}
    legend = tuple((o, COLOURS.get(o, "#6e7781")) for o in _ordered(dict.fromkeys(seen, 1)))
    return Chart(
        width=width,
        height=height,
        bars=tuple(bars),
        max_count=top,
        first_day=days[0] if days else date.today(),
        last_day=days[-1] if days else date.today(),
        legend=legend or tuple((o, COLOURS[o]) for o in OUTCOME_ORDER),
    )


def _ordered(counts: Mapping[str, int]) -> list[str]:
    known = [o for o in OUTCOME_ORDER if o in counts]
    return known + sorted(o for o in counts if o not in OUTCOME_ORDER)
