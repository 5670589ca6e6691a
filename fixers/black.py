"""``black``: reformat Python files with black when ``black --check`` failed."""

from __future__ import annotations

import re

from bot.diagnosis.logs import DistilledLog
from fixers.base import FixContext, FixResult, RepoFiles
from fixers.tools import ToolRun, run_fixer, tool_args_from_command, tool_for, without_flags

_COMMAND = re.compile(r"\bblack\b[^\n]*(--check|--diff)")
# black's own wording; ruff format says "Would reformat: path" (capital W, colon).
_EXCERPT = re.compile(r"^would reformat \S|Oh no! .*\n.*would be reformatted", re.M)
_CHECK_FLAGS = ("--check", "--diff", "--color", "--no-color")


class BlackFixer:
    name = "black"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        if _EXCERPT.search(log.excerpt):
            return True
        return bool(_COMMAND.search(log.commands)) and "would be reformatted" in log.excerpt

    async def apply(self, ctx: FixContext) -> FixResult:
        choice = await tool_for("black", ctx)
        args = tool_args_from_command(ctx.log.command, "black")
        fix_args = without_flags(args, _CHECK_FLAGS) if args is not None else ["."]
        targets = fix_args or ["."]
        run = ToolRun(
            fix=[*choice.argv_prefix, *targets],
            check=[*choice.argv_prefix, "--check", *targets],
        )
        return await run_fixer(ctx, self.name, choice, [run])


BLACK = BlackFixer()
