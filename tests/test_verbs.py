"""The command verbs on their own, through the narrow ``CommandContext`` they run with.

End-to-end behaviour (permissions, the 👀, replies, the sticky comment) is in
``test_commands_e2e.py``; here each verb's decisions, with a recording context standing in for
the PR (the one seam a verb has).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.commands.spec import CommandContext, TriageDone
from bot.commands.verbs import VERBS, fix, help, resume, retry, stop
from bot.kernel.problems import Outcome, OutcomeKind
from bot.store import PrEvent
from bot.store.episodes import EventKind

HEAD = "c0ffee0000000000000000000000000000000000"
ACTIONS = {"slug": "github-actions"}


@dataclass
class RecordingContext:
    """A PR as a verb sees it, recording what the verb asked for."""

    head: str = HEAD
    is_open: bool = True
    events: list[PrEvent] = field(default_factory=list)
    actor: str = "alice"
    source: str = "comment"
    job_id: int = 7
    help_text: str = "the help"
    failed: list[dict[str, Any]] = field(default_factory=list)
    #: check run id → workflow run id
    workflow_runs: dict[int, int] = field(default_factory=dict)
    outcome: Outcome = field(
        default_factory=lambda: Outcome(title="Fixed and pushed", outcome=OutcomeKind.FIXED)
    )
    did: list[tuple[str, Any]] = field(default_factory=list)

    async def record(self, kind: str, **data: Any) -> None:
        self.did.append(("record", kind))
        self.events.append(_event(kind, job_id=self.job_id, **data))

    async def repair(self, trigger: str) -> Outcome:
        self.did.append(("repair", trigger))
        return self.outcome

    async def triage(self) -> TriageDone:
        self.did.append(("triage", None))
        return TriageDone("triaged", "")

    async def failed_runs(self) -> list[dict[str, Any]]:
        return self.failed

    async def workflow_run_of(self, check_run_id: int) -> int | None:
        return self.workflow_runs.get(check_run_id)

    async def rerun_failed_jobs(self, run_id: int) -> None:
        self.did.append(("rerun", run_id))

    async def set_paused_label(self, paused: bool) -> None:
        self.did.append(("paused_label", paused))

    async def set_status(self, text: str) -> None:
        self.did.append(("status", bool(text)))

    async def set_buttons(self, verbs: Sequence[str]) -> None:
        self.did.append(("buttons", list(verbs)))


def _event(kind: str, *, job_id: int | None = None, **data: Any) -> PrEvent:
    return PrEvent(0, "acme/widgets", 1, kind, data, None, job_id, datetime.now(UTC))


def _paused() -> RecordingContext:
    return RecordingContext(events=[_event(EventKind.PAUSED, by="bob")])


def test_the_recording_context_is_a_command_context() -> None:
    ctx: CommandContext = RecordingContext()
    assert ctx.head == HEAD


def test_every_verb_is_registered_once_with_its_spec() -> None:
    names = [verb.spec.verb for verb in VERBS]
    assert len(names) == len(set(names))
    assert {fix.SPEC.verb, stop.SPEC.verb, resume.SPEC.verb} <= set(names)


async def test_stop_pauses_and_offers_resume() -> None:
    ctx = RecordingContext()
    result = await stop.run(ctx)
    assert ctx.did == [
        ("record", EventKind.PAUSED),
        ("paused_label", True),
        ("status", True),
        ("buttons", ["resume"]),
    ]
    assert result.summary.startswith("Paused")
    assert result.reply == ""


async def test_stop_when_paused_only_replies() -> None:
    ctx = _paused()
    result = await stop.run(ctx)
    assert ctx.did == []
    assert "already paused" in result.reply


async def test_resume_without_failed_checks_does_not_repair() -> None:
    ctx = _paused()
    result = await resume.run(ctx)
    assert ctx.did == [
        ("record", EventKind.RESUMED),
        ("paused_label", False),
        ("status", False),
        ("buttons", ["stop"]),
    ]
    assert "No failed checks" in result.summary


async def test_resume_with_failed_checks_repairs_as_if_ci_had_just_failed() -> None:
    ctx = _paused()
    ctx.failed = [{"id": 1, "app": ACTIONS}]
    result = await resume.run(ctx)
    assert ("repair", "resume") in ctx.did
    assert "Fixed and pushed" in result.summary


async def test_fix_while_paused_asks_to_resume_first() -> None:
    ctx = _paused()
    result = await fix.run(ctx)
    assert ctx.did == []
    assert "/shepherd resume" in result.reply


async def test_fix_runs_the_repair_as_a_command() -> None:
    ctx = RecordingContext()
    result = await fix.run(ctx)
    assert ctx.did == [("repair", "command")]
    assert result.summary == f"Fixed and pushed (head `{HEAD[:7]}`)."


async def test_fix_with_nothing_to_repair_says_so() -> None:
    ctx = RecordingContext(outcome=Outcome(title="No failed checks", outcome=OutcomeKind.NOOP))
    result = await fix.run(ctx)
    assert "nothing was changed" in result.reply


async def test_retry_reruns_each_workflow_run_once_and_counts_other_ci() -> None:
    ctx = RecordingContext(
        failed=[
            {"id": 11, "app": ACTIONS},
            {"id": 12, "app": ACTIONS},  # another job of the same workflow run
            {"id": 13, "app": {"slug": "circleci-checks"}},
        ],
        workflow_runs={11: 500, 12: 500},
    )
    result = await retry.run(ctx)
    assert ctx.did == [("record", EventKind.MANUAL_RERUN), ("rerun", 500)]
    assert "1 workflow run(s)" in result.summary
    assert "1 failed check(s) come from other CI systems" in result.summary


async def test_retry_after_a_crash_does_not_rerun_again() -> None:
    ctx = RecordingContext(failed=[{"id": 11, "app": ACTIONS}], workflow_runs={11: 500})
    ctx.events.append(_event(EventKind.MANUAL_RERUN, job_id=ctx.job_id, runs=[500]))
    result = await retry.run(ctx)
    assert ctx.did == []
    assert result.summary.startswith("Re-ran")


async def test_help_replies_with_the_help_text() -> None:
    result = await help.run(RecordingContext())
    assert result.reply == "the help"
