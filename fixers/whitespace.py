"""``whitespace``: pre-commit-hooks' trailing-whitespace, end-of-file and mixed-line-ending fixers.

Runs their console scripts (from the bundled pre-commit-hooks) on the tracked text files, as
pre-commit does with ``--all-files``. Only the hooks the log shows failing are run: pre-commit's
own report, or a linter's findings of the same two problems (a missing newline at the end of a
file, trailing whitespace) when those are all it found.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from bot.diagnosis.logs import DistilledLog
from bot.git.workspace import Worktree, read_file_head, tracked_files
from fixers.base import FixContext, FixResult, RepoFiles, WorktreeFiles
from fixers.tools import ToolChoice, ToolRun, bundled_version, is_protected, run_fixer

#: hook id → (name pre-commit prints, console script, default args)
HOOKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "trailing-whitespace": ("trim trailing whitespace", "trailing-whitespace-fixer", ()),
    "end-of-file-fixer": ("fix end of files", "end-of-file-fixer", ()),
    "mixed-line-ending": ("mixed line ending", "mixed-line-ending", ("--fix=auto",)),
}
_FAILED = re.compile(
    r"^(trim trailing whitespace|fix end of files|mixed line ending)\.{3,}\s*Failed"
    r"|^- hook id: (trailing-whitespace|end-of-file-fixer|mixed-line-ending)\s*$",
    re.M,
)
#: Hook args copied from .pre-commit-config.yaml must look like plain options.
_SAFE_ARG = re.compile(r"--[a-z][a-z-]{0,40}(=[A-Za-z0-9_.,-]{0,40})?")
# Linters' findings of the problems these hooks fix (stylelint, eslint, pycodestyle/flake8/ruff,
# markdownlint, yamllint), each on a line with its ``line:col`` position.
_POSITION = re.compile(r"\b\d+:\d+\b")
_LINT_EOF = re.compile(
    r"no-missing-(?:eof|end-of-source)-newline|\beol-last\b|\bW292\b|\bMD047\b"
    r"|new-line-at-end-of-file|(?:missing|no) (?:final )?newline at (?:the )?end of (?:the )?file"
    r"|Newline required at end of file",
    re.IGNORECASE,
)
_LINT_TRAILING = re.compile(
    r"\bno-trailing-spaces\b|\bW29[13]\b|\bMD009\b|\btrailing-spaces\b"
    r"|trailing (?:whitespace|spaces?) (?:not allowed|found)|\bW29[13] trailing whitespace",
    re.IGNORECASE,
)
# Other linters' findings: when there are any, the whitespace hooks alone cannot pass the check.
_OTHER_FINDING = re.compile(
    r"^\S+:\d+:\d+: [A-Z]+\d+ |^\s*\d+:\d+\s+(?:error|warning|✖|⚠)\s",
)
_BATCH = 200


def failed_hooks(excerpt: str) -> list[str]:
    """Hook ids the pre-commit output (or a linter's findings) shows failing, in HOOKS order."""
    found: set[str] = set()
    for match in _FAILED.finditer(excerpt):
        if match.group(2):
            found.add(match.group(2))
        else:
            found.update(k for k, (name, _, _) in HOOKS.items() if name == match.group(1))
    if not found:
        found = _lint_hooks(excerpt)
    return [hook for hook in HOOKS if hook in found]


def _lint_hooks(excerpt: str) -> set[str]:
    """The hooks for a linter's whitespace findings, when those are all the findings it shows."""
    hooks: set[str] = set()
    for line in excerpt.splitlines():
        if not _POSITION.search(line):
            continue
        if _LINT_EOF.search(line):
            hooks.add("end-of-file-fixer")
        elif _LINT_TRAILING.search(line):
            hooks.add("trailing-whitespace")
        elif _OTHER_FINDING.search(line):
            return set()
    return hooks


def configured_args(config_text: str | None, hook_id: str) -> tuple[str, ...] | None:
    """The hook's ``args`` from .pre-commit-config.yaml when present and plain, else None."""
    if config_text is None:
        return None
    try:
        data = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return None
    repos = data.get("repos") if isinstance(data, dict) else None
    for repo in repos if isinstance(repos, list) else []:
        hooks = repo.get("hooks") if isinstance(repo, dict) else None
        for hook in hooks if isinstance(hooks, list) else []:
            if isinstance(hook, dict) and hook.get("id") == hook_id:
                args = hook.get("args")
                if isinstance(args, list) and all(
                    isinstance(a, str) and _SAFE_ARG.fullmatch(a) for a in args
                ):
                    return tuple(args)
    return None


def text_files(wt: Worktree, protected: Sequence[str]) -> list[str]:
    files = [p for p in tracked_files(wt) if not is_protected(p, protected)]
    # "./" keeps a file named like an option from being read as one.
    return [f"./{p}" if p.startswith("-") else p for p in files if _is_text(wt, p)]


def _is_text(wt: Worktree, path: str) -> bool:
    head = read_file_head(wt, path, 8192)
    return head is not None and b"\0" not in head


class WhitespaceFixer:
    name = "whitespace"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        return bool(failed_hooks(log.excerpt))

    async def apply(self, ctx: FixContext) -> FixResult:
        # pre-commit runs from the repository root whatever the step's directory.
        root_ctx = dataclasses.replace(ctx, subdir="")
        worktree = ctx.worktree
        files = await asyncio.to_thread(text_files, ctx.checkout, ctx.protected_paths)
        hooks = failed_hooks(ctx.log.excerpt) or list(HOOKS)
        config_text = WorktreeFiles(worktree).read_text(".pre-commit-config.yaml")
        bin_dir = Path(sys.executable).parent
        runs: list[ToolRun] = []
        for hook in hooks:
            _, script, default_args = HOOKS[hook]
            args = configured_args(config_text, hook) or default_args
            for start in range(0, len(files), _BATCH):
                argv = [str(bin_dir / script), *args, *files[start : start + _BATCH]]
                # Exit 1 means "fixed something"; the re-run as check must then exit 0.
                runs.append(ToolRun(fix=argv, check=argv, ok_codes=frozenset({0, 1})))
        version = bundled_version("pre-commit-hooks")
        choice = ToolChoice("pre-commit-hooks", version, "bundled", ())
        return await run_fixer(root_ctx, self.name, choice, runs, note=f"hooks: {', '.join(hooks)}")


WHITESPACE = WhitespaceFixer()
