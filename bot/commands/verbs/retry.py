"""``/shepherd retry``: re-run the failed GitHub Actions jobs of the head once."""

from __future__ import annotations

from bot.commands.spec import CommandContext, CommandSpec, CommandVerb, VerbResult
from bot.github.webhooks import ACTIONS_APP_SLUG
from bot.store.episodes import EventKind

SPEC = CommandSpec(
    verb="retry",
    help="Re-run the failed CI jobs of the current head once.",
    needs_write=True,
    button_label="Re-run failed jobs",
    button_description="Re-run the failed CI jobs once",
)


async def run(ctx: CommandContext) -> VerbResult:
    if not ctx.is_open:
        return VerbResult(reply="This pull request is closed; there is nothing to re-run.")
    if any(e.kind == EventKind.MANUAL_RERUN and e.job_id == ctx.job_id for e in ctx.events):
        # This job re-ran them before a crash; a second request would fail on running jobs.
        return VerbResult(summary=f"Re-ran the failed jobs of `{ctx.head[:7]}`.")
    failed = await ctx.failed_runs()
    actions = [r for r in failed if (r.get("app") or {}).get("slug") == ACTIONS_APP_SLUG]
    others = len(failed) - len(actions)
    run_ids: set[int] = set()
    for check_run in actions:
        run_id = await ctx.workflow_run_of(int(check_run["id"]))
        if run_id is not None:
            run_ids.add(run_id)
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
    await ctx.record(EventKind.MANUAL_RERUN, sha=ctx.head, runs=sorted(run_ids), by=ctx.actor)
    for run_id in sorted(run_ids):
        await ctx.rerun_failed_jobs(run_id)
    return VerbResult(
        summary=f"Re-ran the failed jobs of {len(run_ids)} workflow run(s) on "
        f"`{ctx.head[:7]}`.{elsewhere}"
    )


VERB = CommandVerb(SPEC, run)
