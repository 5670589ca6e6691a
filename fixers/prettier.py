"""``prettier``: ``prettier --write`` on the files ``prettier --check`` flagged."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path, PurePosixPath

from bot.diagnosis.logs import DistilledLog
from bot.kernel.errors import FixerError
from fixers.base import FixContext, FixResult, RepoFiles
from fixers.tools import ToolRun, fix_dir, run_fixer, tool_for

# prettier 3: "Code style issues found in 3 files. Run Prettier with --write to fix."
# prettier 2: "Code style issues found in the above file(s). Forgot to run Prettier?"
_ISSUES = re.compile(r"Code style issues (found|were found)")
_FLAGGED = re.compile(r"^\[warn\] (?!Code style issues)(\S.*?)\s*$", re.M)
_SCRIPT = re.compile(r"\b(?:npm run(?:-script)?|yarn(?: run)?|pnpm(?: run)?)\s+([\w:.-]+)")


def package_script(repo: RepoFiles, subdir: str, name: str) -> str | None:
    path = str(PurePosixPath(subdir) / "package.json") if subdir else "package.json"
    text = repo.read_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    scripts = data.get("scripts") if isinstance(data, dict) else None
    script = scripts.get(name) if isinstance(scripts, dict) else None
    return script if isinstance(script, str) else None


def flagged_files(excerpt: str) -> list[str]:
    return [m.group(1) for m in _FLAGGED.finditer(excerpt)]


class PrettierFixer:
    name = "prettier"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        if not _ISSUES.search(log.excerpt):
            return False
        command = log.command or ""
        # The step's own command, or a package script it ran (``npm run lint`` → ``prettier``).
        if "prettier" in log.commands or re.search(r"^> prettier\b", log.excerpt, re.M):
            return True
        subdir = log.working_directory or ""
        for match in _SCRIPT.finditer(command):
            script = package_script(repo, subdir, match.group(1))
            if script is not None and "prettier" in script:
                return True
        return False

    async def apply(self, ctx: FixContext) -> FixResult:
        choice = await tool_for("prettier", ctx)
        exe = Path(choice.argv_prefix[0])
        if not await asyncio.to_thread(exe.exists):
            raise FixerError(
                f"prettier is not installed at {exe}: run scripts/install-system-deps.sh"
            )
        cwd = await asyncio.to_thread(fix_dir, ctx)
        targets = await asyncio.to_thread(_existing, cwd, flagged_files(ctx.log.excerpt))
        targets = targets or ["."]
        run = ToolRun(
            fix=[*choice.argv_prefix, "--write", *targets],
            check=[*choice.argv_prefix, "--check", *targets],
        )
        return await run_fixer(ctx, self.name, choice, [run])


def _existing(cwd: Path, paths: list[str]) -> list[str]:
    """The flagged paths that are files below ``cwd`` (the log is hostile input)."""
    kept: list[str] = []
    for path in paths:
        candidate = (cwd / path).resolve()
        if (
            candidate.is_relative_to(cwd)
            and candidate.is_file()
            and not PurePosixPath(path).is_absolute()
        ):
            kept.append(f"./{path}" if path.startswith("-") else path)
    return kept


PRETTIER = PrettierFixer()
