"""The repair ladder: a fixed sequence of deterministic steps with at most one agentic step.

    fetch logs → distil → classify → re-run (infra) | fix (autofix, then the LLM rung) → verify →
    commit → push → report

``plan_repair`` decides (pure). ``repair_tree`` applies fixers and verifies them in a checked-out
tree; it is shared by ``shepherd fix`` (a local checkout) and the server's repair job
(``bot.repair.job``), which adds the GitHub edges: logs, commit, push, report. The agent never
pushes, comments or decides policy; this module does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TypedDict

from bot.diagnosis.classify import Classification, classify
from bot.diagnosis.logs import DistilledLog
from bot.git.workspace import Worktree, changed_paths, reset_to, snapshot_tree, tracked_files
from bot.jobenv.environment import JobEnvironmentError, JobEnvironments
from bot.jobenv.reproduce import compare
from bot.jobenv.workflow import WORKSPACE, WorkflowJob, find_job
from bot.kernel.errors import FixerError, SandboxError, UnsafeWorktree
from bot.kernel.problems import (
    Budget,
    Category,
    EnvironmentRecord,
    FailureRecord,
    FixRecord,
    NextAction,
    Outcome,
    OutcomeKind,
    ScopeRecord,
)
from bot.kernel.repoconfig import RepoConfig
from bot.sandbox import CommandResult, Runner
from bot.store.episodes import BudgetState
from fixers.base import FixContext, Fixer, FixResult, RepoFiles

log = logging.getLogger(__name__)

#: A verification command whose output matches this could not run in the sandbox (tool not
#: installed there, or it needs the network); the fixer's own check stands in, and the summary
#: says so (DESIGN.md principle 4).
_CANNOT_RUN = re.compile(
    r"command not found|: not found|No such file or directory: '?(npm|npx|node|pre-commit)|"
    r"Temporary failure in name resolution|Network is unreachable|Could not resolve host|"
    r"Failed to fetch|error sending request|getaddrinfo|ENOTFOUND|EAI_AGAIN",
    re.IGNORECASE,
)
VERIFY_TIMEOUT = 600.0


@dataclass(frozen=True)
class Diagnosis:
    """One failed job: its name, where its run is (for re-runs), the distilled log, the verdict."""

    name: str
    log: DistilledLog
    classification: Classification
    job_id: int | None = None
    run_id: int | None = None
    #: Whether the failing command may be executed (to verify a fix). The server sets it only
    #: for commands the base branch's workflows run (bot.diagnosis.workflows); a local ``shepherd fix``
    #: trusts the log its user gave it.
    command_trusted: bool = True
    #: The failing step's working directory as the base branch's workflow says (its own
    #: ``working-directory`` or ``defaults.run``), relative to the root; None when no workflow
    #: job matched, and the log's stands.
    workdir: str | None = None

    @property
    def key(self) -> str:
        """One failed step of one job (a job can fail in several steps)."""
        return f"{self.name}\0{self.log.step or ''}\0{self.log.command or ''}"

    @property
    def subdir(self) -> str:
        if self.workdir is not None:
            return _safe_subdir(self.workdir)
        return _safe_subdir(self.log.working_directory)

    def record(self) -> FailureRecord:
        c = self.classification
        return FailureRecord(
            job=self.name,
            step=self.log.step,
            category=c.category,
            fixers=list(c.fixers),
            command=self.log.command,
            excerpt=self.log.excerpt,
            evidence=list(c.evidence),
            retryable=c.retryable,
            owner_action_required=c.owner_action_required,
            confidence=c.confidence,
        )


def _safe_subdir(working_directory: str | None) -> str:
    """The sub-project the step ran in, as a safe relative path ('' for the root)."""
    if not working_directory:
        return ""
    path = PurePosixPath(working_directory.strip())
    if path.is_absolute() or ".." in path.parts or "$" in working_directory:
        return ""
    return "" if str(path) == "." else str(path)


def locate_jobs(
    diagnoses: Sequence[Diagnosis], workflows: Mapping[str, str]
) -> tuple[list[Diagnosis], dict[str, WorkflowJob]]:
    """Find each failed step's job in the base branch's workflows (pure), and take the failing
    step's working directory from there (``defaults.run`` does not show in a log). Returns the
    diagnoses so updated and the jobs found, by ``Diagnosis.key``."""
    jobs: dict[str, WorkflowJob] = {}
    located: list[Diagnosis] = []
    for d in diagnoses:
        job = find_job(
            workflows,
            job_name=d.name,
            failing_command=d.log.command,
            failing_step_name=d.log.step,
        )
        if job is not None and job.failing_step is not None:
            jobs[d.key] = job
            workdir = job.failing_step.working_directory
            d = replace(d, workdir=workdir.replace(WORKSPACE, "").lstrip("/") if workdir else "")
        located.append(d)
    return located, jobs


@dataclass
class Prepared:
    """The job environments of one repair, while they are open."""

    contexts: dict[str, JobContext] = field(default_factory=dict)
    #: Why a job could not be rebuilt (the repair then hands off), with how far it got.
    failure: str | None = None
    records: list[EnvironmentRecord] = field(default_factory=list)
    #: Set when a setup step (PR code) wrote git metadata: the repair stops as in the tree.
    unsafe: UnsafeWorktree | None = None


@contextlib.asynccontextmanager
async def job_environments(
    environments: JobEnvironments | None,
    wt: Worktree,
    jobs: Mapping[str, WorkflowJob],
    *,
    key: str,
    name: str,
) -> AsyncIterator[Prepared]:
    """Rebuild each failed job (one environment per workflow job, shared by its failed steps)
    and keep them, services running, while the repair runs."""
    prepared = Prepared()
    if environments is None or not jobs:
        yield prepared
        return
    tracked = await asyncio.to_thread(tracked_files, wt)
    async with contextlib.AsyncExitStack() as stack:
        opened: dict[tuple[str, str], JobContext] = {}
        # Failed steps of one workflow job share one environment, set up by the steps before
        # the first of them (a later failed step is not a setup step).
        first = sorted(
            jobs.items(), key=lambda item: item[1].failing_step.index if item[1].failing_step else 0
        )
        for diagnosis, job in first:
            which = (job.workflow, job.name)
            if which not in opened:
                try:
                    environment = await stack.enter_async_context(
                        environments.open(
                            wt, job, key=f"{key}-{len(opened)}", name=name, tracked=tracked
                        )
                    )
                except JobEnvironmentError as exc:
                    prepared.failure = f"`{job.name}`: {exc}"
                    if exc.record is not None:
                        prepared.records.append(exc.record)
                    break
                except UnsafeWorktree as exc:
                    prepared.unsafe = exc
                    break
                opened[which] = JobContext(environments.runner(environment), environment.record)
                prepared.records.append(environment.record)
            prepared.contexts[diagnosis] = opened[which]
        yield prepared


def diagnose(
    name: str,
    log: DistilledLog,
    *,
    fixers: Sequence[Fixer],
    repo: RepoFiles,
    job_conclusion: str | None = None,
    job_id: int | None = None,
    run_id: int | None = None,
) -> Diagnosis:
    return Diagnosis(
        name=name,
        log=log,
        classification=classify(log, fixers=fixers, repo=repo, job_conclusion=job_conclusion),
        job_id=job_id,
        run_id=run_id,
    )


def diagnose_steps(
    name: str,
    logs: Sequence[DistilledLog],
    *,
    fixers: Sequence[Fixer],
    repo: RepoFiles,
    job_conclusion: str | None = None,
    job_id: int | None = None,
    run_id: int | None = None,
) -> list[Diagnosis]:
    """One diagnosis per failed step of a job (``bot.diagnosis.logs.distill_steps``), in log order."""
    return [
        diagnose(
            name,
            log,
            fixers=fixers,
            repo=repo,
            job_conclusion=job_conclusion,
            job_id=job_id,
            run_id=run_id,
        )
        for log in logs
    ]


class Step(StrEnum):
    NOTHING = "nothing"
    RERUN = "rerun"
    FIX = "fix"
    HANDOFF = "handoff"


@dataclass(frozen=True)
class LlmGate:
    """Whether the LLM rung may run for this repair, and why not when it may not."""

    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    step: Step
    reason: str
    #: (fixer name, sub-project) in the order they run.
    fixers: tuple[tuple[str, str], ...] = ()
    use_agent: bool = False
    notes: tuple[str, ...] = ()


def _rerun_cannot_help(index: int, diagnoses: Sequence[Diagnosis]) -> bool:
    """An infrastructure failure in a job whose earlier step had already failed otherwise: a
    re-run would fail that step again, so the earlier failure decides."""
    d = diagnoses[index]
    return d.classification.category is Category.INFRA and any(
        e.name == d.name
        and e.job_id == d.job_id
        and e.classification.category is not Category.INFRA
        for e in diagnoses[:index]
    )


def plan_repair(
    diagnoses: Sequence[Diagnosis],
    *,
    state: BudgetState,
    config: RepoConfig,
    is_agent_pr: bool,
    llm: LlmGate,
    order: Sequence[str] = (),
) -> Plan:
    """Decide the next rung of the ladder (pure).

    Every failed step has its diagnosis; the fixers they call for run in ``order`` (the fixer
    registry's order: imports sorted before formatting, lint fixes before the formatter), the
    ones ``order`` does not name after them in the order the failures came.
    """
    categories = {
        d.classification.category
        for i, d in enumerate(diagnoses)
        if not _rerun_cannot_help(i, diagnoses)
    }
    early = _plan_before_fixing(diagnoses, categories, state)
    if early is not None:
        return early
    if not is_agent_pr and not config.autofix.on_human_prs:
        return Plan(Step.HANDOFF, "Autofix on human PRs is off in .github/shepherd.yml.")
    notes: list[str] = []
    ordered = _ordered_fixers(diagnoses, config, order, notes)
    autofix_uncovered = any(
        d.classification.category is Category.AUTOFIX
        and not any(config.autofix.fixer_enabled(n) for n in d.classification.fixers)
        for d in diagnoses
    )
    needs_agent = Category.AGENT in categories
    use_agent = needs_agent and _agent_allowed(state, llm, notes)
    if autofix_uncovered or (needs_agent and not use_agent):
        return Plan(
            Step.HANDOFF,
            "No allowed repair covers every failure." if not notes else notes[-1],
            notes=tuple(notes),
        )
    return Plan(Step.FIX, "Applying repairs.", tuple(ordered), use_agent, tuple(notes))


def _plan_before_fixing(
    diagnoses: Sequence[Diagnosis], categories: set[Category], state: BudgetState
) -> Plan | None:
    """The rungs decided before any fixer is considered: nothing failed, paused, our own
    commit, a failure for a human, or infrastructure (re-run once)."""
    if not diagnoses:
        return Plan(Step.NOTHING, "No failed checks on this commit.")
    if state.paused:
        return Plan(Step.HANDOFF, "Shepherd is paused on this PR (`/shepherd resume` to re-arm).")
    if state.head_is_ours:
        return Plan(
            Step.HANDOFF,
            "CI failed on Shepherd's own commit; it never re-fixes its own work "
            f"(CI round {state.ci_round}/2).",
        )
    if Category.HUMAN in categories:
        return Plan(Step.HANDOFF, "A failure needs a maintainer's decision.")
    if Category.INFRA in categories:
        if state.rerun_used:
            return Plan(
                Step.HANDOFF, "Infrastructure failure again after the one re-run for this commit."
            )
        return Plan(Step.RERUN, "Infrastructure failure: re-running the failed jobs once.")
    return None


def _ordered_fixers(
    diagnoses: Sequence[Diagnosis], config: RepoConfig, order: Sequence[str], notes: list[str]
) -> list[tuple[str, str]]:
    """The enabled fixers the autofix failures call for, as (name, subdir), in ``order``;
    a note for each one the configuration disables."""
    ordered: list[tuple[str, str]] = []
    for d in diagnoses:
        if d.classification.category is not Category.AUTOFIX:
            continue
        for name in d.classification.fixers:
            if not config.autofix.fixer_enabled(name):
                notes.append(f"Fixer `{name}` is disabled in .github/shepherd.yml.")
                continue
            if (name, d.subdir) not in ordered:
                ordered.append((name, d.subdir))
    rank = {name: i for i, name in enumerate(order)}
    ordered.sort(key=lambda pair: rank.get(pair[0], len(rank)))
    return ordered


def _agent_allowed(state: BudgetState, llm: LlmGate, notes: list[str]) -> bool:
    """Whether the LLM rung may run; when not, the note says why."""
    if state.llm_attempts >= 1:
        notes.append("LLM attempt 1/1 already used in this episode; a new push re-arms it.")
        return False
    if not llm.allowed:
        notes.append(f"LLM rung skipped: {llm.reason}")
        return False
    return True


@dataclass
class TreeRepair:
    """What ``repair_tree`` did to a tree."""

    results: list[FixResult] = field(default_factory=list)
    verified: bool = False
    verification: str = ""
    changed: bool = False
    agent_result: FixResult | None = None
    #: Set when PR code wrote git metadata into the tree: the repair stopped there, and nothing
    #: may read the tree again, let alone push it.
    unsafe: UnsafeWorktree | None = None
    #: Set when a failing command did not fail in its job environment as in CI: nothing was
    #: fixed, since nothing could be verified.
    not_reproduced: str | None = None
    #: Set when a failed job's environment could not be prepared (a setup step failed, a
    #: service cannot be provided): nothing was run.
    environment_failure: str | None = None
    #: The tree before the repair (after the job environments' setup) and after the fixers and
    #: the agent (before verification): the fix is the change between the two.
    before_tree: str | None = None
    fixed_tree: str | None = None
    environments: list[EnvironmentRecord] = field(default_factory=list)
    #: Which files the fixers were allowed to change (``autofix.scope``), and how many files
    #: the fix changed that the pull request had not; None when no fixer ran.
    scope: ScopeRecord | None = None
    #: Why the fix may change behaviour, one note per fixer that said so.
    behaviour_changes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobContext:
    """Where one failed job's commands run: its job environment's runner (or the plain
    sandbox), and the record of that environment (None without one)."""

    runner: Runner
    environment: EnvironmentRecord | None = None


def _command_argv(command: str) -> list[str]:
    # GitHub's default shell on Linux: `bash -e {0}` (stop at the first failing line).
    return ["bash", "-e", "-c", command]


async def _verify_one(
    d: Diagnosis, *, root: Path, runner: Runner, self_checks: list[bool], where: str
) -> tuple[bool, str]:
    command = d.log.command
    if not command or not d.command_trusted:
        ok = bool(self_checks) and all(self_checks)
        why = (
            "no command in the log"
            if not command
            else "its command is not one the base branch's workflows run, so it was not executed"
        )
        return ok, f"`{d.name}`: {why}; the fixer's own check {'passed' if ok else 'failed'}"
    cwd = root / d.subdir
    try:
        result: CommandResult = await runner.run(
            _command_argv(command), cwd=cwd, writable=root, timeout=VERIFY_TIMEOUT
        )
    except SandboxError as exc:
        return False, f"`{d.name}`: could not verify: {exc}"
    if result.ok:
        return True, f"`{d.name}`: `{_short(command)}` passes {where}"
    if result.returncode == 127 or _CANNOT_RUN.search(result.output):
        ok = bool(self_checks) and all(self_checks)
        state = "passed" if ok else "failed"
        return ok, (
            f"`{d.name}`: `{_short(command)}` cannot run {where} (tool or network missing); "
            f"the fixer's own check {state}"
        )
    tail = "\n".join(result.output.strip().splitlines()[-5:])
    return False, f"`{d.name}`: `{_short(command)}` still fails:\n{tail}"


def _short(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else command
    return first[:120].replace("`", "'")


async def repair_tree(
    wt: Worktree,
    diagnoses: Sequence[Diagnosis],
    plan: Plan,
    *,
    fixers: Sequence[Fixer],
    runner: Runner,
    config: RepoConfig,
    agent: Fixer | None = None,
    prepared: Prepared | None = None,
    pr_files: frozenset[str] | None = None,
    repository: str = "",
) -> TreeRepair:
    """Reproduce each failure in its job environment, apply the plan's fixers (then the agent)
    to ``wt`` and verify the failing commands there.

    ``prepared`` holds the failed jobs' environments (``job_environments``); a diagnosis
    without one runs in ``runner`` (the plain sandbox). When PR code wrote git metadata into
    the tree (``UnsafeWorktree``, from the sandbox or a snapshot), the repair stops at once and
    says so in ``unsafe``; it is never "verified". Neither is a failure that did not reproduce,
    nor one whose job could not be rebuilt.

    ``pr_files`` are the files the pull request changed (None: not known). With
    ``autofix.scope: changed`` the fixers may change only those; when the failing commands still
    fail and a fixer had to leave other files alone, the fixers run again on everything."""
    repair = TreeRepair()
    prepared = prepared or Prepared()
    repair.environments = list(prepared.records)
    if prepared.unsafe is not None:
        repair.unsafe = prepared.unsafe
        repair.verification = f"Stopped: {prepared.unsafe}."
        return repair
    if prepared.failure is not None:
        repair.environment_failure = prepared.failure
        repair.verification = f"The CI job could not be rebuilt: {prepared.failure}."
        return repair
    contexts = prepared.contexts
    scope = pr_files if config.autofix.scope == "changed" else None
    where = _Where(runner, contexts, scope, pr_files, repository)
    try:
        await _repair(wt, diagnoses, plan, repair, fixers, config, agent, where)
    except UnsafeWorktree as exc:
        log.warning("repair stopped: %s", exc)
        repair.unsafe = exc
        repair.verified = False
        repair.changed = False
        repair.verification = f"Stopped: {exc}."
    return repair


@dataclass(frozen=True)
class _Where:
    """Where and on what the repair's commands run."""

    runner: Runner
    contexts: Mapping[str, JobContext]
    scope: frozenset[str] | None
    pr_files: frozenset[str] | None
    repository: str

    def context(self, d: Diagnosis) -> JobContext:
        return self.contexts.get(d.key) or JobContext(self.runner)


@contextlib.asynccontextmanager
async def _step_runner(
    d: Diagnosis, wt: Worktree, fixers: Mapping[str, Fixer], where: _Where
) -> AsyncIterator[Runner]:
    """The runner for a failed step's own command. A fixer whose command needs more than the
    job's runner to run at all (pre-commit needs a git view of the tree and its hook
    environments) provides one with ``command_runner(ctx)``; the reproduction and the
    verification of the steps it claims run through it."""
    runner = where.context(d).runner
    async with contextlib.AsyncExitStack() as stack:
        for name in d.classification.fixers:
            provider = getattr(fixers.get(name), "command_runner", None)
            if provider is None:
                continue
            ctx = FixContext(
                checkout=wt, subdir=d.subdir, log=d.log, runner=runner, repository=where.repository
            )
            try:
                runner = await stack.enter_async_context(provider(ctx))
            except (FixerError, SandboxError) as exc:
                log.warning("%s: cannot prepare the step's command: %s", name, exc)
            break
        yield runner


async def _repair(
    wt: Worktree,
    diagnoses: Sequence[Diagnosis],
    plan: Plan,
    repair: TreeRepair,
    fixers: Sequence[Fixer],
    config: RepoConfig,
    agent: Fixer | None,
    where: _Where,
) -> None:
    by_name = {f.name: f for f in fixers}
    repair.before_tree = await asyncio.to_thread(snapshot_tree, wt)
    if not await _reproduce(wt, diagnoses, repair, by_name, where):
        return
    if any(where.context(d).environment is not None for d in diagnoses):
        # A failing command may rewrite files as it fails (``pre-commit run`` lets its hooks
        # fix them): the fixers start from the tree as it was.
        await asyncio.to_thread(reset_to, wt, repair.before_tree)
    scope = where.scope
    while True:
        repair.results = await _run_fixers(wt, diagnoses, plan, by_name, config, where, scope)
        if plan.use_agent and agent is not None:
            await _attempt_agent(wt, diagnoses, repair, agent, config, where)
        repair.changed = any(r.changed for r in repair.results)
        kept_out = [p for r in repair.results for p in r.out_of_scope]
        if repair.changed:
            await _verify(wt, diagnoses, repair, by_name, where)
        widen = (
            scope is not None
            and bool(kept_out)
            and not repair.verified
            and repair.agent_result is None
        )
        if not widen:
            break
        # The pull request's files alone did not make the check pass: fix everything.
        log.info("scope: changed was not enough; widening to all files")
        await asyncio.to_thread(reset_to, wt, repair.before_tree)
        repair.verified = False
        repair.fixed_tree = None
        scope = None
    if plan.fixers:
        repair.scope = await _scope_record(wt, repair, config, where, widened=scope is None)
    repair.behaviour_changes = [
        f"{r.fixer}: {r.behaviour_note or 'the fixer says so'}"
        for r in repair.results
        if r.changed and r.changes_behaviour
    ]
    if not repair.changed:
        repair.verification = "No fixer changed anything."


async def _reproduce(
    wt: Worktree,
    diagnoses: Sequence[Diagnosis],
    repair: TreeRepair,
    by_name: Mapping[str, Fixer],
    where: _Where,
) -> bool:
    """Run each trusted failing command in its job environment; it must fail as in CI. False
    (and the repair says why) when one does not: then no fix could be verified."""
    root = wt.path
    for d in diagnoses:
        ctx_ = where.context(d)
        if ctx_.environment is None or not d.command_trusted or not d.log.command:
            continue
        async with _step_runner(d, wt, by_name, where) as step_runner:
            run = await step_runner.run(
                _command_argv(d.log.command),
                cwd=root / d.subdir,
                writable=root,
                timeout=VERIFY_TIMEOUT,
            )
        ci_lines = list(d.classification.evidence) or list(d.log.error_lines)
        found = compare(
            ci_lines, exit_code=run.returncode, timed_out=run.timed_out, output=run.output
        )
        ctx_.environment.reproduced = found.reproduced
        ctx_.environment.reproduction = found.detail
        if not found.reproduced:
            repair.not_reproduced = f"`{d.name}`: {found.detail}"
            repair.verification = (
                f"Not reproduced in the job environment: {repair.not_reproduced}. Nothing was "
                "changed, since no fix could be verified."
            )
            return False
    return True


async def _attempt_agent(
    wt: Worktree,
    diagnoses: Sequence[Diagnosis],
    repair: TreeRepair,
    agent: Fixer,
    config: RepoConfig,
    where: _Where,
) -> None:
    """The one LLM attempt of the episode, on the first failure that calls for it."""
    d = next((d for d in diagnoses if d.classification.category is Category.AGENT), None)
    if d is None:
        return
    ctx = FixContext(
        checkout=wt,
        subdir=d.subdir,
        log=d.log,
        runner=where.context(d).runner,
        protected_paths=config.autofix.protected_paths,
        repository=where.repository,
    )
    repair.agent_result = await agent.apply(ctx)
    repair.results.append(repair.agent_result)


async def _scope_record(
    wt: Worktree, repair: TreeRepair, config: RepoConfig, where: _Where, *, widened: bool
) -> ScopeRecord:
    """Which files the fixers were allowed to change, and how many outside the PR they did."""
    name: str = config.autofix.scope
    if where.scope is not None and widened:
        name = "changed, widened to all (the pull request's files alone did not pass)"
    elif where.scope is None and config.autofix.scope == "changed":
        name = "all (the pull request's files are not known here)"
    outside = None
    if (
        where.pr_files is not None
        and repair.changed
        and repair.before_tree is not None
        and repair.fixed_tree is not None
    ):
        changed = await asyncio.to_thread(changed_paths, wt, repair.before_tree, repair.fixed_tree)
        outside = sum(1 for p in changed if p not in where.pr_files)
    return ScopeRecord(scope=name, files_outside_pr=outside)


async def _run_fixers(
    wt: Worktree,
    diagnoses: Sequence[Diagnosis],
    plan: Plan,
    by_name: Mapping[str, Fixer],
    config: RepoConfig,
    where: _Where,
    scope: frozenset[str] | None,
) -> list[FixResult]:
    results: list[FixResult] = []
    for name, subdir in plan.fixers:
        d = next(d for d in diagnoses if name in d.classification.fixers and d.subdir == subdir)
        ctx = FixContext(
            checkout=wt,
            subdir=subdir,
            log=d.log,
            runner=where.context(d).runner,
            protected_paths=config.autofix.protected_paths,
            scope=scope,
            repository=where.repository,
        )
        try:
            result = await by_name[name].apply(ctx)
        except (FixerError, SandboxError) as exc:
            log.warning("fixer %s failed: %s", name, exc)
            result = FixResult(fixer=name, changed=False, detail=f"failed: {exc}")
        results.append(result)
    return results


async def _verify(
    wt: Worktree,
    diagnoses: Sequence[Diagnosis],
    repair: TreeRepair,
    by_name: Mapping[str, Fixer],
    where: _Where,
) -> None:
    repair.fixed_tree = await asyncio.to_thread(snapshot_tree, wt)
    lines: list[str] = []
    verified = True
    for d in diagnoses:
        checks = [r.self_check_passed for r in repair.results if r.fixer in d.classification.fixers]
        if d.classification.category is Category.AGENT and repair.agent_result is not None:
            checks = [repair.agent_result.self_check_passed]
        async with _step_runner(d, wt, by_name, where) as step_runner:
            ok, line = await _verify_one(
                d,
                root=wt.path,
                runner=step_runner,
                self_checks=checks,
                where="in its job environment"
                if where.context(d).environment
                else "in the sandbox",
            )
        verified = verified and ok
        lines.append(line)
    repair.verified = verified
    repair.verification = "; ".join(lines)


def outcome_for(
    diagnoses: Sequence[Diagnosis],
    plan: Plan,
    *,
    budget: Budget,
    repair: TreeRepair | None = None,
    patch: str | None = None,
    pushed: str | None = None,
    push_note: str | None = None,
) -> Outcome:
    """The outcome record for a repair: the machine-readable result every summary renders."""
    common = _common_fields(diagnoses, budget, repair)
    notes = " ".join(plan.notes)
    if repair is not None:
        stopped = _stopped_outcome(repair, common)
        if stopped is not None:
            return stopped
    if plan.step is Step.NOTHING:
        return Outcome(
            title="No failed checks", detail=plan.reason, outcome=OutcomeKind.NOOP, **common
        )
    if plan.step is Step.RERUN:
        return Outcome(
            title="Re-ran failed jobs (infrastructure)",
            detail=plan.reason,
            outcome=OutcomeKind.RERUN,
            retryable=True,
            next_action=NextAction.WAIT_FOR_CI,
            **common,
        )
    if plan.step is Step.FIX and repair is not None:
        return _fix_outcome(plan, repair, common, patch=patch, pushed=pushed, push_note=push_note)
    failures = common["failures"]
    retryable = all(f.retryable for f in failures) and bool(failures)
    return Outcome(
        title="Needs a human",
        detail=f"{plan.reason} {notes}".strip()
        if notes and notes not in plan.reason
        else plan.reason,
        outcome=OutcomeKind.HANDOFF,
        retryable=retryable,
        owner_action_required=any(f.owner_action_required for f in failures) or not retryable,
        next_action=NextAction.RERUN if retryable else NextAction.FIX_LOCALLY,
        **common,
    )


class _Common(TypedDict):
    """The outcome's fields every rung fills the same way (``Outcome`` keyword arguments)."""

    environment: list[EnvironmentRecord]
    llm_usage: dict[str, int]
    failures: list[FailureRecord]
    fixes: list[FixRecord]
    budget: Budget
    category: Category | None
    verification: str | None
    scope: ScopeRecord | None
    behaviour_changes: list[str]


def _common_fields(
    diagnoses: Sequence[Diagnosis], budget: Budget, repair: TreeRepair | None
) -> _Common:
    failures = [d.record() for d in diagnoses]
    fixes = [
        FixRecord(
            fixer=r.fixer,
            tool_version=r.tool_version,
            changed=r.changed,
            detail=r.detail,
            changes_behaviour=r.changes_behaviour,
        )
        for r in (repair.results if repair else [])
    ]
    categories = [f.category for f in failures]
    agent = repair.agent_result if repair else None
    return _Common(
        environment=list(repair.environments) if repair else [],
        llm_usage=dict(agent.llm_usage) if agent else {},
        failures=failures,
        fixes=fixes,
        budget=budget,
        category=categories[0] if len(set(categories)) == 1 else None,
        verification=repair.verification if repair else None,
        scope=repair.scope if repair else None,
        behaviour_changes=list(repair.behaviour_changes) if repair else [],
    )


def _stopped_outcome(repair: TreeRepair, common: _Common) -> Outcome | None:
    """A repair that stopped before fixing: PR code wrote git metadata, the CI job could not
    be rebuilt, or the failure did not reproduce. Nothing was verified in any of them."""
    if repair.unsafe is not None:
        title = "Stopped: the pull request wrote git metadata"
        detail = (
            f"{repair.unsafe}. Nothing was pushed. A pull request's code must not create "
            "`.git` files or nested repositories while its checks run; a maintainer should "
            "look at what the PR's tests or tools do."
        )
        action = NextAction.REVIEW
    elif repair.environment_failure is not None:
        title = "The CI job could not be rebuilt: nothing verified"
        detail = (
            f"{repair.environment_failure}. Nothing was changed or pushed: without the job's "
            "environment a fix could not be verified."
        )
        action = NextAction.FIX_LOCALLY
    elif repair.not_reproduced is not None:
        title = "Not reproduced: nothing verified"
        detail = (
            f"The failing command did not fail in the rebuilt CI job as it did in CI "
            f"({repair.not_reproduced}). Nothing was changed or pushed: a fix could not be "
            "verified here. The environment section says what was set up."
        )
        action = NextAction.FIX_LOCALLY
    else:
        return None
    return Outcome(
        title=title,
        detail=detail,
        outcome=OutcomeKind.HANDOFF,
        owner_action_required=True,
        next_action=action,
        **common,
    )


def _fix_outcome(
    plan: Plan,
    repair: TreeRepair,
    common: _Common,
    *,
    patch: str | None,
    pushed: str | None,
    push_note: str | None,
) -> Outcome:
    """The outcome of the fix rung: pushed, verified but not pushed, or not verified."""
    notes = " ".join(plan.notes)
    if repair.changed and repair.verified and pushed:
        return Outcome(
            title="Fixed and pushed",
            detail=f"{plan.reason} {notes}".strip() if notes else "Verified before pushing.",
            outcome=OutcomeKind.FIXED,
            next_action=NextAction.WAIT_FOR_CI,
            commit=pushed,
            **common,
        )
    if repair.changed and repair.verified:
        return Outcome(
            title="Fix verified but not pushed",
            detail=push_note or "The fix could not be pushed; apply the patch below.",
            outcome=OutcomeKind.HANDOFF,
            owner_action_required=True,
            next_action=NextAction.APPLY_PATCH,
            patch=patch,
            **common,
        )
    detail = (
        "The repair did not make the failing command pass; nothing was pushed."
        if repair.changed
        else "The fixers made no change; nothing was pushed."
    )
    return Outcome(
        title="Repair attempted, not verified",
        detail=f"{detail} {notes}".strip(),
        outcome=OutcomeKind.HANDOFF,
        owner_action_required=True,
        next_action=NextAction.FIX_LOCALLY,
        patch=patch,
        **common,
    )
