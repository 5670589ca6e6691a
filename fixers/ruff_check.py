"""``ruff-check``: apply ruff's safe fixes when ``ruff check`` reported fixable findings."""

from __future__ import annotations

import re

from bot.diagnosis.logs import DistilledLog
from fixers.base import FixContext, FixResult, RepoFiles
from fixers.tools import ToolRun, run_fixer, tool_args_from_command, tool_for, without_flags

_COMMAND = re.compile(r"\bruff\s+check\b")
# "[*] 5 fixable with `--fix`." (newer) / "[*] 5 fixable with the `--fix` option." (older). Not
# requiring fixable == found: fixes can make other findings disappear (see af-ruff-check case).
_FIXABLE = re.compile(r"\[\*\] [1-9]\d* fixable with (the )?`--fix`")
_CHECK_FLAGS = ("--diff", "--fix", "--no-fix", "--exit-non-zero-on-fix", "--statistics")


class RuffCheckFixer:
    name = "ruff-check"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        return bool(_COMMAND.search(log.commands)) and bool(_FIXABLE.search(log.excerpt))

    async def apply(self, ctx: FixContext) -> FixResult:
        choice = await tool_for("ruff", ctx)
        args = tool_args_from_command(ctx.log.command, "ruff", ("check",))
        rest = without_flags(args, _CHECK_FLAGS) if args is not None else ["."]
        rest = rest or ["."]
        run = ToolRun(
            fix=[*choice.argv_prefix, "check", "--fix", "--no-cache", *rest],
            check=[*choice.argv_prefix, "check", "--no-cache", *rest],
            # 1: findings remain that ruff cannot fix; the self-check reports that.
            ok_codes=frozenset({0, 1}),
        )
        return await run_fixer(ctx, self.name, choice, [run])


RUFF_CHECK = RuffCheckFixer()
