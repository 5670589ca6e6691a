"""Reporting to GitHub: the ``shepherd`` check run, the sticky comment, labels.

One check run per head SHA and one comment per PR, created once and edited thereafter: the ids
are recorded in the PR's event log, so a retried job edits instead of creating a second one.
The comment is made of sections (triage, repair, ...) each owned by one writer; a writer
replaces its own section and keeps the others.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from bot.github.resources import CheckRun, Comment, Created, parse_list
from bot.kernel import JSONObject
from bot.kernel.problems import NextAction, Outcome, OutcomeKind
from bot.kernel.repoconfig import CONFIG_PATH, ConfigProblem
from bot.reporting.summary import (
    CHECK_NAME,
    STICKY_MARKER,
    Button,
    CheckRunOutput,
    embed_outcome,
    extract_outcome,
    render_check_run,
)
from bot.store import EventSpec, PrEvent, Store
from bot.store.episodes import EventKind, last_event

log = logging.getLogger(__name__)

_SECTION = re.compile(
    r"<!-- shepherd:section:(?P<name>[a-z]+) -->\n(?P<body>.*?)\n<!-- /shepherd:section -->", re.S
)
_SECTION_ORDER = ("status", "repair", "triage", "command")


class ReportGitHub(Protocol):
    """The GitHub operations reporting needs, and nothing else."""

    async def list_check_runs_for_ref(
        self, owner: str, repo: str, ref: str
    ) -> list[JSONObject]: ...

    async def create_check_run(
        self,
        owner: str,
        repo: str,
        *,
        name: str,
        head_sha: str,
        status: str | None = ...,
        conclusion: str | None = ...,
        title: str | None = ...,
        summary: str | None = ...,
        text: str | None = ...,
        annotations: Sequence[Mapping[str, Any]] = ...,
        actions: Sequence[Mapping[str, Any]] = ...,
    ) -> JSONObject: ...

    async def update_check_run(
        self,
        owner: str,
        repo: str,
        check_run_id: int,
        *,
        status: str | None = ...,
        conclusion: str | None = ...,
        title: str | None = ...,
        summary: str | None = ...,
        text: str | None = ...,
        annotations: Sequence[Mapping[str, Any]] = ...,
        actions: Sequence[Mapping[str, Any]] = ...,
    ) -> JSONObject: ...

    async def list_comments(self, owner: str, repo: str, number: int) -> list[JSONObject]: ...

    async def create_comment(self, owner: str, repo: str, number: int, body: str) -> JSONObject: ...

    async def update_comment(
        self, owner: str, repo: str, comment_id: int, body: str
    ) -> JSONObject: ...

    async def add_labels(
        self, owner: str, repo: str, number: int, labels: Sequence[str]
    ) -> list[JSONObject]: ...

    async def remove_label(self, owner: str, repo: str, number: int, name: str) -> bool: ...


def split_sections(body: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in _SECTION.finditer(body)}


#: GitHub refuses issue comments over 65,536 characters.
COMMENT_LIMIT = 65_536
PATCH_ELSEWHERE = (
    "_The full patch is in the `shepherd` check run's details (too large for this comment)._"
)
_CUT = "\n\n… (cut to fit GitHub's comment size; the `shepherd` check run has the rest)"


def _compose(sections: Mapping[str, str], outcome: Outcome | None) -> str:
    parts = [STICKY_MARKER]
    for name in sorted(
        sections, key=lambda n: _SECTION_ORDER.index(n) if n in _SECTION_ORDER else 99
    ):
        if sections[name]:
            parts.append(
                f"<!-- shepherd:section:{name} -->\n{sections[name]}\n<!-- /shepherd:section -->"
            )
    if outcome is not None:
        parts.append(embed_outcome(outcome))
    return "\n\n".join(parts)


def compose_comment(sections: Mapping[str, str], outcome: Outcome | None) -> str:
    """The one sticky comment: marker, one section per concern, the hidden JSON outcome last,
    within GitHub's size limit. Over the limit, the patch leaves the embedded outcome first (the
    check run keeps it, and the comment says so), then the longest sections are cut; the JSON
    outcome is never cut."""
    body = _compose(sections, outcome)
    if len(body) <= COMMENT_LIMIT:
        return body
    sections = dict(sections)
    if outcome is not None and outcome.patch:
        outcome = outcome.model_copy(update={"patch": None})
        if "repair" in sections:
            sections["repair"] = sections["repair"] + "\n\n" + PATCH_ELSEWHERE
    while (over := len(_compose(sections, outcome)) - COMMENT_LIMIT) > 0 and sections:
        name = max(sections, key=lambda n: len(sections[n]))
        keep = max(0, len(sections[name]) - over - len(_CUT))
        if keep == 0:
            del sections[name]
        else:
            sections[name] = sections[name][:keep] + _CUT
    return _compose(sections, outcome)


class Reporter:
    """Writes one PR's reports. Jobs for one PR are serialized, so read-modify-write is safe."""

    def __init__(
        self,
        gh: ReportGitHub,
        store: Store,
        *,
        owner: str,
        repo: str,
        pr: int,
        app_slug: str,
        job_id: int | None = None,
    ) -> None:
        self._gh = gh
        self._store = store
        self.owner = owner
        self.repo = repo
        self.full_name = f"{owner}/{repo}"
        self.pr = pr
        self.app_slug = app_slug
        self.job_id = job_id

    @property
    def bot_login(self) -> str:
        return f"{self.app_slug}[bot]".lower()

    async def record(self, kind: str, **data: object) -> None:
        """Append one event to this PR's event log, under this job."""
        await self._store.append_event(
            EventSpec(repo=self.full_name, pr=self.pr, kind=kind, data=data, job_id=self.job_id)
        )

    async def events(self) -> list[PrEvent]:
        return await self._store.list_events(self.full_name, self.pr)

    async def check_run(
        self,
        sha: str,
        output: CheckRunOutput,
        *,
        status: str = "completed",
        actions: Sequence[Button] = (),
    ) -> int:
        """Create the SHA's ``shepherd`` check run, or edit it if it exists."""
        events = await self.events()
        known = last_event(events, EventKind.CHECK_RUN, sha=sha)
        check_id = int(known.data["id"]) if known else await self._find_check_run(sha)
        fields: JSONObject = {
            "status": status,
            "title": output.title,
            "summary": output.summary,
            "text": output.text,
            "annotations": output.annotations,
            "actions": [a.to_api() for a in (actions or output.actions)],
        }
        if status == "completed":
            fields["conclusion"] = output.conclusion
        if check_id is None:
            created = await self._gh.create_check_run(
                self.owner, self.repo, name=CHECK_NAME, head_sha=sha, **fields
            )
            check_id = Created.model_validate(created).id
            await self.record(EventKind.CHECK_RUN, sha=sha, id=check_id)
        else:
            await self._gh.update_check_run(self.owner, self.repo, check_id, **fields)
        return check_id

    async def _find_check_run(self, sha: str) -> int | None:
        # A crash between creating the check run and recording it leaves it unrecorded: look it up
        # before creating a second one.
        runs = parse_list(
            CheckRun, await self._gh.list_check_runs_for_ref(self.owner, self.repo, sha)
        )
        for run in runs:
            if run.name == CHECK_NAME and run.app_slug in (self.app_slug, None):
                return run.id
        return None

    async def comment(self, section: str, body: str, outcome: Outcome | None = None) -> int:
        """Replace one section of the sticky comment (creating the comment the first time)."""
        existing = await self._find_comment()
        sections: dict[str, str] = {}
        previous_outcome = None
        if existing is not None:
            sections = split_sections(existing.body or "")
            previous_outcome = extract_outcome(existing.body or "")
        sections[section] = body
        keep = outcome
        if keep is None and previous_outcome is not None:
            keep = Outcome.model_validate(previous_outcome)
        text = compose_comment(sections, keep)
        if existing is None:
            created = await self._gh.create_comment(self.owner, self.repo, self.pr, text)
            comment_id = Created.model_validate(created).id
            await self.record(EventKind.COMMENT, id=comment_id)
            return comment_id
        comment_id = existing.id
        if existing.body != text:
            await self._gh.update_comment(self.owner, self.repo, comment_id, text)
        return comment_id

    async def _find_comment(self) -> Comment | None:
        for item in parse_list(
            Comment, await self._gh.list_comments(self.owner, self.repo, self.pr)
        ):
            user = item.user
            if STICKY_MARKER not in (item.body or "") or user is None:
                continue
            if user.login.lower() == f"{self.app_slug}[bot]" or user.is_bot:
                return item
        return None

    async def labels(
        self, *, add: Sequence[str] = (), remove: Sequence[str] = (), current: Sequence[str] = ()
    ) -> None:
        wanted = [name for name in add if name not in current]
        if wanted:
            await self._gh.add_labels(self.owner, self.repo, self.pr, wanted)
        for name in remove:
            if not current or name in current:
                await self._gh.remove_label(self.owner, self.repo, self.pr, name)

    async def config_problem(self, sha: str, problem: ConfigProblem) -> Outcome:
        """An invalid ``.github/shepherd.yml``: one neutral ``shepherd`` check run with an
        annotation on the offending line, and nothing else (no comment, no label)."""
        outcome = Outcome(
            title="Invalid .github/shepherd.yml",
            detail=f"{problem.message} (line {problem.line})" if problem.line else problem.message,
            outcome=OutcomeKind.NOOP,
            owner_action_required=True,
            next_action=NextAction.CONFIGURE,
        )
        annotation = {
            "path": CONFIG_PATH,
            "start_line": problem.line or 1,
            "end_line": problem.line or 1,
            "annotation_level": "failure",
            "message": problem.message[:500],
            "title": "Invalid Shepherd configuration",
        }
        output = render_check_run(outcome, annotations=[annotation])
        await self.check_run(sha, replace(output, conclusion="neutral"))
        return outcome
