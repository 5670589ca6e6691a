"""The command job: ``/shepherd <verb>`` comments and ``shepherd`` check-run buttons, acted on.

The handler (``handlers/comments.py``) only parsed and enqueued. Here, with GitHub at hand:
authorize each command by the actor's repository permission (never ``author_association``),
acknowledge accepted comments with 👀, run the verbs in order, and make the result visible: the
sticky comment's ``command`` section for verbs that change something, one short reply for those
that do not (help, explain, refusals, unknown verbs, nothing to do). Every decision is written to
the PR's event log, which ``/shepherd explain`` renders.

A retried job (crash, lost lease) skips the commands it already recorded as handled and does not
post its reply twice; the repair itself is crash-safe on its own (``bot.repair.job``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

from bot.commands.parse import button_action, render_help, spec_for
from bot.commands.spec import COMMAND_PREFIX, CommandSpec, CommandVerb, TriageDone, VerbResult
from bot.commands.verbs import VERBS
from bot.github.webhooks import FAILED_CONCLUSIONS
from bot.kernel import JSONObject
from bot.kernel.errors import ShepherdError
from bot.kernel.problems import NextAction, Outcome, OutcomeKind
from bot.kernel.repoconfig import CONFIG_PATH, RepoConfig, load_config
from bot.kernel.target import RepoTarget
from bot.repair.job import RepairEnv, RepairGitHub, RepairRequest
from bot.reporting.report import Reporter
from bot.reporting.summary import CHECK_NAME, embed_outcome
from bot.store import EventSpec, PrEvent, Store
from bot.store.episodes import EventKind
from bot.triage.job import TriageGitHub, TriageRequest, run_triage

log = logging.getLogger(__name__)


#: ``permission`` values of ``repos/get-collaborator-permission-level``. ``maintain`` and
#: ``triage`` show up as ``write``/``read`` there (the exact role is ``role_name``); both spellings
#: are accepted so a change on GitHub's side cannot silently lock maintainers out.
#: https://docs.github.com/rest/collaborators/collaborators#get-repository-permissions-for-a-user
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
READ_PERMISSIONS = WRITE_PERMISSIONS | {"triage", "read"}
#: How many handled commands the sticky comment's ``command`` section lists (newest last).
COMMAND_SECTION_ENTRIES = 5
REPLY_MARKER = "<!-- shepherd:reply -->"
#: (repository full name, login), both case-folded → permission. A ``cachetools.TTLCache``
#: held by the job deps: permissions change rarely, and one comment may carry ten commands.
PermissionCache = MutableMapping[tuple[str, str], str]
#: Runs the repair job's function on a request (``bot.app.jobs.repair``): the same path as a CI
#: failure's repair, so its outcome, fixer runs and LLM tokens reach /metrics the same way.
RepairRunner = Callable[[RepairRequest], Awaitable[Outcome]]


class CommandGitHub(RepairGitHub, TriageGitHub, Protocol):
    """The repair and triage jobs' operations plus the two commands need (all in the subset)."""

    async def get_collaborator_permission(self, owner: str, repo: str, username: str) -> str: ...

    async def create_reaction(
        self, owner: str, repo: str, comment_id: int, content: str = ...
    ) -> JSONObject: ...


class RequestedCommand(BaseModel):
    model_config = ConfigDict(frozen=True)

    verb: str
    args: tuple[str, ...] = ()
    known: bool

    @model_validator(mode="before")
    @classmethod
    def _from_triple(cls, value: Any) -> Any:
        # Stored compactly as ``[verb, args, known]``.
        if isinstance(value, list | tuple):
            verb, args, known = value
            return {"verb": verb, "args": args, "known": known}
        return value

    @model_serializer
    def _as_triple(self) -> list[Any]:
        return [self.verb, list(self.args), self.known]


class CommandRequest(RepoTarget):
    KIND: ClassVar[str] = "command"

    pr: int
    clone_url: str
    # Unknown visibility is treated as private: the stricter rule.
    private: bool = True
    #: None for a button click (there is no comment to react to).
    comment_id: int | None = None
    actor: str
    commands: tuple[RequestedCommand, ...]
    source: str = "comment"  # comment | button


@dataclass(frozen=True)
class CommandEnv:
    """What the command job uses besides GitHub and the store."""

    repair: RepairEnv
    permissions: PermissionCache
    run_repair: RepairRunner


@dataclass
class CommandReport:
    """What the job did, as the job result."""

    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    reacted: bool = False
    replied: bool = False

    @property
    def outcome(self) -> str:
        if self.failed:
            return "failed"
        if self.accepted:
            return "done"
        return "refused" if self.refused else "ignored"

    def to_json(self) -> JSONObject:
        return {
            "accepted": self.accepted,
            "refused": self.refused,
            "unknown": self.unknown,
            "failed": self.failed,
            "reacted": self.reacted,
            "replied": self.replied,
        }


# --- authorization (pure) ------------------------------------------------------------------


def needs_permission_lookup(spec: CommandSpec, *, private: bool) -> bool:
    """Whether deciding ``spec`` needs the actor's permission (an API call)."""
    return spec.needs_write or private


def may_run(spec: CommandSpec, permission: str | None, *, private: bool) -> bool:
    """Write-level verbs need write, maintain or admin; read-only verbs are open to anyone on a
    public repository and need read access on a private one."""
    if spec.needs_write:
        return permission in WRITE_PERMISSIONS
    return not private or permission in READ_PERMISSIONS


def who_may_run(spec: CommandSpec, *, private: bool) -> str:
    if spec.needs_write:
        return "people with write, maintain or admin access"
    return "people with read access" if private else "anyone"


def _verb_code(verb: str) -> str:
    clean = " ".join(verb.replace("`", "'").split())[:40]
    return f"`{COMMAND_PREFIX} {clean}`"


def render_refusal(
    actor: str, refused: Sequence[CommandSpec], *, repo: str, private: bool, source: str
) -> str:
    """One short reply for every refused command of one comment (or one button click)."""
    by_rule: dict[str, list[str]] = {}
    for spec in refused:
        by_rule.setdefault(who_may_run(spec, private=private), []).append(_verb_code(spec.verb))
    rules = "; ".join(f"{', '.join(verbs)}: {who} only" for who, verbs in by_rule.items())
    what = "clicked a Shepherd button for" if source == "button" else "asked for"
    verbs = ", ".join(_verb_code(spec.verb) for spec in refused)
    anyone = "" if private else f" Anyone may run {_verb_code('help')} and {_verb_code('explain')}."
    return (
        f"@{actor} {what} {verbs}, which needs more access to {repo} than you have "
        f"({rules}). Nothing was done.{anyone}"
    )


def render_unknown(verbs: Sequence[str]) -> str:
    listed = ", ".join(_verb_code(v) for v in verbs)
    return f"Unknown command {listed}. Comment `{COMMAND_PREFIX} help` for the list of commands."


def render_command_section(events: Sequence[PrEvent]) -> str:
    """The sticky comment's ``command`` section: the last few commands that changed something."""
    entries = [
        e
        for e in events
        if e.kind == EventKind.COMMAND
        and e.data.get("decision") == "accepted"
        and e.data.get("result")
    ][-COMMAND_SECTION_ENTRIES:]
    if not entries:
        return ""
    lines = ["**Commands**", ""]
    for e in entries:
        via = "button" if e.data.get("source") == "button" else "comment"
        actor = " ".join(str(e.data.get("actor", "?")).replace("`", "'").split())[:40]
        failed = "failed: " if not e.data.get("ok", True) else ""
        result = " ".join(str(e.data["result"]).split())[:300]
        # No @: an edited comment is no place to notify people again.
        lines.append(f"- {_verb_code(str(e.data['verb']))} by `{actor}` ({via}): {failed}{result}")
    return "\n".join(lines)


def render_failure(verb: str, exc: ShepherdError) -> str:
    """The reply for a verb that failed: what and why, plus the machine-readable record."""
    retryable = bool(getattr(exc, "retryable", False))
    outcome = Outcome(
        title=f"{COMMAND_PREFIX} {verb} failed",
        detail=str(exc)[:500],
        outcome=OutcomeKind.NOOP,
        retryable=retryable,
        next_action=NextAction.RETRY_LATER if retryable else NextAction.NONE,
    )
    again = " It may work if you try again later." if retryable else ""
    return f"{_verb_code(verb)} failed: {outcome.detail}{again}\n\n{embed_outcome(outcome)}"


# --- the job ----------------------------------------------------------------------------------


_VERBS: dict[str, CommandVerb] = {verb.spec.verb: verb for verb in VERBS}


@dataclass
class PullContext:
    """The ``CommandContext`` verbs run with: one PR, refreshed before each verb."""

    gh: CommandGitHub
    req: CommandRequest
    env: CommandEnv
    reporter: Reporter
    store: Store
    pull: JSONObject = field(default_factory=dict)
    events: list[PrEvent] = field(default_factory=list)
    config: RepoConfig | None = None

    @property
    def head(self) -> str:
        return str(self.pull["head"]["sha"])

    @property
    def is_open(self) -> bool:
        return self.pull.get("state") == "open"

    @property
    def actor(self) -> str:
        return self.req.actor

    @property
    def source(self) -> str:
        return self.req.source

    @property
    def job_id(self) -> int:
        assert self.req.job_id is not None  # decoded from a leased job
        return self.req.job_id

    @property
    def help_text(self) -> str:
        return render_help(self.env.repair.app_slug)

    async def refresh(self) -> None:
        # Each verb sees the PR as the previous one left it (a fix moves the head).
        self.pull = await self.gh.get_pull(self.req.owner, self.req.repo, self.req.pr)
        self.events = await self.reporter.events()

    async def record(self, kind: str, **data: Any) -> None:
        spec = EventSpec(
            repo=self.req.full_name, pr=self.req.pr, kind=kind, data=data, job_id=self.job_id
        )
        await self.store.append_event(spec)

    async def repair(self, trigger: str) -> Outcome:
        return await self.env.run_repair(
            RepairRequest(
                installation=self.req.installation,
                owner=self.req.owner,
                repo=self.req.repo,
                sha=self.head,
                pr=self.req.pr,
                clone_url=self.req.clone_url,
                trigger=trigger,
                job_id=self.req.job_id,
            )
        )

    async def triage(self) -> TriageDone:
        request = TriageRequest(
            installation=self.req.installation,
            owner=self.req.owner,
            repo=self.req.repo,
            pr=self.req.pr,
            sha=self.head,
            action="command",
            job_id=self.req.job_id,
        )
        result = await run_triage(
            self.gh,
            request,
            store=self.store,
            app_slug=self.env.repair.app_slug,
            known_fixers=self.env.repair.known_fixers,
            respect_pause=False,  # a person asked for it
        )
        return TriageDone(result.outcome, result.detail)

    async def failed_runs(self) -> list[JSONObject]:
        runs = await self.gh.list_check_runs_for_ref(self.req.owner, self.req.repo, self.head)
        return [
            r
            for r in runs
            if r.get("conclusion") in FAILED_CONCLUSIONS
            and r.get("name") != CHECK_NAME
            and (r.get("app") or {}).get("slug") != self.env.repair.app_slug
        ]

    async def workflow_run_of(self, check_run_id: int) -> int | None:
        # For GitHub Actions the check run id is the job id.
        job = await self.gh.get_job(self.req.owner, self.req.repo, check_run_id)
        return int(job["run_id"]) if job.get("run_id") is not None else None

    async def rerun_failed_jobs(self, run_id: int) -> None:
        await self.gh.rerun_failed_jobs(self.req.owner, self.req.repo, run_id)

    async def set_paused_label(self, paused: bool) -> None:
        label = (await self._repo_config()).labels.paused
        current = [
            str(label.get("name"))
            for label in self.pull.get("labels", [])
            if isinstance(label, dict)
        ]
        if paused:
            await self.reporter.labels(add=[label], current=current)
        else:
            await self.reporter.labels(remove=[label], current=current)

    async def set_status(self, text: str) -> None:
        await self.reporter.comment("status", text)

    async def set_buttons(self, verbs: Sequence[str]) -> None:
        for event in reversed(self.events):
            if event.kind == EventKind.CHECK_RUN and event.data.get("sha") == self.head:
                await self.gh.update_check_run(
                    self.req.owner,
                    self.req.repo,
                    int(event.data["id"]),
                    actions=[button_action(v) for v in verbs],
                )
                return

    async def _repo_config(self) -> RepoConfig:
        """Policy from the base branch (labels' names); the defaults when the file is invalid."""
        if self.config is None:
            text = await self.gh.get_content(
                self.req.owner, self.req.repo, CONFIG_PATH, str(self.pull["base"]["sha"])
            )
            names = self.env.repair.known_fixers
            self.config = load_config(text, known_fixers=names).config
        return self.config

    async def permission(self) -> str:
        key = (self.req.full_name.casefold(), self.req.actor.casefold())
        cached = self.env.permissions.get(key)
        if cached is not None:
            return cached
        permission = await self.gh.get_collaborator_permission(
            self.req.owner, self.req.repo, self.req.actor
        )
        self.env.permissions[key] = permission
        return permission


def _handled(events: Sequence[PrEvent], job_id: int) -> set[int]:
    return {
        int(e.data["index"])
        for e in events
        if e.kind == EventKind.COMMAND and e.job_id == job_id and "index" in e.data
    }


@dataclass
class _Decisions:
    accepted: list[tuple[int, CommandSpec, str | None]] = field(default_factory=list)
    refused: list[CommandSpec] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


async def _decide(
    ctx: PullContext, handled: set[int], report: CommandReport, common: JSONObject
) -> _Decisions:
    """Decide every command before running any: a refusal is answered once, and the 👀 goes
    out before a long repair starts. Unknown and refused commands are recorded here."""
    req, out = ctx.req, _Decisions()
    permission: str | None = None
    for index, command in enumerate(req.commands):
        spec = spec_for(command.verb) if command.known else None
        if spec is None:
            out.unknown.append(command.verb)
            report.unknown.append(command.verb[:40])
            if index not in handled:
                await ctx.record(
                    EventKind.COMMAND, index=index, verb=command.verb[:40], decision="unknown",
                    **common,
                )  # fmt: skip
            continue
        if permission is None and needs_permission_lookup(spec, private=req.private):
            permission = await ctx.permission()
        if may_run(spec, permission, private=req.private):
            out.accepted.append((index, spec, permission))
            continue
        out.refused.append(spec)
        report.refused.append(spec.verb)
        if index not in handled:
            await ctx.record(
                EventKind.COMMAND, index=index, verb=spec.verb, decision="refused",
                permission=permission or "none", needs=who_may_run(spec, private=req.private),
                **common,
            )  # fmt: skip
    return out


async def _run_verb(ctx: PullContext, spec: CommandSpec, report: CommandReport) -> VerbResult:
    await ctx.refresh()
    try:
        return await _VERBS[spec.verb].run(ctx)
    except ShepherdError as exc:
        req = ctx.req
        log.warning("command %s on %s#%s failed: %s", spec.verb, req.full_name, req.pr, exc)
        report.failed.append(spec.verb)
        return VerbResult(summary=f"{exc}"[:300], reply=render_failure(spec.verb, exc), ok=False)


async def _run_accepted(
    ctx: PullContext,
    decisions: _Decisions,
    handled: set[int],
    report: CommandReport,
    common: JSONObject,
) -> list[str]:
    """Run the accepted verbs in order; the replies they ask for."""
    replies: list[str] = []
    section_changed = False
    for index, spec, perm in decisions.accepted:
        report.accepted.append(spec.verb)
        if index in handled:
            continue  # done before a crash; its effects are already visible
        result = await _run_verb(ctx, spec, report)
        await ctx.record(
            EventKind.COMMAND, index=index, verb=spec.verb, decision="accepted",
            permission=perm or "not needed", result=result.summary, ok=result.ok, **common,
        )  # fmt: skip
        section_changed = section_changed or bool(result.summary)
        if result.reply:
            replies.append(result.reply)
    if section_changed:
        events = await ctx.reporter.events()
        await ctx.reporter.comment("command", render_command_section(events))
    return replies


async def _reply(ctx: PullContext, replies: Sequence[str]) -> bool:
    """Post the job's one reply, unless it was posted (and perhaps not recorded) before a crash."""
    req, reporter = ctx.req, ctx.reporter
    events = await reporter.events()
    if not replies or any(
        e.kind == EventKind.COMMAND_REPLY and e.job_id == req.job_id for e in events
    ):
        return False
    marker = f"<!-- shepherd:reply job={req.job_id} -->"
    # A crash between posting and recording must not post twice: look for our own reply (by its
    # per-job marker) before writing it.
    posted = next(
        (
            c
            for c in await ctx.gh.list_comments(req.owner, req.repo, req.pr)
            if marker in str(c.get("body") or "")
            and str((c.get("user") or {}).get("login", "")).lower() == reporter.bot_login
        ),
        None,
    )
    if posted is None:
        body = "\n\n".join([REPLY_MARKER, marker, *replies])
        posted = await ctx.gh.create_comment(req.owner, req.repo, req.pr, body)
    await ctx.record(EventKind.COMMAND_REPLY, id=int(posted["id"]))
    return True


async def run_commands(
    gh: CommandGitHub, req: CommandRequest, *, env: CommandEnv, store: Store
) -> CommandReport:
    """Authorize, acknowledge, run and report the commands of one comment or button click."""
    assert req.job_id is not None  # decoded from a leased job
    reporter = Reporter(
        gh, store, owner=req.owner, repo=req.repo, pr=req.pr,
        app_slug=env.repair.app_slug, job_id=req.job_id,
    )  # fmt: skip
    ctx = PullContext(gh=gh, req=req, env=env, reporter=reporter, store=store)
    await ctx.refresh()
    handled = _handled(ctx.events, req.job_id)
    report = CommandReport()
    common = {"actor": req.actor, "source": req.source, "comment_id": req.comment_id}
    decisions = await _decide(ctx, handled, report, common)
    if decisions.accepted and req.comment_id is not None:
        # Idempotent on GitHub's side: the same reaction again answers 200 with the existing one.
        await gh.create_reaction(req.owner, req.repo, req.comment_id, "eyes")
        report.reacted = True
    replies: list[str] = []
    if decisions.refused:
        refusal = render_refusal(
            req.actor, decisions.refused, repo=req.full_name, private=req.private, source=req.source
        )
        replies.append(refusal)
    if decisions.unknown:
        replies.append(render_unknown(decisions.unknown))
    replies += await _run_accepted(ctx, decisions, handled, report, common)
    report.replied = await _reply(ctx, replies)
    return report
