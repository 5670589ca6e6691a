"""``isort``: sort imports when ``isort --check-only`` failed."""

from __future__ import annotations

import re

from bot.diagnosis.logs import DistilledLog
from fixers.base import FixContext, FixResult, RepoFiles
from fixers.tools import ToolRun, run_fixer, tool_args_from_command, tool_for, without_flags

_COMMAND = re.compile(r"\bisort\b[^\n]*\s(--check-only|--check|-c|--diff)\b")
_EXCERPT = re.compile(r"Imports are incorrectly sorted")
_CHECK_FLAGS = ("--check-only", "--check", "-c", "--diff", "--color")


class IsortFixer:
    name = "isort"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        if _EXCERPT.search(log.excerpt):
            return True
        return bool(_COMMAND.search(log.commands)) and "ERROR:" in log.excerpt

    async def apply(self, ctx: FixContext) -> FixResult:
        choice = await tool_for("isort", ctx)
        args = tool_args_from_command(ctx.log.command, "isort")
        targets = (without_flags(args, _CHECK_FLAGS) if args is not None else []) or ["."]
        run = ToolRun(
            fix=[*choice.argv_prefix, *targets],
            check=[*choice.argv_prefix, "--check-only", *targets],
        )
        return await run_fixer(ctx, self.name, choice, [run])


ISORT = IsortFixer()
