"""Pull request activity → triage jobs, and the start of a new repair episode on a human push."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.github.webhooks import PullRequestEvent
from bot.kernel.target import PrewarmRequest
from bot.store.episodes import EventKind
from bot.triage.job import TriageRequest
from handlers.context import HandlerContext

router = routing.Router()

TRIAGE_ACTIONS = ("opened", "reopened", "synchronize", "ready_for_review")
PREWARM_ACTIONS = ("opened", "reopened")


@router.register("pull_request")
async def pull_request_changed(event: sansio.Event, ctx: HandlerContext) -> None:
    payload = PullRequestEvent.model_validate(event.data)
    if payload.action not in TRIAGE_ACTIONS or payload.installation is None:
        return
    pr = payload.pull_request
    repo = payload.repository.full_name
    sha = pr.head.sha
    if payload.action in ("opened", "reopened", "synchronize") and (
        payload.sender.login.lower() != ctx.bot_login.lower()
    ):
        # DESIGN.md: an episode starts when someone other than the bot pushes.
        ctx.record(
            repo, pr.number, EventKind.PUSH, sha=sha, by=payload.sender.login, action=payload.action
        )
    target = {
        "installation": payload.installation.id,
        "owner": payload.repository.owner.login,
        "repo": payload.repository.name,
    }
    ctx.enqueue(
        TriageRequest(**target, pr=pr.number, sha=sha, action=payload.action),
        # Keyed by action too: `ready_for_review` on an unchanged head must still run (drafts
        # get no reviewers until then).
        f"triage:{repo}#{pr.number}@{sha}/{payload.action}",
        concurrency_key=f"{repo}#{pr.number}",
    )
    if payload.action in PREWARM_ACTIONS:
        # The base branch's job environments, built while CI runs, so that a failure of this
        # PR starts from the warm pool (one job per base commit, whichever PR opened first).
        base = pr.base.sha
        ctx.enqueue(
            PrewarmRequest(**target, sha=base, clone_url=payload.repository.clone_url),
            f"prewarm:{repo}@{base}",
            concurrency_key=f"prewarm:{repo}",
        )
