"""``lockfile``: regenerate ``uv.lock`` with ``uv lock`` when ``uv lock --locked`` failed."""

from __future__ import annotations

import re

from bot.logs import DistilledLog
from bot.tools import ToolRun, run_fixer, tool_for
from fixers.base import FixContext, FixResult, RepoFiles

_STALE = re.compile(r"The lockfile at `uv\.lock` needs to be updated")
_COMMAND = re.compile(r"\buv\s+(lock|sync|run)\b[^\n]*--(locked|check)\b")

#: uv must not fetch interpreters (a download outside the package registries), nor show progress.
_ENV = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}


class LockfileFixer:
    name = "lockfile"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        if _STALE.search(log.excerpt):
            return True
        return bool(_COMMAND.search(log.commands)) and "needs to be updated" in log.excerpt

    async def apply(self, ctx: FixContext) -> FixResult:
        choice = await tool_for("uv", ctx)
        run = ToolRun(
            fix=[*choice.argv_prefix, "lock"],
            check=[*choice.argv_prefix, "lock", "--locked"],
            # Resolution needs the package index; the sandbox still carries no secrets.
            network=True,
            env=_ENV,
        )
        return await run_fixer(
            ctx,
            self.name,
            choice,
            [run],
            note="uv lock ran in the sandbox with network access (package index only; no secrets)",
        )


LOCKFILE = LockfileFixer()
