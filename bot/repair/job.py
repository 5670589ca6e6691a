"""The server's repair job: the blueprint with its GitHub edges.

Fetch the PR and config (base SHA) → wait for the head's checks to settle → download and distil
the failed jobs' logs → classify → plan → re-run, or check out, fix, verify, commit through the
Git Data API and move the branch without force → report. Every GitHub write is recorded in the
PR's event log before and after, so a job retried after a crash continues instead of repeating.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

from bot.diagnosis.classify import file_locations
from bot.diagnosis.logs import distill_steps
from bot.diagnosis.workflows import is_workflow_command, workflow_commands
from bot.git.workspace import (
    FileChange,
    Workspaces,
    Worktree,
    changes_between,
    commit,
    push,
    read_tree_files,
    tree_diff,
    tree_of,
    with_trailers,
)
from bot.github.resources import (
    ActionsJob,
    CheckRun,
    CommitComparison,
    CreatedCommit,
    GitRef,
    PullFile,
    PullRequest,
    parse_list,
)
from bot.github.webhooks import ACTIONS_APP_SLUG, FAILED_CONCLUSIONS
from bot.jobenv.environment import EnvironmentsFactory
from bot.jobenv.workflow import WorkflowJob
from bot.kernel import JSONObject
from bot.kernel.errors import GitHubError, PushRejected, SandboxUnavailable, WorkspaceError
from bot.kernel.problems import Budget, Category, NextAction, Outcome, OutcomeKind
from bot.kernel.repoconfig import CONFIG_PATH, RepoConfig, load_config
from bot.kernel.target import JOB_TRAILER, RepoTarget
from bot.llm.agent import AgentFixResult, PRContext
from bot.llm.agent import commit_message as agent_commit_message
from bot.repair.blueprint import (
    Diagnosis,
    LlmGate,
    Plan,
    Step,
    TreeRepair,
    diagnose_steps,
    job_environments,
    locate_jobs,
    outcome_for,
    plan_repair,
    repair_tree,
)
from bot.reporting.report import Reporter, ReportGitHub
from bot.reporting.suggestions import suggestions
from bot.reporting.summary import Button, render_check_run, render_outcome_markdown
from bot.sandbox import Runner
from bot.store import PrEvent, Store
from bot.store.episodes import (
    BudgetState,
    EventKind,
    budget_state,
    last_event,
    our_push,
    pending_push,
)
from bot.triage.rules import detect_agent
from fixers.base import Fixer, WorktreeFiles
from fixers.command import NAME as COMMAND_FIXER
from fixers.command import repo_fixers

log = logging.getLogger(__name__)

#: Suggestions are posted as review comments only for small patches; larger ones go in the
#: summary as a diff with the command to apply it.
MAX_SUGGESTION_LINES = 80


class RepairGitHub(ReportGitHub, Protocol):
    """Every GitHub operation the repair job uses (all in the OpenAPI subset)."""

    async def get_pull(self, owner: str, repo: str, number: int) -> JSONObject: ...
    async def list_pull_files(self, owner: str, repo: str, number: int) -> list[JSONObject]: ...
    async def list_pulls_for_commit(self, owner: str, repo: str, sha: str) -> list[JSONObject]: ...
    async def get_content(self, owner: str, repo: str, path: str, ref: str) -> str | None: ...
    async def compare(self, owner: str, repo: str, base: str, head: str) -> JSONObject: ...
    async def download_job_log(self, owner: str, repo: str, job_id: int) -> str: ...
    async def get_job(self, owner: str, repo: str, job_id: int) -> JSONObject: ...
    async def rerun_failed_jobs(self, owner: str, repo: str, run_id: int) -> None: ...
    async def get_ref(self, owner: str, repo: str, ref: str) -> JSONObject: ...
    async def create_blob(
        self, owner: str, repo: str, content: str, *, encoding: str = ...
    ) -> str: ...
    async def create_tree(
        self, owner: str, repo: str, entries: Sequence[Any], *, base_tree: str | None = ...
    ) -> str: ...
    async def create_commit(
        self,
        owner: str,
        repo: str,
        *,
        message: str,
        tree: str,
        parents: Sequence[str],
        author: Mapping[str, str] | None = ...,
    ) -> JSONObject: ...
    async def update_ref(
        self, owner: str, repo: str, ref: str, sha: str, *, force: bool = ...
    ) -> JSONObject: ...
    async def create_review(
        self,
        owner: str,
        repo: str,
        number: int,
        *,
        body: str,
        event: str = ...,
        commit_id: str | None = ...,
        comments: Sequence[Mapping[str, Any]] = ...,
    ) -> JSONObject: ...


class RepairRequest(RepoTarget):
    KIND: ClassVar[str] = "repair"

    sha: str
    #: None until found: fork PRs' and ``workflow_job`` events name no PR.
    pr: int | None = None
    clone_url: str
    trigger: str = "check"  # workflow_job | workflow_run | check_run | command | resume
    #: The CI run attempt that failed (part of the job key: a re-run's failure is a new job).
    attempt: int = 1


class AgentBuilder(Protocol):
    """Builds the LLM rung for one repair, or says why it is skipped."""

    def __call__(self, config: RepoConfig, pr: PRContext) -> tuple[Fixer | None, str]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class RepairEnv:
    """The edges the repair uses besides GitHub: passed explicitly, built once per process."""

    app_slug: str
    fixers: Sequence[Fixer]
    workspaces: Workspaces
    #: The sandbox; raises SandboxUnavailable when untrusted code cannot be run safely.
    runner_factory: Callable[[], Runner]
    agent_factory: AgentBuilder
    #: A command verb as a check-run button (``bot.commands`` sits above the repair).
    button: Callable[[str], Button]
    settle_timeout: float = 600.0
    settle_poll: float = 15.0
    #: Rebuilds failed CI jobs to reproduce and verify in; None verifies in the plain sandbox.
    environments: EnvironmentsFactory | None = None

    @property
    def known_fixers(self) -> list[str]:
        """Names ``.github/shepherd.yml`` may switch: the fixers and the LLM rung."""
        return [f.name for f in self.fixers] + ["agent", COMMAND_FIXER]


async def find_pull(gh: RepairGitHub, req: RepairRequest) -> JSONObject | None:
    """The open PR whose head is ``req.sha``, as GitHub answered it (for the job router above
    the repair; the repair itself reads :func:`open_pull`)."""
    if req.pr is not None:
        raw = await gh.get_pull(req.owner, req.repo, req.pr)
        return raw if PullRequest.model_validate(raw).is_open else None
    for raw in await gh.list_pulls_for_commit(req.owner, req.repo, req.sha):
        pull = PullRequest.model_validate(raw)
        if pull.is_open and pull.head.sha == req.sha:
            return raw
    return None


async def open_pull(gh: RepairGitHub, req: RepairRequest) -> PullRequest | None:
    """The open PR whose head is ``req.sha``. Fork PRs are found by head SHA, since GitHub leaves
    ``pull_requests`` empty in check payloads for them."""
    raw = await find_pull(gh, req)
    return PullRequest.model_validate(raw) if raw is not None else None


async def wait_for_settled(
    gh: RepairGitHub, req: RepairRequest, *, app_slug: str, settle_timeout: float, poll: float
) -> list[CheckRun]:
    """The head SHA's check runs (not ours) once none is still running, or after ``timeout``."""
    deadline = time.monotonic() + settle_timeout
    while True:
        runs = [
            r
            for r in parse_list(
                CheckRun, await gh.list_check_runs_for_ref(req.owner, req.repo, req.sha)
            )
            if r.app_slug != app_slug and r.name != "shepherd"
        ]
        if all(r.status == "completed" for r in runs) or time.monotonic() >= deadline:
            return runs
        await asyncio.sleep(poll)


async def _diagnose_run(
    gh: RepairGitHub, req: RepairRequest, run: CheckRun, *, fixers: Sequence[Fixer], wt: Worktree
) -> list[Diagnosis]:
    """One diagnosis per failed step of the check run's job."""
    job_id = run.id if run.app_slug == ACTIONS_APP_SLUG else None
    run_id: int | None = None
    if job_id is not None:
        # For GitHub Actions the check run id is the job id.
        raw = await gh.download_job_log(req.owner, req.repo, job_id)
        job = ActionsJob.model_validate(await gh.get_job(req.owner, req.repo, job_id))
        run_id = job.run_id
    else:
        output = run.output
        raw = "\n".join(part or "" for part in (output.title, output.summary, output.text))
    return diagnose_steps(
        run.name or "check",
        distill_steps(raw),
        fixers=fixers,
        repo=WorktreeFiles(wt.path),
        job_conclusion=run.conclusion or "",
        job_id=job_id,
        run_id=run_id,
    )


def annotations_for(diagnoses: Sequence[Diagnosis]) -> list[JSONObject]:
    out: list[JSONObject] = []
    for d in diagnoses:
        for loc in file_locations(d.log)[:50]:
            out.append(
                {
                    "path": loc.path,
                    "start_line": loc.line,
                    "end_line": loc.line,
                    "annotation_level": "failure",
                    "message": (loc.message or d.classification.reason)[:500] or d.name,
                    "title": d.name[:200],
                }
            )
    return out


def buttons_for(
    outcome: Outcome, button: Callable[[str], Button], *, paused: bool = False
) -> list[Button]:
    """The check run's buttons for ``outcome``: which verbs the repair offers; ``button`` (the
    command grammar, a layer above) says how each is labelled."""
    verbs = ["stop"]
    if paused:
        # Paused: the one useful button re-arms Shepherd (`/shepherd resume`).
        verbs = ["resume"]
    elif outcome.outcome is OutcomeKind.HANDOFF:
        verbs = ["fix", "retry", "stop"] if outcome.retryable else ["fix", "stop"]
    elif outcome.outcome is OutcomeKind.RERUN:
        verbs = ["stop"]
    return [button(verb) for verb in verbs][:3]


def _commit_message(
    config: RepoConfig, req: RepairRequest, plan: Plan, repair: TreeRepair, *, app_slug: str
) -> str:
    agent = repair.agent_result
    if isinstance(agent, AgentFixResult) and agent.outcome is not None and agent.changed:
        # The commit says it was an LLM repair, with which model, and what the agent explained.
        message = agent_commit_message(agent.outcome, agent.outcome.model)
    else:
        fixers = [name for name, _ in plan.fixers]
        message = config.autofix.render_commit_message(
            fixers=fixers, head_sha=req.sha, pr=req.pr or 0
        )
    trailers = [(JOB_TRAILER, f"{req.full_name}#{req.pr}/{req.job_id}")]
    if config.autofix.signoff:
        trailers.append(
            ("Signed-off-by", f"{app_slug}[bot] <{app_slug}[bot]@users.noreply.github.com>")
        )
    return with_trailers(message, trailers)


@dataclass(frozen=True)
class _Repair:
    """One repair job's fixed inputs, read once before the worktree is checked out."""

    gh: RepairGitHub
    req: RepairRequest
    pull: PullRequest
    env: RepairEnv
    config: RepoConfig
    reporter: Reporter
    state: BudgetState
    is_agent_pr: bool
    token: str | None

    async def record(self, kind: str, **data: object) -> None:
        await self.reporter.record(kind, **data)


async def run_repair(
    gh: RepairGitHub,
    req: RepairRequest,
    *,
    env: RepairEnv,
    store: Store,
    token: str | None,
) -> Outcome:
    pull = await open_pull(gh, req)
    if pull is None:
        log.info("no open PR has head %s; nothing to repair", req.sha[:12])
        return Outcome(title="No open pull request for this commit", outcome=OutcomeKind.NOOP)
    req = req.model_copy(update={"pr": pull.number})
    reporter = Reporter(
        gh,
        store,
        owner=req.owner,
        repo=req.repo,
        pr=pull.number,
        app_slug=env.app_slug,
        job_id=req.job_id,
    )
    # Policy comes from the base branch: a PR cannot change its own rules.
    config_text = await gh.get_content(req.owner, req.repo, CONFIG_PATH, pull.base.sha)
    loaded = load_config(config_text, known_fixers=env.known_fixers)
    await reporter.record(
        EventKind.CONFIG, sha=pull.base.sha, from_file=loaded.from_file, ok=loaded.ok
    )
    if not loaded.ok:
        assert loaded.error is not None
        return await reporter.config_problem(req.sha, loaded.error)
    config = loaded.config
    events = await reporter.events()
    recovered = await _recover_push(gh, req, pull, events, reporter)
    if recovered is not None:
        # A crash came after the push and before the report: the report is still owed.
        await _report(reporter, req, recovered, [], config, pull=pull, button=env.button)
        return recovered
    if pull.head.sha != req.sha:
        return Outcome(
            title="Superseded by a newer push",
            outcome=OutcomeKind.NOOP,
            detail=f"The PR head is now {pull.head.sha[:12]}.",
        )
    return await _run_on_head(gh, req, pull, env, config, reporter, events, token)


async def _run_on_head(
    gh: RepairGitHub,
    req: RepairRequest,
    pull: PullRequest,
    env: RepairEnv,
    config: RepoConfig,
    reporter: Reporter,
    events: Sequence[PrEvent],
    token: str | None,
) -> Outcome:
    """The repair of the PR's current head: wait for its checks, then repair the failed ones
    in a worktree and report."""
    runs = await wait_for_settled(
        gh, req, app_slug=env.app_slug, settle_timeout=env.settle_timeout, poll=env.settle_poll
    )
    failed = [r for r in runs if r.conclusion in FAILED_CONCLUSIONS]
    comparison = CommitComparison.model_validate(
        await gh.compare(req.owner, req.repo, pull.base.sha, req.sha)
    )
    messages = comparison.messages
    head_has_trailer = bool(messages) and f"\n{JOB_TRAILER}:" in messages[-1]
    state = budget_state(events, req.sha, head_has_trailer=head_has_trailer)
    verdict = detect_agent(
        author_login=pull.user.login,
        author_type=pull.user.type,
        body=pull.body,
        commit_messages=messages,
        head_ref=pull.head.ref,
        configured_logins=config.triage.agent_logins,
        shepherd_login=f"{env.app_slug}[bot]",
    )
    if not failed:
        return Outcome(title="No failed checks", outcome=OutcomeKind.NOOP, budget=state.budget())
    job = _Repair(gh, req, pull, env, config, reporter, state, verdict.is_agent, token)
    diagnoses, outcome = await _repair_failed(job, failed)
    await _report(
        reporter, req, outcome, diagnoses, config, pull=pull, button=env.button, paused=state.paused
    )
    return outcome


async def _repair_failed(
    job: _Repair, failed: Sequence[CheckRun]
) -> tuple[list[Diagnosis], Outcome]:
    """Check out the head, diagnose the failed check runs, plan the rung and take it."""
    req, env, config = job.req, job.env, job.config
    fixers = [*env.fixers, *repo_fixers(config)]
    pr_files = await _pull_files(job.gh, req, job.pull.number)
    agent, why_not = env.agent_factory(
        config, PRContext(title=job.pull.title, body=job.pull.body or "")
    )
    gate = _llm_gate(
        config, trigger=req.trigger, is_agent_pr=job.is_agent_pr, agent=agent, why_not=why_not
    )
    async with env.workspaces.checkout(
        req.clone_url,
        req.full_name,
        req.sha,
        job_id=f"job-{req.job_id}",
        token=job.token,
        fetch_ref=f"refs/pull/{job.pull.number}/head",
    ) as wt:
        diagnoses, jobs = await _diagnose(job, failed, fixers, wt)
        if gate.allowed and any(
            d.classification.category is Category.AGENT and not d.command_trusted for d in diagnoses
        ):
            gate = LlmGate(
                False,
                "the failing command is not in the base branch's workflows, so the LLM "
                "repair could not check its work",
            )
        await job.record(
            EventKind.CLASSIFIED, sha=req.sha, failures=[_classified(d) for d in diagnoses]
        )
        plan = plan_repair(
            diagnoses,
            state=job.state,
            config=config,
            is_agent_pr=job.is_agent_pr,
            llm=gate,
            order=[f.name for f in fixers],
        )
        tools = _Tools(fixers, agent, jobs, pr_files)
        outcome = await _execute(job, wt, diagnoses, plan, tools)
    return diagnoses, outcome


async def _diagnose(
    job: _Repair, failed: Sequence[CheckRun], fixers: Sequence[Fixer], wt: Worktree
) -> tuple[list[Diagnosis], dict[str, WorkflowJob]]:
    """Diagnose every failed check run, and find each failed job in the base's workflows."""
    diagnoses = [
        d for r in failed for d in await _diagnose_run(job.gh, job.req, r, fixers=fixers, wt=wt)
    ]
    # Only commands the maintainers' workflows run (at the base SHA) are ever executed,
    # and each failed job is rebuilt from those workflows, never from the PR's.
    workflow_files = await read_tree_files(wt, job.pull.base.sha, ".github/workflows")
    workflows = workflow_commands(workflow_files)
    diagnoses = [
        replace(d, command_trusted=is_workflow_command(d.log.command, workflows)) for d in diagnoses
    ]
    return locate_jobs(diagnoses, workflow_files)


def _classified(d: Diagnosis) -> JSONObject:
    """One failure as the ``classified`` event records it."""
    return {
        "job": d.name,
        "step": d.log.step,
        "category": d.classification.category.value,
        "confidence": d.classification.confidence.value,
        "fixers": list(d.classification.fixers),
        "reason": d.classification.reason,
        "evidence": list(d.classification.evidence)[:3],
    }


#: ``pulls/list-files`` lists at most 3000 files; a longer list is not the whole PR.
_MAX_LISTED_FILES = 3000


async def _pull_files(gh: RepairGitHub, req: RepairRequest, pr: int) -> frozenset[str] | None:
    """The paths the pull request changes (renamed files under both names), or None when they
    cannot be known: then ``autofix.scope: changed`` cannot apply and every file is in scope."""
    try:
        entries = parse_list(PullFile, await gh.list_pull_files(req.owner, req.repo, pr))
    except GitHubError as exc:
        log.info("the PR's files are not known (%s): every file is in scope", exc)
        return None
    if len(entries) >= _MAX_LISTED_FILES:
        return None
    paths = {e.filename for e in entries if e.filename}
    paths |= {e.previous_filename for e in entries if e.previous_filename}
    return frozenset(paths)


def _llm_gate(
    config: RepoConfig, *, trigger: str, is_agent_pr: bool, agent: Fixer | None, why_not: str
) -> LlmGate:
    if agent is None:
        return LlmGate(False, why_not)
    mode = config.llm.mode
    if mode == "off":
        return LlmGate(False, "LLM repair is off in .github/shepherd.yml")
    if trigger == "command":
        return LlmGate(True)
    if mode == "auto" and is_agent_pr:
        return LlmGate(True)
    return LlmGate(
        False,
        "LLM repair runs on `/shepherd fix` for this PR (policy: "
        f"{mode}{', human PR' if not is_agent_pr else ''})",
    )


@dataclass(frozen=True)
class _Tools:
    """What the fix rung may use: the fixers, the LLM rung, the failed jobs to rebuild, and
    the PR's files (None: not known)."""

    fixers: Sequence[Fixer]
    agent: Fixer | None
    jobs: Mapping[str, WorkflowJob]
    pr_files: frozenset[str] | None


@dataclass(frozen=True)
class _Fix:
    """A verified fix on its way to the branch: what was diagnosed, planned, and changed."""

    diagnoses: Sequence[Diagnosis]
    plan: Plan
    repair: TreeRepair
    budget: Budget
    patch: str | None
    before: str
    fixed: str

    def outcome(self, *, pushed: str | None = None, push_note: str | None = None) -> Outcome:
        return outcome_for(
            self.diagnoses,
            self.plan,
            budget=self.budget,
            repair=self.repair,
            patch=self.patch,
            pushed=pushed,
            push_note=push_note,
        )


async def _execute(
    job: _Repair, wt: Worktree, diagnoses: Sequence[Diagnosis], plan: Plan, tools: _Tools
) -> Outcome:
    """Take the planned rung: re-run, hand off, or fix, verify and push."""
    if plan.step is Step.RERUN:
        return await _rerun(job, diagnoses, plan)
    if plan.step is not Step.FIX:
        return outcome_for(diagnoses, plan, budget=job.state.budget())
    repair = await _fix_tree(job, wt, diagnoses, plan, tools)
    if isinstance(repair, Outcome):
        return repair
    budget = job.state.budget(llm_used_now=1 if repair.agent_result else 0)
    if repair.unsafe is not None:
        # PR code wrote git metadata: the tree is not read again (no diff, no patch, no push).
        return outcome_for(diagnoses, plan, budget=budget, repair=repair)
    # The fix is what the fixers and the agent changed: not what setup steps or the
    # verification left in the tree.
    before, fixed = repair.before_tree, repair.fixed_tree
    patch = None
    if repair.changed and before and fixed:
        patch = await asyncio.to_thread(tree_diff, wt, before, fixed)
    if not (repair.changed and repair.verified) or not (before and fixed):
        return outcome_for(diagnoses, plan, budget=budget, repair=repair, patch=patch)
    return await _deliver(job, wt, _Fix(diagnoses, plan, repair, budget, patch, before, fixed))


async def _rerun(job: _Repair, diagnoses: Sequence[Diagnosis], plan: Plan) -> Outcome:
    """Re-run the workflow runs of the infrastructure failures, once per head SHA."""
    run_ids = sorted(
        {
            d.run_id
            for d in diagnoses
            if d.run_id is not None and d.classification.category is Category.INFRA
        }
    )
    await job.record(EventKind.RERUN, sha=job.req.sha, runs=run_ids)
    for run_id in run_ids:
        await job.gh.rerun_failed_jobs(job.req.owner, job.req.repo, run_id)
    return outcome_for(diagnoses, plan, budget=job.state.budget(rerun_now=True))


async def _fix_tree(
    job: _Repair, wt: Worktree, diagnoses: Sequence[Diagnosis], plan: Plan, tools: _Tools
) -> TreeRepair | Outcome:
    """Run the plan's fixers (and the LLM rung) in the sandbox, in the failed jobs' rebuilt
    environments; an outcome instead when there is no sandbox to run them in."""
    env = job.env
    try:
        runner = env.runner_factory()
    except SandboxUnavailable as exc:
        return Outcome(
            title="Sandbox unavailable: nothing was run",
            detail=str(exc),
            outcome=OutcomeKind.HANDOFF,
            owner_action_required=True,
            next_action=NextAction.CONFIGURE,
            failures=[d.record() for d in diagnoses],
            budget=job.state.budget(),
        )
    if plan.use_agent:
        await job.record(EventKind.LLM_ATTEMPT, sha=job.req.sha)
    environments = env.environments.for_runner(runner) if env.environments else None
    try:
        async with job_environments(
            environments, wt, tools.jobs, key=f"job-{job.req.job_id}", name=job.req.repo
        ) as prepared:
            return await repair_tree(
                wt,
                diagnoses,
                plan,
                fixers=tools.fixers,
                runner=runner,
                config=job.config,
                agent=tools.agent if plan.use_agent else None,
                prepared=prepared,
                pr_files=tools.pr_files,
                repository=job.req.full_name,
            )
    finally:
        if environments is not None:
            await environments.aclose()


async def _deliver(job: _Repair, wt: Worktree, fix: _Fix) -> Outcome:
    """Push a verified fix to the PR's branch, or post it for review where it may not go."""
    if fix.repair.behaviour_changes and job.config.autofix.behaviour_changes != "push":
        return await _post_for_review(job, fix)
    pull = job.pull
    head_repo = pull.head.repo.full_name if pull.head.repo else None
    target: tuple[str, str] | None = None
    if head_repo != job.req.full_name:
        if not head_repo or not pull.maintainer_can_modify:
            await _suggest(job.gh, job.req, fix.patch or "")
            why = (
                "The PR comes from a fork that does not allow edits by maintainers."
                if head_repo
                else "The PR's head repository is gone."
            )
            return fix.outcome(push_note=_local_apply_note(pull, why))
        owner, _, name = head_repo.partition("/")
        target = (owner, name)
    changes = await asyncio.to_thread(changes_between, wt, fix.before, fix.fixed)
    message = _commit_message(job.config, job.req, fix.plan, fix.repair, app_slug=job.env.app_slug)
    new_sha, via = await _make_commit(job, wt, fix, changes, message, target)
    await job.record(
        EventKind.PUSH_INTENT,
        expected_sha=job.req.sha,
        new_sha=new_sha,
        branch=pull.head.ref,
        repo=head_repo,
        via=via,
    )
    refused = await _move_branch(job, wt, fix, new_sha, via=via, target=target)
    if refused is not None:
        return refused
    await job.record(
        EventKind.PUSHED,
        expected_sha=job.req.sha,
        new_sha=new_sha,
        files=[c.path for c in changes],
    )
    outcome = replace(fix, budget=fix.budget.model_copy(update={"ci_rounds_used": 2})).outcome(
        pushed=new_sha
    )
    if target is not None:
        outcome = outcome.model_copy(
            update={"detail": f"{outcome.detail} Pushed to {head_repo} (maintainer edits allowed)."}
        )
    return outcome


async def _post_for_review(job: _Repair, fix: _Fix) -> Outcome:
    """A fix that may change what the code does is a reviewer's call: suggest, do not push."""
    await _suggest(
        job.gh,
        job.req,
        fix.patch or "",
        intro="Shepherd verified this fix; it may change behaviour.",
    )
    outcome = fix.outcome(
        push_note=(
            "The fix may change behaviour ("
            + "; ".join(fix.repair.behaviour_changes)
            + "), so it is posted for review instead of pushed "
            "(`autofix.behaviour_changes: push` in .github/shepherd.yml pushes such fixes)."
        )
    )
    return outcome.model_copy(
        update={
            "title": "Fix verified; posted for review (it may change behaviour)",
            "next_action": NextAction.REVIEW,
        }
    )


async def _make_commit(
    job: _Repair,
    wt: Worktree,
    fix: _Fix,
    changes: Sequence[FileChange],
    message: str,
    target: tuple[str, str] | None,
) -> tuple[str, str]:
    """Create the fix's commit on the head: (its SHA, ``api`` or ``git``)."""
    base_tree = await asyncio.to_thread(tree_of, wt, wt.sha)
    try:
        sha = await _commit_via_api(
            job.gh, job.req, changes, message=message, base_tree=base_tree, target=target
        )
    except GitHubError as exc:
        if target is None or exc.status not in (403, 404):
            raise
        # The installation cannot write the fork through the API (it is installed on the base
        # repository only): git push with the token is what "Allow edits by maintainers" lets
        # the base repository's maintainers do.
        log.info("fork %s/%s refuses the Git Data API (%s); pushing with git", *target, exc.status)
        slug = job.env.app_slug
        made = await commit(
            wt,
            message,
            author_name=f"{slug}[bot]",
            author_email=f"{slug}[bot]@users.noreply.github.com",
            parent=job.req.sha,
            tree=fix.fixed,
        )
        assert made is not None  # the repair changed files
        return made, "git"
    return sha, "api"


async def _commit_via_api(
    gh: RepairGitHub,
    req: RepairRequest,
    changes: Sequence[FileChange],
    *,
    message: str,
    base_tree: str,
    target: tuple[str, str] | None = None,
) -> str:
    """Create the commit through the Git Data API, so GitHub signs it as the App ("Verified"),
    in the base repository or (``target``) the head repository of a fork."""
    owner, repo = target or (req.owner, req.repo)
    entries: list[JSONObject] = []
    for change in changes:
        if change.content is None:
            entries.append({"path": change.path, "mode": change.mode, "type": "blob", "sha": None})
            continue
        blob = await gh.create_blob(
            owner, repo, base64.b64encode(change.content).decode(), encoding="base64"
        )
        entries.append({"path": change.path, "mode": change.mode, "type": "blob", "sha": blob})
    tree = await gh.create_tree(owner, repo, entries, base_tree=base_tree)
    made = await gh.create_commit(owner, repo, message=message, tree=tree, parents=[req.sha])
    return CreatedCommit.model_validate(made).sha


async def _move_branch(
    job: _Repair,
    wt: Worktree,
    fix: _Fix,
    new_sha: str,
    *,
    via: str,
    target: tuple[str, str] | None,
) -> Outcome | None:
    """Move the PR's branch to ``new_sha`` without force (the expected head is the lease);
    None when it moved, else the outcome of the refusal."""
    req, head = job.req, job.pull.head
    try:
        if via == "git":
            clone_url = head.repo.clone_url if head.repo else ""
            await push(
                wt, clone_url, head.ref, commit_sha=new_sha, expected_sha=req.sha, token=job.token
            )
        else:
            owner, name = target or (req.owner, req.repo)
            await job.gh.update_ref(owner, name, f"heads/{head.ref}", new_sha, force=False)
    except (PushRejected, WorkspaceError) as exc:
        status = exc.status if isinstance(exc, PushRejected) else None
        await job.record(
            EventKind.PUSHED, expected_sha=req.sha, new_sha=None, rejected=str(exc)[:300]
        )
        if status == 422 or (isinstance(exc, PushRejected) and "stale info" in str(exc)):
            # Not a fast-forward: someone pushed meanwhile. Their push starts a new episode and a
            # new repair on the new head; never force over it.
            return Outcome(
                title="Branch moved; not pushed",
                outcome=OutcomeKind.NOOP,
                detail="The PR head changed while repairing; the new head will be evaluated.",
                failures=[d.record() for d in fix.diagnoses],
                budget=fix.budget,
            )
        await _suggest(job.gh, req, fix.patch or "")
        where = "the fork's branch" if target else "the branch"
        refused = f"GitHub refused the push to {where}" + (f" ({status})." if status else ".")
        return fix.outcome(push_note=_local_apply_note(job.pull, refused))
    return None


def _local_apply_note(pull: PullRequest, why: str) -> str:
    return (
        f"{why} To apply it locally: `git fetch origin pull/{pull.number}/head && "
        f"git checkout {pull.head.ref}`, save the patch below as `shepherd.patch`, then "
        "`git apply shepherd.patch && git commit -am 'Apply Shepherd fix' && git push`."
    )


async def _suggest(
    gh: RepairGitHub,
    req: RepairRequest,
    patch: str,
    *,
    intro: str = "Shepherd verified this fix but cannot push it to this branch.",
) -> None:
    """Post a small patch as one-click review suggestions (or, where GitHub cannot anchor them,
    as a diff in the review body). The summary always carries the full patch too."""
    if not patch or patch.count("\n") > MAX_SUGGESTION_LINES or req.pr is None:
        return
    comments = suggestions(patch)
    if comments:
        try:
            await gh.create_review(
                req.owner,
                req.repo,
                req.pr,
                commit_id=req.sha,
                event="COMMENT",
                body=f"{intro} Apply the suggestions below.",
                comments=comments,
            )
            return
        except GitHubError as exc:
            # 422 when a line is outside the PR's diff: suggestions must sit on changed lines.
            log.info("suggestions refused (%s); posting the diff instead", exc)
    try:
        await gh.create_review(
            req.owner,
            req.repo,
            req.pr,
            commit_id=req.sha,
            event="COMMENT",
            body=f"{intro}\n\n```diff\n{patch}\n```",
        )
    except GitHubError as exc:
        log.warning("could not post the review with the patch: %s", exc)


async def _recover_push(
    gh: RepairGitHub,
    req: RepairRequest,
    pull: PullRequest,
    events: Sequence[PrEvent],
    reporter: Reporter,
) -> Outcome | None:
    """After a crash between moving the branch and recording it (or between recording it and
    reporting it), find our own commit instead of pushing again; the caller reports it. Reporting
    twice is harmless: the check run and the sticky comment are edited in place."""
    intended = pending_push(events, req.sha)
    if intended is None:
        # The push was recorded, but the job died before reporting it: the head is ours.
        pushed = our_push(events, req.sha)
        if pushed is None or pull.head.sha != pushed:
            return None
        return _recovered(pushed)
    # A fork's branch lives in the fork (maintainer edits): its ref is read there.
    head_repo = pull.head.repo.full_name if pull.head.repo else req.full_name
    owner, _, name = head_repo.partition("/")
    ref = GitRef.model_validate(await gh.get_ref(owner, name, f"heads/{pull.head.ref}"))
    if ref.object.sha == intended:
        await reporter.record(
            EventKind.PUSHED, expected_sha=req.sha, new_sha=intended, recovered=True
        )
        return _recovered(intended)
    return None


def _recovered(sha: str) -> Outcome:
    return Outcome(
        title="Fixed and pushed",
        outcome=OutcomeKind.FIXED,
        commit=sha,
        next_action=NextAction.WAIT_FOR_CI,
        detail="Recovered after a restart: the fix had been pushed.",
    )


async def _report(
    reporter: Reporter,
    req: RepairRequest,
    outcome: Outcome,
    diagnoses: Sequence[Diagnosis],
    config: RepoConfig,
    *,
    pull: PullRequest,
    button: Callable[[str], Button],
    paused: bool = False,
) -> None:
    # Keep the triage on the same check run: it lives in the output's text.
    triaged = last_event(await reporter.events(), EventKind.TRIAGED)
    triage_markdown = str(triaged.data.get("markdown", "")) if triaged else ""
    output = render_check_run(
        outcome, triage_markdown=triage_markdown, annotations=annotations_for(diagnoses)
    )
    await reporter.check_run(req.sha, output, actions=buttons_for(outcome, button, paused=paused))
    await reporter.comment("repair", render_outcome_markdown(outcome), outcome)
    names = pull.label_names
    if outcome.outcome is OutcomeKind.HANDOFF and not paused:
        # Paused (`/shepherd stop`): the people who stopped Shepherd asked it to leave labels be.
        await reporter.labels(add=[config.labels.needs_human], current=names)
    elif outcome.outcome is OutcomeKind.FIXED:
        await reporter.labels(remove=[config.labels.needs_human], current=names)
    await reporter.record(
        EventKind.OUTCOME,
        sha=req.sha,
        outcome=outcome.outcome.value,
        title=outcome.title,
        budget=outcome.budget.model_dump(),
        # Tokens and the model they were spent on: the status page prices them (bot/llm/pricing.py).
        llm_usage=dict(outcome.llm_usage),
        llm_model=next((f.tool_version for f in outcome.fixes if f.fixer == "agent"), None),
    )
