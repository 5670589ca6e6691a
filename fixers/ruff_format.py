"""``ruff-format``: reformat with ruff when ``ruff format --check`` failed."""

from __future__ import annotations

import re

from bot.diagnosis.logs import DistilledLog
from fixers.base import FixContext, FixResult, RepoFiles
from fixers.tools import ToolRun, run_fixer, tool_args_from_command, tool_for, without_flags

_COMMAND = re.compile(r"\bruff\s+format\b[^\n]*(--check|--diff)")
_EXCERPT = re.compile(r"^Would reformat: \S", re.M)
_CHECK_FLAGS = ("--check", "--diff")


class RuffFormatFixer:
    name = "ruff-format"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        if _EXCERPT.search(log.excerpt):
            return True
        return bool(_COMMAND.search(log.commands)) and "would be reformatted" in log.excerpt

    async def apply(self, ctx: FixContext) -> FixResult:
        choice = await tool_for("ruff", ctx)
        args = tool_args_from_command(ctx.log.command, "ruff", ("format",))
        rest = (without_flags(args, _CHECK_FLAGS) if args is not None else []) or ["."]
        run = ToolRun(
            fix=[*choice.argv_prefix, "format", "--no-cache", *rest],
            check=[*choice.argv_prefix, "format", "--check", "--no-cache", *rest],
        )
        return await run_fixer(ctx, self.name, choice, [run])


RUFF_FORMAT = RuffFormatFixer()
