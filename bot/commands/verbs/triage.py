"""``/shepherd triage``: recompute the labels and reviewer suggestions now."""

from __future__ import annotations

from bot.commands.spec import CommandContext, CommandSpec, CommandVerb, VerbResult

SPEC = CommandSpec(
    verb="triage",
    help="Recompute size, area and risk labels and suggest reviewers.",
    needs_write=True,
    button_label=None,
)


async def run(ctx: CommandContext) -> VerbResult:
    if not ctx.is_open:
        return VerbResult(reply="This pull request is closed; there is nothing to triage.")
    result = await ctx.triage()
    if result.outcome == "triaged":
        return VerbResult(summary=f"Re-triaged `{ctx.head[:7]}`: labels and reviewers updated.")
    detail = f": {result.detail}" if result.detail else ""
    # A config error is on the check run; say it here too, since nothing else changed.
    return VerbResult(
        summary=f"Triage of `{ctx.head[:7]}`: {result.outcome}{detail}.",
        reply=f"Triage of `{ctx.head[:7]}` did not run ({result.outcome}{detail}).",
    )


VERB = CommandVerb(SPEC, run)
