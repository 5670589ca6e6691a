"""The hand-off summary: check run output, sticky PR comment, and the embedded JSON outcome.

Pure rendering. The first line of every summary says what happened and what the reader should
do; the details follow for whoever needs them; the JSON outcome rides along, hidden, for agents
and scripts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.kernel import JSONObject
from bot.kernel.problems import Category, NextAction, Outcome, OutcomeKind

#: Hidden marker that identifies Shepherd's one sticky comment on a PR (bedevere's habit).
STICKY_MARKER = "<!-- shepherd:sticky -->"
OUTCOME_OPEN = "<!-- shepherd:outcome"
OUTCOME_CLOSE = "-->"
CHECK_NAME = "shepherd"
#: GitHub rejects check run summaries and texts over 65,535 characters.
#: https://docs.github.com/rest/checks/runs#create-a-check-run
CHECK_TEXT_LIMIT = 65_535
#: Comments are limited to 65,536 characters.

_NEXT_ACTION_TEXT = {
    NextAction.NONE: "Nothing to do.",
    NextAction.WAIT_FOR_CI: "Wait for CI on the new commit.",
    NextAction.RERUN: "Re-run the failed jobs.",
    NextAction.REVIEW: "Review the pull request.",
    NextAction.FIX_LOCALLY: "Fix it locally and push.",
    NextAction.APPLY_PATCH: "Apply the patch below locally and push.",
    NextAction.CONFIGURE: "Fix the Shepherd configuration.",
    NextAction.RETRY_LATER: "Retry later with `/shepherd retry`.",
}

_HEADLINE_ICON = {
    OutcomeKind.FIXED: "✅",
    OutcomeKind.RERUN: "🔁",
    OutcomeKind.HANDOFF: "🙋",
    OutcomeKind.NOOP: "ℹ️",
}


@dataclass(frozen=True)
class Button:
    """A check-run ``requested_action`` (GitHub: label ≤ 20, description ≤ 40, identifier ≤ 20)."""

    label: str
    description: str
    identifier: str

    def to_api(self) -> dict[str, str]:
        return {
            "label": self.label[:20],
            "description": self.description[:40],
            "identifier": self.identifier[:20],
        }


@dataclass(frozen=True)
class CheckRunOutput:
    title: str
    summary: str
    conclusion: str
    text: str | None = None
    annotations: list[JSONObject] = field(default_factory=list)
    actions: list[Button] = field(default_factory=list)

    def to_api(self) -> JSONObject:
        output: JSONObject = {"title": self.title, "summary": self.summary}
        if self.text:
            output["text"] = self.text
        return output


def headline(outcome: Outcome) -> str:
    """One line: what happened, and what to do next."""
    icon = _HEADLINE_ICON[outcome.outcome]
    return f"{icon} **{outcome.title}** — {_NEXT_ACTION_TEXT[outcome.next_action]}"


def conclusion_for(outcome: Outcome) -> str:
    if outcome.outcome is OutcomeKind.FIXED or outcome.outcome is OutcomeKind.NOOP:
        return "success"
    if outcome.outcome is OutcomeKind.HANDOFF and outcome.owner_action_required:
        return "action_required"
    return "neutral"


def defang(text: str) -> str:
    """Untrusted text (logs, patches, commands) cannot open or close an HTML comment, so it can
    never forge Shepherd's hidden markers (sticky comment, sections, the JSON outcome). A
    zero-width space keeps what people see unchanged."""
    return text.replace("<!--", "<!\u200b--").replace("-->", "-\u200b->")


def _fence(text: str, lang: str = "") -> str:
    # A fence longer than any backtick run inside, so hostile log text cannot close it.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{defang(text)}\n{ticks}"


def _escape_inline(text: str, limit: int = 300) -> str:
    return defang(text.replace("`", "'").replace("\n", " ")[:limit])


def render_outcome_markdown(outcome: Outcome) -> str:
    """The repair section: what failed, evidence, what was tried, result, budget, next action."""
    lines = [headline(outcome), ""]
    if outcome.detail:
        lines += [defang(outcome.detail), ""]
    lines += _failure_table(outcome)
    lines += _fix_lines(outcome)
    lines += _notes(outcome)
    lines.append(f"Budget: {outcome.budget.describe()}")
    if outcome.commit:
        lines.append(f"Commit: {outcome.commit}")
    lines += _evidence(outcome)
    if outcome.patch:
        lines += [
            "",
            "<details><summary>Patch</summary>",
            "",
            _fence(outcome.patch[:20000], "diff"),
            "",
            "</details>",
        ]
    return "\n".join(lines)


def _failure_table(outcome: Outcome) -> list[str]:
    """One row per failed job: its category, the fixers that match, the failing command."""
    if not outcome.failures:
        return []
    lines = ["| job | category | fixers | command |", "|---|---|---|---|"]
    for f in outcome.failures:
        fixers = ", ".join(f.fixers) or "—"
        command = f"`{_escape_inline(f.command)}`" if f.command else "—"
        lines.append(f"| {_escape_inline(f.job or '?')} | {f.category} | {fixers} | {command} |")
    return [*lines, ""]


def _fix_lines(outcome: Outcome) -> list[str]:
    """One bullet per fixer that ran (and the LLM attempt's budget line)."""
    lines: list[str] = []
    for fix in outcome.fixes:
        if fix.changed:
            files = ", ".join(f"`{p}`" for p in fix.files[:10])
            changed = f"changed {files}" if files else "changed files"
        else:
            changed = "no change"
        version = f" — {fix.tool_version}" if fix.tool_version else ""
        behaviour = " (may change behaviour)" if fix.changes_behaviour and fix.changed else ""
        lines.append(f"- **{fix.fixer}**{version}: {changed}{behaviour}")
        if fix.fixer == "agent" and fix.detail:
            # Model, turns, tokens (cached and not) and estimated cost: the LLM budget, visible.
            lines.append(f"  - {_escape_inline(fix.detail.splitlines()[0])}")
    return [*lines, ""] if lines else []


def _notes(outcome: Outcome) -> list[str]:
    """Scope, behaviour changes, verification and the job environments, a paragraph each."""
    lines: list[str] = []
    if outcome.scope is not None:
        outside = outcome.scope.files_outside_pr
        count = (
            f"; {outside} file{'s' if outside != 1 else ''} outside the pull request touched"
            if outside is not None
            else ""
        )
        lines += [f"Scope: {_escape_inline(outcome.scope.scope)}{count}", ""]
    for note in outcome.behaviour_changes:
        lines += [f"May change behaviour: {_escape_inline(note, 400)}", ""]
    if outcome.verification:
        lines += [f"Verification: {outcome.verification}", ""]
    for environment in outcome.environment:
        lines += [f"Environment: {_escape_inline(environment.summary_line(), 400)}", ""]
    return lines


def _evidence(outcome: Outcome) -> list[str]:
    """The failures' log excerpts, folded."""
    evidence = [e for f in outcome.failures for e in f.evidence][:8]
    excerpts = [f for f in outcome.failures if f.excerpt]
    if not (evidence or excerpts):
        return []
    lines = ["", "<details><summary>Evidence</summary>", ""]
    for f in excerpts[:3]:
        lines += [
            f"**{_escape_inline(f.job or f.step or 'job')}**",
            "",
            _fence(f.excerpt[:4000]),
            "",
        ]
    lines.append("</details>")
    return lines


def embed_outcome(outcome: Outcome) -> str:
    """The JSON outcome as a hidden block. ``--`` cannot appear inside an HTML comment, and only
    JSON strings can contain it, so it is escaped as a JSON unicode escape (still valid JSON)."""
    text = json.dumps(outcome.to_json(), separators=(",", ":"), ensure_ascii=False)
    safe = text.replace("--", "-\\u002d")
    return f"{OUTCOME_OPEN}\n{safe}\n{OUTCOME_CLOSE}"


def extract_outcome(body: str) -> JSONObject | None:
    """Read back the JSON outcome embedded in a sticky comment (for scripts and tests). It is
    always the last block of the comment."""
    start = body.rfind(OUTCOME_OPEN)
    if start < 0:
        return None
    end = body.find(OUTCOME_CLOSE, start + len(OUTCOME_OPEN))
    if end < 0:
        return None
    value = json.loads(body[start + len(OUTCOME_OPEN) : end])
    return value if isinstance(value, dict) else None


def render_check_run(
    outcome: Outcome,
    *,
    triage_markdown: str = "",
    annotations: Sequence[JSONObject] = (),
    actions: Sequence[Button] = (),
) -> CheckRunOutput:
    summary = render_outcome_markdown(outcome)
    text = triage_markdown or None
    if outcome.patch:
        # The one place the whole patch always is: the comment may be too small for it.
        patch = f"### Patch\n\n{_fence(outcome.patch, 'diff')}"
        if len(patch) > CHECK_TEXT_LIMIT - len(text or "") - 100:
            patch = (
                f"### Patch\n\nThe patch is {len(outcome.patch) // 1024} KB, more than a check "
                "run holds: run `shepherd fix --repo . --log <the job's log>` to make it locally."
            )
        text = f"{text}\n\n{patch}" if text else patch
    if len(summary) > CHECK_TEXT_LIMIT:
        summary = summary[: CHECK_TEXT_LIMIT - 100] + "\n\n… (truncated)"
    if text and len(text) > CHECK_TEXT_LIMIT:
        text = text[: CHECK_TEXT_LIMIT - 100] + "\n\n… (truncated)"
    return CheckRunOutput(
        title=outcome.title[:250],
        summary=summary,
        conclusion=conclusion_for(outcome),
        text=text,
        annotations=list(annotations),
        actions=list(actions)[:3],
    )


def needs_human(outcome: Outcome) -> bool:
    return outcome.outcome is OutcomeKind.HANDOFF or any(
        f.category is Category.HUMAN for f in outcome.failures
    )
