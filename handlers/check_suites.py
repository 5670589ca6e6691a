"""A commit's checks all finished → the agent lane may request human review."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.github.webhooks import CheckSuiteEvent
from bot.triage.lane import LaneRequest
from handlers.context import HandlerContext

router = routing.Router()


@router.register("check_suite", action="completed")
async def suite_completed(event: sansio.Event, ctx: HandlerContext) -> None:
    payload = CheckSuiteEvent.model_validate(event.data)
    suite = payload.check_suite
    if payload.installation is None:
        return
    repo = payload.repository.full_name
    for pr in suite.pull_requests:
        if pr.head.sha != suite.head_sha:
            continue
        # Keyed per SHA: the job re-reads every check run, so many suites finishing for one
        # commit collapse into one look at whether everything is green.
        request = LaneRequest(
            installation=payload.installation.id,
            owner=payload.repository.owner.login,
            repo=payload.repository.name,
            pr=pr.number,
            sha=suite.head_sha,
        )
        ctx.enqueue(
            request,
            f"lane:{repo}#{pr.number}@{suite.head_sha}/{suite.id}",
            concurrency_key=f"{repo}#{pr.number}",
            delay=ctx.repair_debounce,
        )
