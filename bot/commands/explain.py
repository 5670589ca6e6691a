"""``/shepherd explain``: why Shepherd did or did not act on a PR, rendered from its event log.

Pure: the command job passes the PR's events and head SHA; nothing here does I/O. Every claim
cites the event it comes from (``event #12``), so a reader can check the bot against its own
record. Text that came from logs or people (evidence lines, reasons, logins) is hostile input:
it is shown in code spans with backticks removed, so it cannot add links, mentions or markup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bot.store import PrEvent
from bot.store.episodes import EventKind, budget_state, is_paused, last_event

__all__ = ["MAX_LISTED_EVENTS", "describe_plain", "is_bookkeeping", "render_explain"]

#: The reply lists at most this many events (newest); the summary above covers the rest.
MAX_LISTED_EVENTS = 30
#: Bookkeeping that explains nothing: which check run or comment id Shepherd writes to.
_QUIET_KINDS = frozenset({EventKind.CHECK_RUN, EventKind.COMMENT, EventKind.COMMAND_REPLY})


def _code(text: object, limit: int = 120) -> str:
    """Hostile text as an inline code span: no backticks, no line breaks, bounded."""
    flat = " ".join(str(text).replace("`", "'").split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return f"`{flat}`" if flat else "`-`"


def _sha(value: object) -> str:
    return _code(str(value or "?")[:7])


def _cite(event: PrEvent) -> str:
    return f"event #{event.id}"


def _config(e: PrEvent) -> str:
    where = "from the file" if e.data.get("from_file") else "no file, so the defaults"
    valid = "" if e.data.get("ok", True) else "; it is invalid, so Shepherd acted on nothing else"
    return f"read `.github/shepherd.yml` at base {_sha(e.data.get('sha'))} ({where}{valid})"


def _classified(e: PrEvent) -> str:
    parts = []
    for failure in e.data.get("failures") or []:
        fixers = ", ".join(failure.get("fixers") or [])
        text = f"{_code(failure.get('job'), 60)} → **{failure.get('category')}**"
        if fixers:
            text += f" (fixers: {_code(fixers, 80)})"
        if failure.get("reason"):
            text += f", because {_code(failure.get('reason'))}"
        evidence = failure.get("evidence") or []
        if evidence:
            text += f"; evidence: {_code(evidence[0])}"
        parts.append(text)
    found = "; ".join(parts) or "no failures"
    return f"classified the failed checks of {_sha(e.data.get('sha'))}: {found}"


def _pushed(e: PrEvent) -> str:
    if e.data.get("new_sha") is None:
        return (
            f"tried to push a fix onto {_sha(e.data.get('expected_sha'))}; GitHub refused: "
            f"{_code(e.data.get('rejected'))}"
        )
    recovered = " (found after a restart)" if e.data.get("recovered") else ""
    return (
        f"pushed {_sha(e.data.get('new_sha'))} on top of "
        f"{_sha(e.data.get('expected_sha'))}{recovered}"
    )


def _outcome(e: PrEvent) -> str:
    budget = e.data.get("budget") or {}
    spent = ""
    if budget:
        spent = (
            f" (CI round {budget.get('ci_rounds_used')}/{budget.get('ci_rounds_max', 2)}, "
            f"LLM attempt {budget.get('llm_attempts_used')}/{budget.get('llm_attempts_max', 1)}, "
            f"infra re-run {budget.get('reruns_used')}/{budget.get('reruns_max', 1)})"
        )
    return (
        f"outcome for {_sha(e.data.get('sha'))}: **{e.data.get('outcome')}**, "
        f"{_code(e.data.get('title'))}{spent}"
    )


def _command(e: PrEvent) -> str:
    verb = _code(f"/shepherd {e.data.get('verb')}", 60)
    via = "button" if e.data.get("source") == "button" else "comment"
    who = f"{_code(e.data.get('actor'), 40)} (permission {_code(e.data.get('permission'), 20)})"
    decision = e.data.get("decision")
    if decision == "refused":
        return f"{verb} by {who} via {via}: **refused**, {e.data.get('needs') or 'not allowed'}"
    if decision == "unknown":
        return f"{verb} by {_code(e.data.get('actor'), 40)}: unknown command"
    result = e.data.get("result") or ""
    ok = "" if e.data.get("ok", True) else " **failed**:"
    return f"{verb} by {who} via {via}: accepted;{ok} {_code(result, 160)}"


_RENDERERS: dict[str, Callable[[PrEvent], str]] = {
    EventKind.PUSH: lambda e: (
        f"push by {_code(e.data.get('by'), 40)}: head {_sha(e.data.get('sha'))}, "
        "a new episode (budgets re-armed)"
    ),
    EventKind.CI_FAILED: lambda e: (
        f"CI failed on {_sha(e.data.get('sha'))} "
        f"(seen via {_code(e.data.get('via'), 30)}, attempt {e.data.get('attempt')})"
    ),
    EventKind.CONFIG: _config,
    EventKind.CLASSIFIED: _classified,
    EventKind.RERUN: lambda e: (
        f"re-ran the failed jobs of {_sha(e.data.get('sha'))} once (infrastructure failure)"
    ),
    EventKind.MANUAL_RERUN: lambda e: (
        f"re-ran the failed jobs of {_sha(e.data.get('sha'))} for "
        f"{_code(e.data.get('by'), 40)} (`/shepherd retry`)"
    ),
    EventKind.LLM_ATTEMPT: lambda e: f"spent the LLM attempt on {_sha(e.data.get('sha'))}",
    EventKind.PUSH_INTENT: lambda e: (
        f"about to push {_sha(e.data.get('new_sha'))} onto {_sha(e.data.get('expected_sha'))}"
    ),
    EventKind.PUSHED: _pushed,
    EventKind.OUTCOME: _outcome,
    EventKind.PAUSED: lambda e: f"**paused** by {_code(e.data.get('by'), 40)}",
    EventKind.RESUMED: lambda e: f"**resumed** by {_code(e.data.get('by'), 40)}",
    EventKind.COMMAND: _command,
    EventKind.COMMAND_RECEIVED: lambda e: (
        f"comment by {_code(e.data.get('actor'), 40)} with "
        f"{_code(', '.join(map(str, e.data.get('verbs') or [])), 80)}"
    ),
}


def _describe(event: PrEvent) -> str:
    renderer = _RENDERERS.get(event.kind)
    if renderer is not None:
        return renderer(event)
    return f"{_code(event.kind, 60)}"


def describe_plain(event: PrEvent) -> str:
    """The sentence ``/shepherd explain`` writes for ``event``, without markdown (the status
    page's timeline; the page escapes it as HTML)."""
    return _describe(event).replace("**", "").replace("`", "")


def is_bookkeeping(kind: str) -> bool:
    """Entries that only record which check run or comment Shepherd writes to."""
    return kind in _QUIET_KINDS


def _status_lines(events: Sequence[PrEvent], head_sha: str) -> list[str]:
    lines: list[str] = []
    paused = last_event(events, EventKind.PAUSED)
    if is_paused(events) and paused is not None:
        lines.append(
            f"- **Paused** ({_cite(paused)}): no automatic fixes, re-runs or pushes until "
            "`/shepherd resume`."
        )
    else:
        lines.append("- Active: Shepherd acts on failed checks of this PR.")
    state = budget_state(events, head_sha, head_has_trailer=False)
    own = " — this head is Shepherd's own commit, never re-fixed" if state.head_is_ours else ""
    lines.append(
        f"- Budget for head {_sha(head_sha)}: {state.budget().describe()}{own}. "
        "A push by someone other than Shepherd starts a new episode and re-arms it."
    )
    config = last_event(events, EventKind.CONFIG)
    if config is not None:
        lines.append(f"- Config: {_config(config)} ({_cite(config)}).")
    else:
        lines.append("- Config: not read yet (Shepherd has not run a repair on this PR).")
    classified = last_event(events, EventKind.CLASSIFIED)
    if classified is not None:
        lines.append(f"- Latest classification ({_cite(classified)}): {_classified(classified)}.")
    outcome = last_event(events, EventKind.OUTCOME)
    if outcome is not None:
        lines.append(f"- Latest outcome ({_cite(outcome)}): {_outcome(outcome)}.")
    else:
        lines.append("- No repair outcome yet: Shepherd has not acted on a CI failure here.")
    return lines


def _timestamp(event: PrEvent) -> str:
    created: Any = event.created_at
    try:
        return str(created.strftime("%Y-%m-%d %H:%MZ"))
    except AttributeError:
        return str(created)


def render_explain(events: Sequence[PrEvent], *, head_sha: str) -> str:
    """Markdown: the PR's current state and budget, then the recorded events that led there."""
    lines = [
        f"**Why Shepherd did what it did on this PR** (head {_sha(head_sha)}), from its event log:",
        "",
        *_status_lines(events, head_sha),
    ]
    listed = [e for e in events if e.kind not in _QUIET_KINDS]
    if listed:
        shown = listed[-MAX_LISTED_EVENTS:]
        older = len(listed) - len(shown)
        lines += ["", "<details><summary>Event log</summary>", ""]
        if older:
            lines.append(f"({older} older events not shown)")
            lines.append("")
        for event in shown:
            lines.append(f"- #{event.id} · {_timestamp(event)} · {_describe(event)}")
        lines += ["", "</details>"]
    else:
        lines += ["", "Nothing is recorded for this PR yet."]
    return "\n".join(lines)
