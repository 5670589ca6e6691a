"""Budgets and episodes, derived from a PR's event log (pure).

DESIGN.md principle 3: at most two CI rounds per episode (the PR's own run, plus one after the
bot's push), at most one LLM attempt per episode, at most one infra re-run per head SHA. An
episode starts when someone other than the bot pushes. Everything here is computed from the
append-only event log, so a crashed and retried job sees exactly what was already spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.kernel.problems import Budget
from bot.store import PrEvent


class EventKind:
    """The kinds of entries in a PR's event log (shown by ``/shepherd explain``)."""

    PUSH = "pr.push"  # someone other than the bot moved the head: a new episode
    CI_FAILED = "ci.failed"  # a failed CI job or run was delivered; a repair job is queued
    COMMAND_RECEIVED = "command.received"  # a comment with commands; a command job is queued
    TRIAGED = "pr.triaged"
    CONFIG = "config.read"
    CLASSIFIED = "repair.classified"
    RERUN = "repair.rerun"
    LLM_ATTEMPT = "repair.llm_attempt"
    PUSH_INTENT = "repair.push_intent"  # written before the ref update (crash safety)
    PUSHED = "repair.pushed"
    HANDOFF = "repair.handoff"
    OUTCOME = "repair.outcome"
    PAUSED = "pr.paused"
    RESUMED = "pr.resumed"
    COMMAND = "command"  # one per command: who, permission, accepted/refused/unknown, result
    COMMAND_REPLY = "command.reply"  # the command job's one reply comment (not posted twice)
    MANUAL_RERUN = "command.rerun"  # `/shepherd retry`: a person's re-run, not the bot's budget
    REVIEWERS_REQUESTED = "agent_lane.reviewers_requested"
    CHECK_RUN = "report.check_run"
    COMMENT = "report.comment"


@dataclass(frozen=True)
class BudgetState:
    #: 1 on the PR's own commit, 2 on the bot's commit.
    ci_round: int
    head_is_ours: bool
    rerun_used: bool
    llm_attempts: int
    paused: bool

    def budget(self, *, llm_used_now: int = 0, rerun_now: bool = False) -> Budget:
        return Budget(
            ci_rounds_used=self.ci_round,
            llm_attempts_used=min(1, self.llm_attempts + llm_used_now),
            reruns_used=1 if (self.rerun_used or rerun_now) else 0,
        )


def episode_events(events: Sequence[PrEvent]) -> Sequence[PrEvent]:
    """Events since the last push by someone other than the bot (DESIGN.md: an episode)."""
    for index in range(len(events) - 1, -1, -1):
        if events[index].kind == EventKind.PUSH:
            return events[index:]
    return events


def last_event(events: Sequence[PrEvent], kind: str, **match: Any) -> PrEvent | None:
    """The newest event of ``kind`` whose data has the given values."""
    for event in reversed(events):
        if event.kind == kind and all(event.data.get(k) == v for k, v in match.items()):
            return event
    return None


def is_paused(events: Sequence[PrEvent]) -> bool:
    state = False
    for event in events:
        if event.kind == EventKind.PAUSED:
            state = True
        elif event.kind == EventKind.RESUMED:
            state = False
    return state


def budget_state(
    events: Sequence[PrEvent], head_sha: str, *, head_has_trailer: bool
) -> BudgetState:
    """What the episode has spent, for the head SHA about to be repaired."""
    ours = head_has_trailer or any(
        e.kind == EventKind.PUSHED and e.data.get("new_sha") == head_sha for e in events
    )
    episode = episode_events(events)
    return BudgetState(
        ci_round=2 if ours else 1,
        head_is_ours=ours,
        rerun_used=any(e.kind == EventKind.RERUN and e.data.get("sha") == head_sha for e in events),
        llm_attempts=sum(1 for e in episode if e.kind == EventKind.LLM_ATTEMPT),
        paused=is_paused(events),
    )


def our_push(events: Sequence[PrEvent], head_sha: str) -> str | None:
    """The commit Shepherd pushed on top of ``head_sha``, if it recorded one."""
    pushed: str | None = None
    for event in events:
        if event.kind == EventKind.PUSHED and event.data.get("expected_sha") == head_sha:
            new = event.data.get("new_sha")
            pushed = str(new) if new else None
    return pushed


def pending_push(events: Sequence[PrEvent], head_sha: str) -> str | None:
    """A push intent for this head SHA with no recorded result: a crash may have happened
    between the ref update and recording it. Returns the intended new SHA to look for."""
    intent: str | None = None
    for event in events:
        if event.kind == EventKind.PUSH_INTENT and event.data.get("expected_sha") == head_sha:
            intent = str(event.data.get("new_sha"))
        elif event.kind == EventKind.PUSHED and event.data.get("expected_sha") == head_sha:
            intent = None
    return intent
