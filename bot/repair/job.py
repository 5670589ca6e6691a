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
from bot.github.webhooks import ACTIONS_APP_SLUG, FAILED_CONCLUSIONS
from bot.jobenv.environment import EnvironmentsFactory
from bot.jobenv.workflow import WorkflowJob
from bot.kernel.errors import GitHubError, PushRejected, SandboxUnavailable, WorkspaceError
from bot.kernel.problems import Category, NextAction, Outcome, OutcomeKind
from bot.kernel.repoconfig import CONFIG_PATH, RepoConfig, load_config
from bot.kernel.target import RepoTarget
from bot.llm.agent import AgentFixResult
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
from bot.store import EventSpec
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

JSONObject = dict[str, Any]
TRAILER = "Shepherd-Job"
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
        author: Any = ...,
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

    def __call__(self, config: RepoConfig, pull: Mapping[str, Any]) -> tuple[Fixer | None, str]: ...

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
    """The open PR whose head is ``req.sha``. Fork PRs are found by head SHA, since GitHub leaves
    ``pull_requests`` empty in check payloads for them."""
    if req.pr is not None:
        pull = await gh.get_pull(req.owner, req.repo, req.pr)
        return pull if pull.get("state") == "open" else None
    for pull in await gh.list_pulls_for_commit(req.owner, req.repo, req.sha):
        if pull.get("state") == "open" and pull.get("head", {}).get("sha") == req.sha:
            return pull
    return None


async def wait_for_settled(
    gh: RepairGitHub, req: RepairRequest, *, app_slug: str, settle_timeout: float, poll: float
) -> list[JSONObject]:
    """The head SHA's check runs (not ours) once none is still running, or after ``timeout``."""
    deadline = time.monotonic() + settle_timeout
    while True:
        runs = [
            r
            for r in await gh.list_check_runs_for_ref(req.owner, req.repo, req.sha)
            if (r.get("app") or {}).get("slug") != app_slug and r.get("name") != "shepherd"
        ]
        if all(r.get("status") == "completed" for r in runs) or time.monotonic() >= deadline:
            return runs
        await asyncio.sleep(poll)


async def _diagnose_run(
    gh: RepairGitHub, req: RepairRequest, run: JSONObject, *, fixers: Sequence[Fixer], wt: Worktree
) -> list[Diagnosis]:
    """One diagnosis per failed step of the check run's job."""
    name = str(run.get("name") or "check")
    conclusion = str(run.get("conclusion") or "")
    is_actions = (run.get("app") or {}).get("slug") == ACTIONS_APP_SLUG
    job_id = int(run["id"]) if is_actions else None
    run_id: int | None = None
    if job_id is not None:
        # For GitHub Actions the check run id is the job id.
        raw = await gh.download_job_log(req.owner, req.repo, job_id)
        job = await gh.get_job(req.owner, req.repo, job_id)
        run_id = int(job["run_id"]) if job.get("run_id") is not None else None
    else:
        output = run.get("output") or {}
        raw = "\n".join(str(output.get(k) or "") for k in ("title", "summary", "text"))
    return diagnose_steps(
        name,
        distill_steps(raw),
        fixers=fixers,
        repo=WorktreeFiles(wt.path),
        job_conclusion=conclusion,
        job_id=job_id,
        run_id=run_id,
    )


def annotations_for(diagnoses: Sequence[Diagnosis]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
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


async def _commit_via_api(
    gh: RepairGitHub,
    req: RepairRequest,
    wt: Worktree,
    changes: Sequence[FileChange],
    *,
    message: str,
    base_tree: str,
    target: tuple[str, str] | None = None,
) -> str:
    """Create the commit through the Git Data API, so GitHub signs it as the App ("Verified"),
    in the base repository or (``target``) the head repository of a fork."""
    owner, repo = target or (req.owner, req.repo)
    entries: list[dict[str, Any]] = []
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
    return str(made["sha"])


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
    trailers = [(TRAILER, f"{req.full_name}#{req.pr}/{req.job_id}")]
    if config.autofix.signoff:
        trailers.append(
            ("Signed-off-by", f"{app_slug}[bot] <{app_slug}[bot]@users.noreply.github.com>")
        )
    return with_trailers(message, trailers)


async def run_repair(
    gh: RepairGitHub,
    req: RepairRequest,
    *,
    env: RepairEnv,
    store: Any,
    token: str | None,
) -> Outcome:
    pull = await find_pull(gh, req)
    if pull is None:
        log.info("no open PR has head %s; nothing to repair", req.sha[:12])
        return Outcome(title="No open pull request for this commit", outcome=OutcomeKind.NOOP)
    pr = int(pull["number"])
    req = req.model_copy(update={"pr": pr})
    reporter = Reporter(
        gh, store, owner=req.owner, repo=req.repo, pr=pr, app_slug=env.app_slug, job_id=req.job_id
    )

    async def record(kind: str, **data: Any) -> None:
        await store.append_event(
            EventSpec(repo=req.full_name, pr=pr, kind=kind, data=data, job_id=req.job_id)
        )

    # Policy comes from the base branch: a PR cannot change its own rules.
    base_sha = str(pull["base"]["sha"])
    config_text = await gh.get_content(req.owner, req.repo, CONFIG_PATH, base_sha)
    loaded = load_config(config_text, known_fixers=env.known_fixers)
    await record(EventKind.CONFIG, sha=base_sha, from_file=loaded.from_file, ok=loaded.ok)
    if not loaded.ok:
        assert loaded.error is not None
        return await reporter.config_problem(req.sha, loaded.error)
    config = loaded.config

    events = await reporter.events()
    recovered = await _recover_push(gh, req, pull, events, record)
    if recovered is not None:
        # A crash came after the push and before the report: the report is still owed.
        await _report(
            reporter,
            req,
            recovered,
            [],
            config,
            current_labels=pull.get("labels", []),
            button=env.button,
        )
        return recovered
    if pull["head"]["sha"] != req.sha:
        return Outcome(
            title="Superseded by a newer push",
            outcome=OutcomeKind.NOOP,
            detail=f"The PR head is now {pull['head']['sha'][:12]}.",
        )

    runs = await wait_for_settled(
        gh, req, app_slug=env.app_slug, settle_timeout=env.settle_timeout, poll=env.settle_poll
    )
    failed = [r for r in runs if r.get("conclusion") in FAILED_CONCLUSIONS]
    comparison = await gh.compare(req.owner, req.repo, base_sha, req.sha)
    messages = [
        str((c.get("commit") or {}).get("message", "")) for c in comparison.get("commits", [])
    ]
    head_has_trailer = bool(messages) and f"\n{TRAILER}:" in messages[-1]
    state = budget_state(events, req.sha, head_has_trailer=head_has_trailer)
    verdict = detect_agent(
        author_login=str(pull["user"]["login"]),
        author_type=str(pull["user"].get("type", "User")),
        body=pull.get("body"),
        commit_messages=messages,
        head_ref=str(pull["head"].get("ref", "")),
        configured_logins=config.triage.agent_logins,
        shepherd_login=f"{env.app_slug}[bot]",
    )
    if not failed:
        return Outcome(title="No failed checks", outcome=OutcomeKind.NOOP, budget=state.budget())

    fixers = [*env.fixers, *repo_fixers(config)]
    pr_files = await _pull_files(gh, req, pr)
    agent, why_not = env.agent_factory(config, pull)
    gate = _llm_gate(
        config, trigger=req.trigger, is_agent_pr=verdict.is_agent, agent=agent, why_not=why_not
    )
    async with env.workspaces.checkout(
        req.clone_url,
        req.full_name,
        req.sha,
        job_id=f"job-{req.job_id}",
        token=token,
        fetch_ref=f"refs/pull/{pr}/head",
    ) as wt:
        diagnoses = [
            d for r in failed for d in await _diagnose_run(gh, req, r, fixers=fixers, wt=wt)
        ]
        # Only commands the maintainers' workflows run (at the base SHA) are ever executed,
        # and each failed job is rebuilt from those workflows, never from the PR's.
        workflow_files = await read_tree_files(wt, base_sha, ".github/workflows")
        workflows = workflow_commands(workflow_files)
        diagnoses = [
            replace(d, command_trusted=is_workflow_command(d.log.command, workflows))
            for d in diagnoses
        ]
        diagnoses, jobs = locate_jobs(diagnoses, workflow_files)
        if gate.allowed and any(
            d.classification.category is Category.AGENT and not d.command_trusted for d in diagnoses
        ):
            gate = LlmGate(
                False,
                "the failing command is not in the base branch's workflows, so the LLM "
                "repair could not check its work",
            )
        await record(
            EventKind.CLASSIFIED,
            sha=req.sha,
            failures=[
                {
                    "job": d.name,
                    "step": d.log.step,
                    "category": d.classification.category.value,
                    "confidence": d.classification.confidence.value,
                    "fixers": list(d.classification.fixers),
                    "reason": d.classification.reason,
                    "evidence": list(d.classification.evidence)[:3],
                }
                for d in diagnoses
            ],
        )
        plan = plan_repair(
            diagnoses,
            state=state,
            config=config,
            is_agent_pr=verdict.is_agent,
            llm=gate,
            order=[f.name for f in fixers],
        )
        outcome = await _execute(
            gh,
            req,
            pull,
            wt,
            diagnoses,
            plan,
            state=state,
            config=config,
            env=env,
            agent=agent,
            record=record,
            jobs=jobs,
            fixers=fixers,
            pr_files=pr_files,
            token=token,
        )
    await _report(
        reporter,
        req,
        outcome,
        diagnoses,
        config,
        current_labels=pull.get("labels", []),
        button=env.button,
        paused=state.paused,
    )
    return outcome


#: ``pulls/list-files`` lists at most 3000 files; a longer list is not the whole PR.
_MAX_LISTED_FILES = 3000


async def _pull_files(gh: RepairGitHub, req: RepairRequest, pr: int) -> frozenset[str] | None:
    """The paths the pull request changes (renamed files under both names), or None when they
    cannot be known: then ``autofix.scope: changed`` cannot apply and every file is in scope."""
    try:
        entries = await gh.list_pull_files(req.owner, req.repo, pr)
    except GitHubError as exc:
        log.info("the PR's files are not known (%s): every file is in scope", exc)
        return None
    if len(entries) >= _MAX_LISTED_FILES:
        return None
    paths = {str(e["filename"]) for e in entries if e.get("filename")}
    paths |= {str(e["previous_filename"]) for e in entries if e.get("previous_filename")}
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


async def _execute(
    gh: RepairGitHub,
    req: RepairRequest,
    pull: JSONObject,
    wt: Worktree,
    diagnoses: Sequence[Diagnosis],
    plan: Plan,
    *,
    state: BudgetState,
    config: RepoConfig,
    env: RepairEnv,
    agent: Fixer | None,
    record: Any,
    jobs: Mapping[str, WorkflowJob],
    fixers: Sequence[Fixer],
    pr_files: frozenset[str] | None,
    token: str | None,
) -> Outcome:
    if plan.step is Step.RERUN:
        run_ids = sorted(
            {
                d.run_id
                for d in diagnoses
                if d.run_id is not None and d.classification.category is Category.INFRA
            }
        )
        await record(EventKind.RERUN, sha=req.sha, runs=run_ids)
        for run_id in run_ids:
            await gh.rerun_failed_jobs(req.owner, req.repo, run_id)
        return outcome_for(diagnoses, plan, budget=state.budget(rerun_now=True))
    if plan.step is not Step.FIX:
        return outcome_for(diagnoses, plan, budget=state.budget())

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
            budget=state.budget(),
        )
    if plan.use_agent:
        await record(EventKind.LLM_ATTEMPT, sha=req.sha)
    environments = env.environments.for_runner(runner) if env.environments else None
    try:
        async with job_environments(
            environments, wt, jobs, key=f"job-{req.job_id}", name=req.repo
        ) as prepared:
            repair = await repair_tree(
                wt,
                diagnoses,
                plan,
                fixers=fixers,
                runner=runner,
                config=config,
                agent=agent if plan.use_agent else None,
                prepared=prepared,
                pr_files=pr_files,
                repository=req.full_name,
            )
    finally:
        if environments is not None:
            await environments.aclose()
    budget = state.budget(llm_used_now=1 if repair.agent_result else 0)
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

    changes = await asyncio.to_thread(changes_between, wt, before, fixed)
    message = _commit_message(config, req, plan, repair, app_slug=env.app_slug)
    if repair.behaviour_changes and config.autofix.behaviour_changes != "push":
        # A fix that may change what the code does is a reviewer's call: suggest, do not push.
        await _suggest(
            gh, req, patch or "", intro="Shepherd verified this fix; it may change behaviour."
        )
        outcome = outcome_for(
            diagnoses,
            plan,
            budget=budget,
            repair=repair,
            patch=patch,
            push_note=(
                "The fix may change behaviour ("
                + "; ".join(repair.behaviour_changes)
                + "), so it is posted for review instead of pushed "
                "(`autofix.behaviour_changes: push` in .github/shepherd.yml pushes such fixes)."
            ),
        )
        return outcome.model_copy(
            update={
                "title": "Fix verified; posted for review (it may change behaviour)",
                "next_action": NextAction.REVIEW,
            }
        )
    head = pull["head"]
    head_repo = (head.get("repo") or {}).get("full_name")
    target: tuple[str, str] | None = None
    if head_repo != req.full_name:
        if not head_repo or not pull.get("maintainer_can_modify"):
            await _suggest(gh, req, patch or "")
            why = (
                "The PR comes from a fork that does not allow edits by maintainers."
                if head_repo
                else "The PR's head repository is gone."
            )
            return outcome_for(
                diagnoses,
                plan,
                budget=budget,
                repair=repair,
                patch=patch,
                push_note=_local_apply_note(pull, why),
            )
        owner, _, name = str(head_repo).partition("/")
        target = (owner, name)
    base_tree = await asyncio.to_thread(tree_of, wt, wt.sha)
    where = "the fork's branch" if target else "the branch"
    try:
        new_sha = await _commit_via_api(
            gh, req, wt, changes, message=message, base_tree=base_tree, target=target
        )
        via = "api"
    except GitHubError as exc:
        if target is None or exc.status not in (403, 404):
            raise
        # The installation cannot write the fork through the API (it is installed on the base
        # repository only): git push with the token is what "Allow edits by maintainers" lets
        # the base repository's maintainers do.
        log.info("fork %s refuses the Git Data API (%s); pushing with git", head_repo, exc.status)
        made = await commit(
            wt,
            message,
            author_name=f"{env.app_slug}[bot]",
            author_email=f"{env.app_slug}[bot]@users.noreply.github.com",
            parent=req.sha,
            tree=fixed,
        )
        assert made is not None  # the repair changed files
        new_sha, via = made, "git"
    await record(
        EventKind.PUSH_INTENT,
        expected_sha=req.sha,
        new_sha=new_sha,
        branch=head["ref"],
        repo=head_repo,
        via=via,
    )
    try:
        if via == "git":
            await push(
                wt,
                str((head.get("repo") or {}).get("clone_url") or ""),
                head["ref"],
                commit_sha=new_sha,
                expected_sha=req.sha,
                token=token,
            )
        else:
            owner, name = target or (req.owner, req.repo)
            await gh.update_ref(owner, name, f"heads/{head['ref']}", new_sha, force=False)
    except (PushRejected, WorkspaceError) as exc:
        status = exc.status if isinstance(exc, PushRejected) else None
        await record(EventKind.PUSHED, expected_sha=req.sha, new_sha=None, rejected=str(exc)[:300])
        if status == 422 or (isinstance(exc, PushRejected) and "stale info" in str(exc)):
            # Not a fast-forward: someone pushed meanwhile. Their push starts a new episode and a
            # new repair on the new head; never force over it.
            return Outcome(
                title="Branch moved; not pushed",
                outcome=OutcomeKind.NOOP,
                detail="The PR head changed while repairing; the new head will be evaluated.",
                failures=[d.record() for d in diagnoses],
                budget=budget,
            )
        await _suggest(gh, req, patch or "")
        refused = f"GitHub refused the push to {where}" + (f" ({status})." if status else ".")
        return outcome_for(
            diagnoses,
            plan,
            budget=budget,
            repair=repair,
            patch=patch,
            push_note=_local_apply_note(pull, refused),
        )
    await record(
        EventKind.PUSHED, expected_sha=req.sha, new_sha=new_sha, files=[c.path for c in changes]
    )
    budget = budget.model_copy(update={"ci_rounds_used": 2})
    outcome = outcome_for(diagnoses, plan, budget=budget, repair=repair, pushed=new_sha)
    if target is not None:
        outcome = outcome.model_copy(
            update={"detail": f"{outcome.detail} Pushed to {head_repo} (maintainer edits allowed)."}
        )
    return outcome


def _local_apply_note(pull: JSONObject, why: str) -> str:
    branch = pull["head"]["ref"]
    return (
        f"{why} To apply it locally: `git fetch origin pull/{pull['number']}/head && "
        f"git checkout {branch}`, save the patch below as `shepherd.patch`, then "
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
    gh: RepairGitHub, req: RepairRequest, pull: JSONObject, events: Any, record: Any
) -> Outcome | None:
    """After a crash between moving the branch and recording it (or between recording it and
    reporting it), find our own commit instead of pushing again; the caller reports it. Reporting
    twice is harmless: the check run and the sticky comment are edited in place."""
    intended = pending_push(events, req.sha)
    if intended is None:
        # The push was recorded, but the job died before reporting it: the head is ours.
        pushed = our_push(events, req.sha)
        if pushed is None or pull["head"]["sha"] != pushed:
            return None
        return Outcome(
            title="Fixed and pushed",
            outcome=OutcomeKind.FIXED,
            commit=pushed,
            next_action=NextAction.WAIT_FOR_CI,
            detail="Recovered after a restart: the fix had been pushed.",
        )
    # A fork's branch lives in the fork (maintainer edits): its ref is read there.
    head_repo = str((pull["head"].get("repo") or {}).get("full_name") or req.full_name)
    owner, _, name = head_repo.partition("/")
    ref = await gh.get_ref(owner, name, f"heads/{pull['head']['ref']}")
    if (ref.get("object") or {}).get("sha") == intended:
        await record(EventKind.PUSHED, expected_sha=req.sha, new_sha=intended, recovered=True)
        return Outcome(
            title="Fixed and pushed",
            outcome=OutcomeKind.FIXED,
            commit=intended,
            next_action=NextAction.WAIT_FOR_CI,
            detail="Recovered after a restart: the fix had been pushed.",
        )
    return None


async def _report(
    reporter: Reporter,
    req: RepairRequest,
    outcome: Outcome,
    diagnoses: Sequence[Diagnosis],
    config: RepoConfig,
    *,
    current_labels: Sequence[Any],
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
    names = [str(label.get("name")) for label in current_labels if isinstance(label, dict)]
    if outcome.outcome is OutcomeKind.HANDOFF and not paused:
        # Paused (`/shepherd stop`): the people who stopped Shepherd asked it to leave labels be.
        await reporter.labels(add=[config.labels.needs_human], current=names)
    elif outcome.outcome is OutcomeKind.FIXED:
        await reporter.labels(remove=[config.labels.needs_human], current=names)
    await reporter._record(
        EventKind.OUTCOME,
        sha=req.sha,
        outcome=outcome.outcome.value,
        title=outcome.title,
        budget=outcome.budget.model_dump(),
        # Tokens and the model they were spent on: the status page prices them (bot/llm/pricing.py).
        llm_usage=dict(outcome.llm_usage),
        llm_model=next((f.tool_version for f in outcome.fixes if f.fixer == "agent"), None),
    )
