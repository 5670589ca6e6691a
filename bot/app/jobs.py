"""Job kinds and their runners: the registry the worker dispatches leased jobs through."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
from cachetools import TTLCache

from bot.app.observability import Metrics
from bot.commands.job import CommandEnv, CommandRequest, run_commands
from bot.commands.parse import check_run_button
from bot.git.workspace import Workspaces, read_tree_files
from bot.github.client import GitHubApp
from bot.jobenv.environment import EnvironmentsFactory
from bot.jobenv.prewarm import prewarm
from bot.kernel.problems import Outcome, OutcomeKind
from bot.kernel.settings import Settings
from bot.kernel.target import ForgetReposRequest, JobRequest, PrewarmRequest, PruneRequest
from bot.llm.factory import AgentFactory
from bot.repair.job import RepairEnv, RepairGitHub, RepairRequest, find_pull, run_repair
from bot.sandbox import Runner, make_runner
from bot.store import EventSpec, Job, JobSpec, Store
from bot.triage.job import TriageRequest, run_triage
from bot.triage.lane import LaneRequest, run_agent_lane
from fixers import FIXERS
from fixers.tools import bundled_tool_dirs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    #: ``fixed``, ``rerun``, ``handoff``, ``noop`` (the Outcome kinds) or a kind-specific word.
    outcome: str
    result: dict[str, Any] | None = None
    events: list[EventSpec] = field(default_factory=list)


@dataclass
class JobDeps:
    """The I/O edges jobs use, built once per process and passed explicitly."""

    settings: Settings
    store: Store
    metrics: Metrics
    workspaces: Workspaces
    repair_env: RepairEnv
    github: GitHubApp | None = None
    session: aiohttp.ClientSession | None = None
    #: Commenters' repository permissions, briefly: one comment may carry several commands,
    #: and a busy PR several comments a minute. Short, so a revoked permission takes effect soon.
    permissions: TTLCache[tuple[str, str], str] = field(
        default_factory=lambda: TTLCache(maxsize=4096, ttl=60)
    )

    @classmethod
    def build(cls, settings: Settings, store: Store, metrics: Metrics) -> JobDeps:
        """Build from settings. Called inside the running event loop (the worker's)."""
        workspaces = Workspaces(settings.data_dir / "workspaces")

        def runner_factory() -> Runner:
            return make_runner(
                allow_unsandboxed=settings.allow_unsandboxed,
                tool_dirs=bundled_tool_dirs(),
                tool_cache=settings.data_dir / "tools",
            )

        env = RepairEnv(
            app_slug=settings.app_slug,
            fixers=FIXERS,
            workspaces=workspaces,
            runner_factory=runner_factory,
            agent_factory=AgentFactory(settings),
            button=check_run_button,
            settle_timeout=settings.settle_timeout_seconds,
            settle_poll=settings.settle_poll_seconds,
            environments=EnvironmentsFactory.from_settings(settings),
        )
        deps = cls(
            settings=settings, store=store, metrics=metrics, workspaces=workspaces, repair_env=env
        )
        deps.use_github_app()
        return deps

    def use_github_app(self) -> None:
        """(Re)build the GitHub App client from the settings; a no-op while they name none."""
        settings = self.settings
        if not settings.github_enabled:
            return
        assert settings.github_app_id is not None
        assert settings.github_private_key is not None
        if self.session is None:
            self.session = aiohttp.ClientSession()
        self.github = GitHubApp(
            app_id=settings.github_app_id,
            private_key=settings.github_private_key,
            session=self.session,
            api_url=settings.github_api_url,
            metrics=self.metrics,
        )
        if self.repair_env.app_slug != settings.app_slug:
            self.repair_env = dataclasses.replace(self.repair_env, app_slug=settings.app_slug)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.repair_env.agent_factory.aclose()


JobRunner = Callable[[Job, JobDeps], Awaitable[JobResult]]
JobEntry = tuple[str, JobRunner]
R = TypeVar("R", bound=JobRequest)


def _disabled(req: JobRequest) -> JobResult:
    log.info("GitHub writes are disabled; %s job %s recorded only", req.KIND, req.job_id)
    return JobResult("noop", {"reason": "GitHub credentials are not configured"})


async def repair_job(req: RepairRequest, deps: JobDeps) -> JobResult:
    if deps.github is None:
        return _disabled(req)
    gh = await deps.github.installation_client(req.installation, repo=req.repo)
    if req.pr is None:
        return await _route_to_pull(deps, gh, req)
    token = await deps.github.installation_token(req.installation, repo=req.repo)
    outcome = await repair(deps, gh, req, token=token.token)
    return JobResult(outcome.outcome.value, outcome.to_json())


async def repair(deps: JobDeps, gh: RepairGitHub, req: RepairRequest, *, token: str) -> Outcome:
    """The one way into the repair, from CI failures and from commands alike: run it and record
    its outcome for /metrics."""
    outcome = await run_repair(gh, req, env=deps.repair_env, store=deps.store, token=token)
    observe_outcome(deps.metrics, outcome, trigger=req.trigger)
    return outcome


async def _route_to_pull(deps: JobDeps, gh: RepairGitHub, req: RepairRequest) -> JobResult:
    """``workflow_job`` events (and fork PRs' check events) name no PR, so the handler could not
    give the job the PR's concurrency key. Find the PR by head SHA and re-enqueue the repair
    under ``repo#pr``, so it never runs beside the same PR's triage or command jobs (which edit
    the same sticky comment)."""
    pull = await find_pull(gh, req)
    if pull is None:
        return JobResult("noop", {"reason": f"no open pull request has head {req.sha}"})
    number = int(pull["number"])
    key = f"repair:{req.full_name}@{req.sha}/{req.attempt}/pr{number}"
    routed = req.model_copy(update={"pr": number})
    await deps.store.upsert_job(
        JobSpec(
            kind=routed.KIND,
            key=key,
            payload=routed.payload(),
            concurrency_key=f"{req.full_name}#{number}",
        )
    )
    return JobResult("routed", {"pr": number, "routed_to": key})


def observe_outcome(metrics: Metrics, outcome: Outcome, *, trigger: str) -> None:
    """The outcome, per-fixer results, budgets found spent and LLM tokens, for /metrics."""
    metrics.repair_outcomes.labels(trigger, outcome.outcome.value).inc()
    for fix in outcome.fixes:
        metrics.fixer_runs.labels(fix.fixer, "changed" if fix.changed else "unchanged").inc()
    if outcome.outcome is OutcomeKind.HANDOFF:
        budget = outcome.budget
        if budget.ci_rounds_used >= budget.ci_rounds_max:
            metrics.budget_exhausted.labels("ci_rounds").inc()
        if budget.reruns_used >= budget.reruns_max and outcome.retryable:
            metrics.budget_exhausted.labels("infra_rerun").inc()
        if budget.llm_attempts_used >= budget.llm_attempts_max:
            metrics.budget_exhausted.labels("llm_attempt").inc()
    for kind, count in outcome.llm_usage.items():
        metrics.llm_tokens.labels(kind).inc(count)


async def command_job(req: CommandRequest, deps: JobDeps) -> JobResult:
    if deps.github is None:
        return _disabled(req)
    token = await deps.github.installation_token(req.installation, repo=req.repo)
    gh = await deps.github.installation_client(req.installation, repo=req.repo)

    async def run_repair_now(repair_req: RepairRequest) -> Outcome:
        return await repair(deps, gh, repair_req, token=token.token)

    env = CommandEnv(
        repair=deps.repair_env, permissions=deps.permissions, run_repair=run_repair_now
    )
    report = await run_commands(gh, req, env=env, store=deps.store)
    return JobResult(report.outcome, report.to_json())


async def triage_job(req: TriageRequest, deps: JobDeps) -> JobResult:
    if deps.github is None:
        return _disabled(req)
    gh = await deps.github.installation_client(req.installation, repo=req.repo)
    result = await run_triage(
        gh,
        req,
        store=deps.store,
        app_slug=deps.settings.app_slug,
        known_fixers=deps.repair_env.known_fixers,
    )
    return JobResult(result.outcome, result.to_json())


async def agent_lane_job(req: LaneRequest, deps: JobDeps) -> JobResult:
    if deps.github is None:
        return _disabled(req)
    gh = await deps.github.installation_client(req.installation, repo=req.repo)
    outcome = await run_agent_lane(
        gh,
        req,
        store=deps.store,
        app_slug=deps.settings.app_slug,
        known_fixers=deps.repair_env.known_fixers,
    )
    return JobResult(outcome)


async def prewarm_job(req: PrewarmRequest, deps: JobDeps) -> JobResult:
    """A pull request opened: prepare its base branch's job environments in the warm pool."""
    if deps.github is None or deps.repair_env.environments is None:
        return _disabled(req)
    repo, sha, key = req.full_name, req.sha, f"prewarm-{req.job_id}"
    token = await deps.github.installation_token(req.installation, repo=req.repo)
    runner = deps.repair_env.runner_factory()
    environments = deps.repair_env.environments.for_runner(runner)
    if environments is None:
        return JobResult("noop", {"reason": "job environments need bubblewrap"})
    try:
        async with deps.workspaces.checkout(
            req.clone_url, repo, sha, job_id=key, token=token.token
        ) as wt:
            files = await read_tree_files(wt, sha, ".github/workflows")
            done = await prewarm(environments, wt, files, key=key, name=req.repo)
    finally:
        await environments.aclose()
    return JobResult("done", {"jobs": done})


async def forget_repos_job(req: ForgetReposRequest, deps: JobDeps) -> JobResult:
    """The App was uninstalled or lost repositories: drop their mirror clones."""
    removed = [repo for repo in req.repos if await deps.workspaces.forget(repo)]
    return JobResult("done", {"removed": removed})


async def prune_job(req: PruneRequest, deps: JobDeps) -> JobResult:
    """Retention: finished deliveries older than ``retention_days`` go, and their bodies."""
    before = datetime.now(UTC) - timedelta(days=req.retention_days)
    pruned = await deps.store.prune_deliveries(before)
    log.info(
        "retention: %d deliveries received before %s pruned, %d log segments deleted",
        pruned.deliveries, before.isoformat(timespec="seconds"), pruned.segments,
    )  # fmt: skip
    return JobResult(
        "done",
        {
            "before": before.isoformat(),
            "deliveries": pruned.deliveries,
            "segments": pruned.segments,
        },
    )


def _runs(request: type[R], run: Callable[[R, JobDeps], Awaitable[JobResult]]) -> JobEntry:
    """The registry entry for ``request``: its kind, and ``run`` on the request decoded once
    from the job's stored payload."""

    async def runner(job: Job, deps: JobDeps) -> JobResult:
        return await run(request.decode(job.payload, job_id=job.id), deps)

    return request.KIND, runner


#: The one registry: each request class with the function that runs it, keyed by its ``KIND``.
JOB_RUNNERS: dict[str, JobRunner] = dict(
    (
        _runs(RepairRequest, repair_job),
        _runs(TriageRequest, triage_job),
        _runs(LaneRequest, agent_lane_job),
        _runs(CommandRequest, command_job),
        _runs(PrewarmRequest, prewarm_job),
        _runs(ForgetReposRequest, forget_repos_job),
        _runs(PruneRequest, prune_job),
    )
)
