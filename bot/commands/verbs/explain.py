"""``/shepherd explain``: why the checks failed and what Shepherd did, from the event log."""

from __future__ import annotations

from bot.commands.explain import render_explain
from bot.commands.spec import CommandContext, CommandSpec, CommandVerb, VerbResult

SPEC = CommandSpec(
    verb="explain",
    help="Explain why the checks failed, without changing anything.",
    needs_write=False,
    button_label=None,
)


async def run(ctx: CommandContext) -> VerbResult:
    return VerbResult(reply=render_explain(ctx.events, head_sha=ctx.head))


VERB = CommandVerb(SPEC, run)
