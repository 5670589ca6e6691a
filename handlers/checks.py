"""CI failures → a debounced repair job per (repository, head SHA, run attempt).

GitHub Actions failures arrive as ``workflow_job`` (one per job) and ``workflow_run`` (one per
workflow); other CI systems report ``check_run``. All of them upsert the same job key, so a burst
of events for one commit becomes one repair job that takes every failed job together.
"""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.github.webhooks import (
    ACTIONS_APP_SLUG,
    FAILED_CONCLUSIONS,
    CheckRunEvent,
    PullRequestMinimal,
    Repository,
    WorkflowJobEvent,
    WorkflowRunEvent,
)
from bot.repair.job import RepairRequest
from bot.store.episodes import EventKind
from handlers.context import HandlerContext

router = routing.Router()

#: The App that owns GitHub Actions' check runs. Its failures arrive as workflow_job too, with
#: the run attempt that check_run lacks, so check_run from Actions is left to workflow_job.


def enqueue_repair(
    ctx: HandlerContext,
    *,
    repository: Repository,
    installation_id: int | None,
    sha: str,
    prs: list[PullRequestMinimal],
    attempt: int,
    trigger: str,
) -> None:
    if installation_id is None:
        return  # a repository webhook, not an App delivery: no token to act with
    numbers = sorted({pr.number for pr in prs if pr.head.sha == sha})
    repo = repository.full_name
    # Fork PRs: GitHub leaves pull_requests empty; the job finds the PR by head SHA.
    concurrency = f"{repo}#{numbers[0]}" if numbers else f"{repo}@{sha}"
    request = RepairRequest(
        installation=installation_id,
        owner=repository.owner.login,
        repo=repository.name,
        clone_url=repository.clone_url,
        sha=sha,
        pr=numbers[0] if numbers else None,
        attempt=attempt,
        trigger=trigger,
    )
    ctx.enqueue(
        request,
        f"repair:{repo}@{sha}/{attempt}",
        concurrency_key=concurrency,
        delay=ctx.repair_debounce,
    )
    for number in numbers:
        ctx.record(repo, number, EventKind.CI_FAILED, sha=sha, attempt=attempt, via=trigger)


@router.register("workflow_job", action="completed")
async def workflow_job_failed(event: sansio.Event, ctx: HandlerContext) -> None:
    payload = WorkflowJobEvent.model_validate(event.data)
    job = payload.workflow_job
    if job.conclusion not in FAILED_CONCLUSIONS:
        return
    enqueue_repair(
        ctx,
        repository=payload.repository,
        installation_id=payload.installation.id if payload.installation else None,
        sha=job.head_sha,
        prs=[],  # workflow_job carries no PR list; the job resolves it
        attempt=job.run_attempt,
        trigger="workflow_job",
    )


@router.register("workflow_run", action="completed")
async def workflow_run_failed(event: sansio.Event, ctx: HandlerContext) -> None:
    payload = WorkflowRunEvent.model_validate(event.data)
    run = payload.workflow_run
    if run.conclusion not in FAILED_CONCLUSIONS:
        return
    enqueue_repair(
        ctx,
        repository=payload.repository,
        installation_id=payload.installation.id if payload.installation else None,
        sha=run.head_sha,
        prs=run.pull_requests,
        attempt=run.run_attempt,
        trigger="workflow_run",
    )


@router.register("check_run", action="completed")
async def check_run_failed(event: sansio.Event, ctx: HandlerContext) -> None:
    payload = CheckRunEvent.model_validate(event.data)
    run = payload.check_run
    if run.conclusion not in FAILED_CONCLUSIONS:
        return
    slug = run.app.slug or ""
    if slug in (ACTIONS_APP_SLUG, ctx.app_slug) or run.name == "shepherd":
        return  # Actions: see workflow_job; our own check run is never a CI failure
    enqueue_repair(
        ctx,
        repository=payload.repository,
        installation_id=payload.installation.id if payload.installation else None,
        sha=run.head_sha,
        prs=run.pull_requests,
        attempt=1,
        trigger="check_run",
    )
