"""``/shepherd stop``: pause Shepherd on this PR until ``/shepherd resume``."""

from __future__ import annotations

from bot.commands.spec import COMMAND_PREFIX, CommandContext, CommandSpec, CommandVerb, VerbResult
from bot.store.episodes import EventKind, is_paused

SPEC = CommandSpec(
    verb="stop",
    help="Stop Shepherd acting on this PR (no fixes, re-runs or labels) until resumed.",
    needs_write=True,
    button_label="Stop Shepherd",
    button_description="Stop automatic actions on this PR",
)
PAUSED_STATUS = (
    "⏸️ **Shepherd is paused on this PR** — no automatic fixes, re-runs or pushes until someone "
    f"with write access comments `{COMMAND_PREFIX} resume`."
)


async def run(ctx: CommandContext) -> VerbResult:
    if is_paused(ctx.events):
        return VerbResult(
            reply=f"Shepherd is already paused on this PR; `{COMMAND_PREFIX} resume` re-arms it."
        )
    await ctx.record(EventKind.PAUSED, by=ctx.actor, source=ctx.source, sha=ctx.head)
    await ctx.set_paused_label(True)
    await ctx.set_status(PAUSED_STATUS)
    await ctx.set_buttons(["resume"])
    return VerbResult(
        summary=f"Paused: no automatic fixes, re-runs or pushes until `{COMMAND_PREFIX} resume`."
    )


VERB = CommandVerb(SPEC, run)
