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

from bot.commands.explain import render_explain
from bot.commands.parse import (
    COMMAND_PREFIX,
    CommandSpec,
    Verb,
    button_action,
    render_help,
    spec_for,
)
from bot.github.webhooks import ACTIONS_APP_SLUG, FAILED_CONCLUSIONS
from bot.kernel.errors import ShepherdError
from bot.kernel.problems import Category, NextAction, Outcome, OutcomeKind
from bot.kernel.repoconfig import CONFIG_PATH, RepoConfig, load_config
from bot.kernel.target import RepoTarget
from bot.repair.job import RepairEnv, RepairGitHub, RepairRequest
from bot.reporting.report import Reporter
from bot.reporting.summary import CHECK_NAME, embed_outcome
from bot.store import EventSpec, PrEvent, Store
from bot.store.episodes import EventKind, budget_state, is_paused
from bot.triage.job import TriageGitHub, TriageRequest, run_triage

log = logging.getLogger(__name__)

JSONObject = dict[str, Any]

#: ``permission`` values of ``repos/get-collaborator-permission-level``. ``maintain`` and
#: ``triage`` show up as ``write``/``read`` there (the exact role is ``role_name``); both spellings
#: are accepted so a change on GitHub's side cannot silently lock maintainers out.
#: https://docs.github.com/rest/collaborators/collaborators#get-repository-permissions-for-a-user
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
READ_PERMISSIONS = WRITE_PERMISSIONS | {"triage", "read"}
#: How many handled commands the sticky comment's ``command`` section lists (newest last).
COMMAND_SECTION_ENTRIES = 5
REPLY_MARKER = "<!-- shepherd:reply -->"
PAUSED_STATUS = (
    "⏸️ **Shepherd is paused on this PR** — no automatic fixes, re-runs or pushes until someone "
    f"with write access comments `{COMMAND_PREFIX} resume`."
)

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


@dataclass(frozen=True)
class VerbResult:
    #: One line for the sticky comment's ``command`` section; empty when nothing changed there.
    summary: str = ""
    #: Text for the reply comment; empty when the visible change speaks for itself.
    reply: str = ""
    ok: bool = True


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


@dataclass
class _Ctx:
    gh: CommandGitHub
    req: CommandRequest
    env: CommandEnv
    store: Store
    reporter: Reporter
    pull: JSONObject = field(default_factory=dict)
    events: list[PrEvent] = field(default_factory=list)
    config: RepoConfig | None = None

    @property
    def head(self) -> str:
        return str(self.pull["head"]["sha"])

    @property
    def is_open(self) -> bool:
        return self.pull.get("state") == "open"

    def label_names(self) -> list[str]:
        return [
            str(label.get("name"))
            for label in self.pull.get("labels", [])
            if isinstance(label, dict)
        ]

    async def refresh(self) -> None:
        # Each verb sees the PR as the previous one left it (a fix moves the head).
        self.pull = await self.gh.get_pull(self.req.owner, self.req.repo, self.req.pr)
        self.events = await self.reporter.events()

    async def record(self, kind: str, **data: Any) -> None:
        await self.store.append_event(
            EventSpec(
                repo=self.req.full_name,
                pr=self.req.pr,
                kind=kind,
                data=data,
                job_id=self.req.job_id,
            )
        )

    async def repo_config(self) -> RepoConfig:
        """Policy from the base branch (labels' names); the defaults when the file is invalid."""
        if self.config is None:
            text = await self.gh.get_content(
                self.req.owner, self.req.repo, CONFIG_PATH, str(self.pull["base"]["sha"])
            )
            names = self.env.repair.known_fixers
            self.config = load_config(text, known_fixers=names).config
        return self.config

    async def failed_runs(self) -> list[JSONObject]:
        runs = await self.gh.list_check_runs_for_ref(self.req.owner, self.req.repo, self.head)
        return [
            r
            for r in runs
            if r.get("conclusion") in FAILED_CONCLUSIONS
            and r.get("name") != CHECK_NAME
            and (r.get("app") or {}).get("slug") != self.env.repair.app_slug
        ]

    async def set_buttons(self, verbs: Sequence[str]) -> None:
        """Swap the buttons on the head's ``shepherd`` check run, if Shepherd made one."""
        for event in reversed(self.events):
            if event.kind == EventKind.CHECK_RUN and event.data.get("sha") == self.head:
                await self.gh.update_check_run(
                    self.req.owner,
                    self.req.repo,
                    int(event.data["id"]),
                    actions=[button_action(v) for v in verbs],
                )
                return

    def repair_request(self, trigger: str) -> RepairRequest:
        return RepairRequest(
            installation=self.req.installation,
            owner=self.req.owner,
            repo=self.req.repo,
            sha=self.head,
            pr=self.req.pr,
            clone_url=self.req.clone_url,
            trigger=trigger,
            job_id=self.req.job_id,
        )


async def _fix(ctx: _Ctx) -> VerbResult:
    if not ctx.is_open:
        return VerbResult(reply="This pull request is closed; there is nothing to fix.")
    if is_paused(ctx.events):
        return VerbResult(
            reply=f"Shepherd is paused on this PR. Comment `{COMMAND_PREFIX} resume` first, "
            f"then `{COMMAND_PREFIX} fix`."
        )
    before = budget_state(ctx.events, ctx.head, head_has_trailer=False)
    head = ctx.head
    outcome = await ctx.env.run_repair(ctx.repair_request("command"))
    summary = f"{outcome.title} (head `{head[:7]}`)."
    if outcome.outcome is OutcomeKind.NOOP:
        # run_repair reports nothing when there is nothing to repair: say so here.
        detail = f" {outcome.detail}" if outcome.detail else ""
        return VerbResult(
            summary=summary,
            reply=f"{outcome.title} on `{head[:7]}`; nothing was changed.{detail}",
        )
    if outcome.outcome is OutcomeKind.HANDOFF and outcome.budget.ci_rounds_used >= 2:
        return VerbResult(
            summary=summary,
            reply=(
                f"This episode's budget is spent: `{head[:7]}` is Shepherd's own commit "
                "(CI round 2/2), and Shepherd never re-fixes its own work. A new push by "
                "someone other than Shepherd starts a new episode and re-arms "
                f"`{COMMAND_PREFIX} fix`."
            ),
        )
    needs_agent = any(f.category is Category.AGENT for f in outcome.failures)
    if outcome.outcome is OutcomeKind.HANDOFF and needs_agent and before.llm_attempts >= 1:
        return VerbResult(
            summary=summary,
            reply=(
                "This episode's budget is spent: the one LLM attempt was already used "
                f"({outcome.budget.describe()}). A new push by someone other than Shepherd "
                f"starts a new episode and re-arms `{COMMAND_PREFIX} fix`."
            ),
        )
    return VerbResult(summary=summary)


async def _retry(ctx: _Ctx) -> VerbResult:
    if not ctx.is_open:
        return VerbResult(reply="This pull request is closed; there is nothing to re-run.")
    if any(e.kind == EventKind.MANUAL_RERUN and e.job_id == ctx.req.job_id for e in ctx.events):
        # This job re-ran them before a crash; a second request would fail on running jobs.
        return VerbResult(summary=f"Re-ran the failed jobs of `{ctx.head[:7]}`.")
    failed = await ctx.failed_runs()
    actions = [r for r in failed if (r.get("app") or {}).get("slug") == ACTIONS_APP_SLUG]
    others = len(failed) - len(actions)
    run_ids: set[int] = set()
    for run in actions:
        # For GitHub Actions the check run id is the job id; its workflow run is re-run.
        job = await ctx.gh.get_job(ctx.req.owner, ctx.req.repo, int(run["id"]))
        if job.get("run_id") is not None:
            run_ids.add(int(job["run_id"]))
    elsewhere = (
        f" {others} failed check(s) come from other CI systems; re-run those there."
        if others
        else ""
    )
    if not run_ids:
        return VerbResult(
            reply=f"No failed GitHub Actions jobs on `{ctx.head[:7]}`; nothing was re-run."
            + elsewhere
        )
    await ctx.record(EventKind.MANUAL_RERUN, sha=ctx.head, runs=sorted(run_ids), by=ctx.req.actor)
    for run_id in sorted(run_ids):
        await ctx.gh.rerun_failed_jobs(ctx.req.owner, ctx.req.repo, run_id)
    return VerbResult(
        summary=f"Re-ran the failed jobs of {len(run_ids)} workflow run(s) on "
        f"`{ctx.head[:7]}`.{elsewhere}"
    )


async def _triage(ctx: _Ctx) -> VerbResult:
    if not ctx.is_open:
        return VerbResult(reply="This pull request is closed; there is nothing to triage.")
    result = await run_triage(
        ctx.gh,
        TriageRequest(
            installation=ctx.req.installation,
            owner=ctx.req.owner,
            repo=ctx.req.repo,
            pr=ctx.req.pr,
            sha=ctx.head,
            action="command",
            job_id=ctx.req.job_id,
        ),
        store=ctx.store,
        app_slug=ctx.env.repair.app_slug,
        known_fixers=ctx.env.repair.known_fixers,
        respect_pause=False,  # a person asked for it
    )
    if result.outcome == "triaged":
        return VerbResult(summary=f"Re-triaged `{ctx.head[:7]}`: labels and reviewers updated.")
    detail = f": {result.detail}" if result.detail else ""
    # A config error is on the check run; say it here too, since nothing else changed.
    return VerbResult(
        summary=f"Triage of `{ctx.head[:7]}`: {result.outcome}{detail}.",
        reply=f"Triage of `{ctx.head[:7]}` did not run ({result.outcome}{detail}).",
    )


async def _stop(ctx: _Ctx) -> VerbResult:
    if is_paused(ctx.events):
        return VerbResult(
            reply=f"Shepherd is already paused on this PR; `{COMMAND_PREFIX} resume` re-arms it."
        )
    await ctx.record(EventKind.PAUSED, by=ctx.req.actor, source=ctx.req.source, sha=ctx.head)
    config = await ctx.repo_config()
    await ctx.reporter.labels(add=[config.labels.paused], current=ctx.label_names())
    await ctx.reporter.comment("status", PAUSED_STATUS)
    await ctx.set_buttons([Verb.resume])
    return VerbResult(
        summary=f"Paused: no automatic fixes, re-runs or pushes until `{COMMAND_PREFIX} resume`."
    )


async def _resume(ctx: _Ctx) -> VerbResult:
    if not is_paused(ctx.events):
        return VerbResult(reply="Shepherd is not paused on this PR; there is nothing to resume.")
    await ctx.record(EventKind.RESUMED, by=ctx.req.actor, source=ctx.req.source, sha=ctx.head)
    config = await ctx.repo_config()
    await ctx.reporter.labels(remove=[config.labels.paused], current=ctx.label_names())
    await ctx.reporter.comment("status", "")
    if not ctx.is_open or not await ctx.failed_runs():
        await ctx.set_buttons([Verb.stop])
        return VerbResult(summary=f"Resumed. No failed checks on `{ctx.head[:7]}` right now.")
    head = ctx.head
    # Resuming re-arms the automatic behaviour, so the repair runs as if CI had just failed (the
    # LLM rung follows the policy for automatic repairs, not the one for `/shepherd fix`).
    outcome = await ctx.env.run_repair(ctx.repair_request("resume"))
    return VerbResult(summary=f"Resumed; repair of `{head[:7]}`: {outcome.title}.")


async def _explain(ctx: _Ctx) -> VerbResult:
    return VerbResult(reply=render_explain(ctx.events, head_sha=ctx.head))


async def _help(ctx: _Ctx) -> VerbResult:
    return VerbResult(reply=render_help(ctx.env.repair.app_slug))


VERBS: dict[str, Callable[[_Ctx], Awaitable[VerbResult]]] = {
    Verb.fix: _fix,
    Verb.retry: _retry,
    Verb.triage: _triage,
    Verb.stop: _stop,
    Verb.resume: _resume,
    Verb.explain: _explain,
    Verb.help: _help,
}


async def _permission(ctx: _Ctx) -> str:
    key = (ctx.req.full_name.casefold(), ctx.req.actor.casefold())
    cached = ctx.env.permissions.get(key)
    if cached is not None:
        return cached
    permission = await ctx.gh.get_collaborator_permission(
        ctx.req.owner, ctx.req.repo, ctx.req.actor
    )
    ctx.env.permissions[key] = permission
    return permission


def _handled(events: Sequence[PrEvent], job_id: int) -> set[int]:
    return {
        int(e.data["index"])
        for e in events
        if e.kind == EventKind.COMMAND and e.job_id == job_id and "index" in e.data
    }


async def run_commands(
    gh: CommandGitHub,
    req: CommandRequest,
    *,
    env: CommandEnv,
    store: Store,
) -> CommandReport:
    """Authorize, acknowledge, run and report the commands of one comment or button click."""
    assert req.job_id is not None  # decoded from a leased job
    reporter = Reporter(
        gh,
        store,
        owner=req.owner,
        repo=req.repo,
        pr=req.pr,
        app_slug=env.repair.app_slug,
        job_id=req.job_id,
    )
    ctx = _Ctx(gh=gh, req=req, env=env, store=store, reporter=reporter)
    await ctx.refresh()
    handled = _handled(ctx.events, req.job_id)
    report = CommandReport()
    common = {"actor": req.actor, "source": req.source, "comment_id": req.comment_id}

    # Decide every command before running any: a refusal is answered once, and the 👀 goes
    # out before a long repair starts.
    accepted: list[tuple[int, CommandSpec, str | None]] = []
    refused: list[CommandSpec] = []
    unknown: list[str] = []
    permission: str | None = None
    for index, command in enumerate(req.commands):
        spec = spec_for(command.verb) if command.known else None
        if spec is None:
            unknown.append(command.verb)
            report.unknown.append(command.verb[:40])
            if index not in handled:
                await ctx.record(
                    EventKind.COMMAND,
                    index=index,
                    verb=command.verb[:40],
                    decision="unknown",
                    **common,
                )
            continue
        if permission is None and needs_permission_lookup(spec, private=req.private):
            permission = await _permission(ctx)
        if may_run(spec, permission, private=req.private):
            accepted.append((index, spec, permission))
            continue
        refused.append(spec)
        report.refused.append(spec.verb)
        if index not in handled:
            await ctx.record(
                EventKind.COMMAND,
                index=index,
                verb=spec.verb,
                decision="refused",
                permission=permission or "none",
                needs=who_may_run(spec, private=req.private),
                **common,
            )

    if accepted and req.comment_id is not None:
        # Idempotent on GitHub's side: the same reaction again answers 200 with the existing one.
        await gh.create_reaction(req.owner, req.repo, req.comment_id, "eyes")
        report.reacted = True

    replies: list[str] = []
    if refused:
        replies.append(
            render_refusal(
                req.actor, refused, repo=req.full_name, private=req.private, source=req.source
            )
        )
    if unknown:
        replies.append(render_unknown(unknown))

    section_changed = False
    for index, spec, perm in accepted:
        report.accepted.append(spec.verb)
        if index in handled:
            continue  # done before a crash; its effects are already visible
        await ctx.refresh()
        try:
            result = await VERBS[spec.verb](ctx)
        except ShepherdError as exc:
            log.warning("command %s on %s#%s failed: %s", spec.verb, req.full_name, req.pr, exc)
            result = VerbResult(
                summary=f"{exc}"[:300], reply=render_failure(spec.verb, exc), ok=False
            )
            report.failed.append(spec.verb)
        await ctx.record(
            EventKind.COMMAND,
            index=index,
            verb=spec.verb,
            decision="accepted",
            permission=perm or "not needed",
            result=result.summary,
            ok=result.ok,
            **common,
        )
        section_changed = section_changed or bool(result.summary)
        if result.reply:
            replies.append(result.reply)

    if section_changed:
        await reporter.comment("command", render_command_section(await reporter.events()))
    events = await reporter.events()
    already_replied = any(
        e.kind == EventKind.COMMAND_REPLY and e.job_id == req.job_id for e in events
    )
    if replies and not already_replied:
        marker = f"<!-- shepherd:reply job={req.job_id} -->"
        # A crash between posting and recording must not post twice: look for our own reply
        # (by its per-job marker) before writing it.
        posted = next(
            (
                c
                for c in await gh.list_comments(req.owner, req.repo, req.pr)
                if marker in str(c.get("body") or "")
                and str((c.get("user") or {}).get("login", "")).lower() == reporter.bot_login
            ),
            None,
        )
        if posted is None:
            body = "\n\n".join([REPLY_MARKER, marker, *replies])
            posted = await gh.create_comment(req.owner, req.repo, req.pr, body)
        await ctx.record(EventKind.COMMAND_REPLY, id=int(posted["id"]))
        report.replied = True
    return report
