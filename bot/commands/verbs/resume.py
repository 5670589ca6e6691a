"""``/shepherd resume``: re-arm Shepherd after a stop, and repair now if checks have failed."""

from __future__ import annotations

from bot.commands.spec import CommandContext, CommandSpec, CommandVerb, VerbResult
from bot.store.episodes import EventKind, is_paused

SPEC = CommandSpec(
    verb="resume",
    help="Let Shepherd act on this PR again after a stop.",
    needs_write=True,
    button_label="Resume Shepherd",
    button_description="Resume automatic actions on this PR",
)


async def run(ctx: CommandContext) -> VerbResult:
    if not is_paused(ctx.events):
        return VerbResult(reply="Shepherd is not paused on this PR; there is nothing to resume.")
    await ctx.record(EventKind.RESUMED, by=ctx.actor, source=ctx.source, sha=ctx.head)
    await ctx.set_paused_label(False)
    await ctx.set_status("")
    if not ctx.is_open or not await ctx.failed_runs():
        await ctx.set_buttons(["stop"])
        return VerbResult(summary=f"Resumed. No failed checks on `{ctx.head[:7]}` right now.")
    head = ctx.head
    # Resuming re-arms the automatic behaviour, so the repair runs as if CI had just failed (the
    # LLM rung follows the policy for automatic repairs, not the one for `/shepherd fix`).
    outcome = await ctx.repair("resume")
    return VerbResult(summary=f"Resumed; repair of `{head[:7]}`: {outcome.title}.")


VERB = CommandVerb(SPEC, run)
