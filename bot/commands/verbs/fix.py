"""``/shepherd fix``: run the repair on the head now, through the repair job's own function."""

from __future__ import annotations

from bot.commands.spec import COMMAND_PREFIX, CommandContext, CommandSpec, CommandVerb, VerbResult
from bot.kernel.problems import Category, OutcomeKind
from bot.store.episodes import budget_state, is_paused

SPEC = CommandSpec(
    verb="fix",
    help="Try to repair the failed checks on this PR's head: known autofixes first, "
    "then at most one LLM attempt. Pushes only a verified fix.",
    needs_write=True,
    button_label="Try a fix",
    button_description="Apply a verified fix for failed checks",
)


async def run(ctx: CommandContext) -> VerbResult:
    if not ctx.is_open:
        return VerbResult(reply="This pull request is closed; there is nothing to fix.")
    if is_paused(ctx.events):
        return VerbResult(
            reply=f"Shepherd is paused on this PR. Comment `{COMMAND_PREFIX} resume` first, "
            f"then `{COMMAND_PREFIX} fix`."
        )
    before = budget_state(ctx.events, ctx.head, head_has_trailer=False)
    head = ctx.head
    outcome = await ctx.repair("command")
    summary = f"{outcome.title} (head `{head[:7]}`)."
    if outcome.outcome is OutcomeKind.NOOP:
        # The repair reports nothing when there is nothing to repair: say so here.
        detail = f" {outcome.detail}" if outcome.detail else ""
        return VerbResult(
            summary=summary,
            reply=f"{outcome.title} on `{head[:7]}`; nothing was changed.{detail}",
        )
    if outcome.outcome is OutcomeKind.HANDOFF and outcome.budget.ci_rounds_used >= 2:
        return VerbResult(
            summary=summary,
            reply=(
                f"This episode's budget is spent: `{head[:7]}` is Shepherd's own commit "
                "(CI round 2/2), and Shepherd never re-fixes its own work. A new push by "
                "someone other than Shepherd starts a new episode and re-arms "
                f"`{COMMAND_PREFIX} fix`."
            ),
        )
    needs_agent = any(f.category is Category.AGENT for f in outcome.failures)
    if outcome.outcome is OutcomeKind.HANDOFF and needs_agent and before.llm_attempts >= 1:
        return VerbResult(
            summary=summary,
            reply=(
                "This episode's budget is spent: the one LLM attempt was already used "
                f"({outcome.budget.describe()}). A new push by someone other than Shepherd "
                f"starts a new episode and re-arms `{COMMAND_PREFIX} fix`."
            ),
        )
    return VerbResult(summary=summary)


VERB = CommandVerb(SPEC, run)
