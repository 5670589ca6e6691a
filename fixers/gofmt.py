"""``gofmt``: ``gofmt -w`` (``goimports -w`` where the check runs goimports).

Claims a failing step whose script runs ``gofmt``/``goimports`` in list or diff mode (``gofmt -l
.``, ``test -z "$(gofmt -l .)"``, ``gofmt -d .``, often in a multi-line ``run:`` script) and whose
output lists Go files or their diffs, and golangci-lint's ``File is not `gofmt`-ed`` findings.
The fix rewrites the same targets with the same options (``-s``, goimports' ``-local``).

The formatter is the Go toolchain's: the job environment's (``actions/setup-go`` with the
version from ``go.mod``), else the bundled one (Debian's ``golang-go`` and
``golang-golang-x-tools`` at ``/usr/bin``). The summary names the Go version that ran, and says
so when ``go.mod`` asks for another one. Nothing is downloaded: ``GOPROXY=off`` and
``GOTOOLCHAIN=local``.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path, PurePosixPath

from bot.diagnosis.logs import DistilledLog
from fixers.base import FixContext, FixResult, RepoFiles, WorktreeFiles
from fixers.tools import ToolChoice, ToolRun, fix_dir, probe, run_fixer

_COMMAND = re.compile(r"(?<![\w/-])(gofmt|goimports)(?![\w-])")
_LISTED = re.compile(r"^\s*(?:\./)?[\w./-]+\.go\s*$", re.M)
_DIFF = re.compile(r"^diff (?:-u )?\S+\.go\.orig \S+\.go\s*$", re.M)
_LINTER = re.compile(r"is not `(gofmt|goimports)`-ed(?: with `-s`)?")
_GO_DIRECTIVE = re.compile(r"^(?:toolchain go|go )(\d+\.\d+(?:\.\d+)?)\s*$", re.M)
_GO_VERSION = re.compile(r"\bgo(\d+\.\d+(?:\.\d+)?)\b")
#: Flags of a list/diff run that the rewriting run does not repeat.
_MODE_FLAGS = frozenset({"-l", "-d", "-e", "-w", "-list", "-diff", "-write"})
_TOKEN_END = re.compile(r"[;|&)`$\n]")
_SAFE_TARGET = re.compile(r"[\w./-]+")
_ENV = {"GOPROXY": "off", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}


def invocation(command: str, excerpt: str = "") -> tuple[str, list[str], list[str]]:
    """(tool, options, targets) of the step's gofmt or goimports run; ``(gofmt, [], ["."])``
    when the command does not show them plainly. Options are kept only when plain (``-s``,
    ``-local prefix``); targets only when they are plain relative paths."""
    lint = _LINTER.search(excerpt)
    found = _COMMAND.search(command)
    tool = found.group(1) if found else (lint.group(1) if lint else "gofmt")
    options: list[str] = []
    targets: list[str] = []
    if found is not None:
        rest = _TOKEN_END.split(command[found.end() :], maxsplit=1)[0]
        try:
            words = shlex.split(rest)
        except ValueError:
            words = []
        skip_value = False
        for word in words:
            if skip_value:
                if _SAFE_TARGET.fullmatch(word):
                    options.append(word)
                else:
                    options.pop()
                skip_value = False
            elif word in _MODE_FLAGS:
                continue
            elif word in ("-s", "-r", "-local"):
                if word == "-r":
                    break  # a rewrite rule: not reproduced
                options.append(word)
                skip_value = word == "-local"
            elif word.startswith("-"):
                continue
            elif _SAFE_TARGET.fullmatch(word) and _relative(word):
                targets.append(word)
    elif lint is not None and "`-s`" in lint.group(0):
        options.append("-s")
    return tool, options, targets or ["."]


class GofmtFixer:
    name = "gofmt"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        if _LINTER.search(log.excerpt):
            return True
        if not _COMMAND.search(log.commands):
            return False
        return bool(_DIFF.search(log.excerpt) or _LISTED.search(log.excerpt))

    async def apply(self, ctx: FixContext) -> FixResult:
        cwd = await asyncio.to_thread(fix_dir, ctx)
        tool, options, targets = invocation(ctx.log.commands, ctx.log.excerpt)
        choice = await self._choose(ctx, cwd, tool)
        exe = list(choice.argv_prefix)
        listing = 'out=$("$@") && printf %s "$out" && test -z "$out"'
        run = ToolRun(
            fix=[*exe, "-w", *options, *targets],
            check=["sh", "-c", listing, "sh", *exe, "-l", *options, *targets],
            env=_ENV,
        )
        return await run_fixer(ctx, self.name, choice, [run])

    async def _choose(self, ctx: FixContext, cwd: Path, tool: str) -> ToolChoice:
        where = await probe(ctx, ["sh", "-c", f"command -v {tool}"], cwd=cwd)
        go = await probe(ctx, ["go", "version"], cwd=cwd)
        found = _GO_VERSION.search(go or "")
        version = found.group(1) if found else "unknown"
        bundled = where in (None, f"/usr/bin/{tool}")
        source = "bundled" if bundled else "the job's Go toolchain"
        wanted = await asyncio.to_thread(_go_mod_version, ctx)
        if wanted and not version.startswith(_minor(wanted)):
            source += f"; go.mod asks for go {wanted}"
        return ToolChoice(tool, f"go{version}", source, (where or tool,))


def _relative(path: str) -> bool:
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _go_mod_version(ctx: FixContext) -> str | None:
    files = WorktreeFiles(ctx.worktree)
    for base in ([ctx.subdir] if ctx.subdir else []) + [""]:
        text = files.read_text(f"{base}/go.mod" if base else "go.mod")
        if text is None:
            continue
        versions = _GO_DIRECTIVE.findall(text)
        # A toolchain line names the exact toolchain; the go line the language version.
        toolchain = re.search(r"^toolchain go(\S+)", text, re.M)
        return toolchain.group(1) if toolchain else (versions[0] if versions else None)
    return None


GOFMT = GofmtFixer()
