"""``command``: a fix the repository declares in ``.github/shepherd.yml``.

    autofix:
      commands:
        - check: make lint
          fix: make fmt

When a failing step's command is one of the ``check`` commands (the whole command, or one line
or ``&&`` segment of its script), Shepherd runs the matching ``fix`` in the sandbox, in the step's
working directory, then ``check`` again as the fixer's own check. Both come from the base
branch's configuration, so they are the maintainers' commands; they still run sandboxed, since
what they run (a Makefile, package scripts) is the pull request's. No network.

Unlike the registry's fixers this one is made per repository from its configuration
(``repo_fixers``); ``diagnose`` and ``repair_tree`` take it alongside ``FIXERS``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.diagnosis.logs import DistilledLog
from bot.kernel.repoconfig import FixCommand, RepoConfig
from fixers.base import FixContext, Fixer, FixResult, RepoFiles
from fixers.tools import ToolChoice, ToolRun, run_fixer

NAME = "command"
_SPACE = re.compile(r"\s+")


def _norm(command: str) -> str:
    return _SPACE.sub(" ", command.strip())


def _pieces(command: str) -> list[str]:
    """The command, each of its lines and each ``&&`` segment, whitespace normalised."""
    pieces = [_norm(command)]
    for line in command.splitlines():
        pieces.append(_norm(line))
        pieces.extend(_norm(part) for part in line.split("&&"))
    return [p for p in pieces if p]


class CommandFixer:
    """The repository's declared fix commands."""

    name = NAME

    def __init__(self, commands: Sequence[FixCommand]) -> None:
        self.commands = tuple(commands)

    def command_for(self, log: DistilledLog) -> FixCommand | None:
        pieces = set(_pieces(log.command or ""))
        return next((c for c in self.commands if _norm(c.check) in pieces), None)

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        return self.command_for(log) is not None

    async def apply(self, ctx: FixContext) -> FixResult:
        declared = self.command_for(ctx.log)
        if declared is None:
            return FixResult(fixer=self.name, changed=False, detail="no declared command matches")
        choice = ToolChoice(
            NAME, f"`{declared.fix}`", "declared in .github/shepherd.yml", ("bash",)
        )
        run = ToolRun(
            fix=["bash", "-e", "-c", declared.fix],
            check=["bash", "-e", "-c", declared.check],
        )
        return await run_fixer(ctx, self.name, choice, [run])


def repo_fixers(config: RepoConfig) -> list[Fixer]:
    """The fixers a repository's configuration adds to the registry's."""
    return [CommandFixer(config.autofix.commands)] if config.autofix.commands else []
