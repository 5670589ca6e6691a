"""``/shepherd help`` (and a bare ``/shepherd``): the list of commands, from the registry."""

from __future__ import annotations

from bot.commands.spec import CommandContext, CommandSpec, CommandVerb, VerbResult

SPEC = CommandSpec(
    verb="help",
    help="Show this list of commands.",
    needs_write=False,
    button_label=None,
)


async def run(ctx: CommandContext) -> VerbResult:
    return VerbResult(reply=ctx.help_text)


VERB = CommandVerb(SPEC, run)
