"""The ``Fixer`` protocol every autofix (and the LLM repair) satisfies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bot.diagnosis.logs import DistilledLog

# Part of the contract a fixer implements (``matches`` reads them); defined where diagnosis,
# which sits below the fixers, can use them too.
from bot.diagnosis.repofiles import NoFiles as NoFiles
from bot.diagnosis.repofiles import RepoFiles as RepoFiles
from bot.git.workspace import Worktree
from bot.sandbox import Runner


class WorktreeFiles:
    """A repository view over a checked-out directory, confined to it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _confined(self, path: str) -> Path | None:
        candidate = (self.root / path).resolve()
        return candidate if candidate.is_relative_to(self.root) else None

    def exists(self, path: str) -> bool:
        p = self._confined(path)
        return p is not None and p.exists()

    def read_text(self, path: str) -> str | None:
        p = self._confined(path)
        if p is None or not p.is_file():
            return None
        try:
            return p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None


@dataclass(frozen=True)
class FixContext:
    """Everything a fixer may use to apply itself. Nothing here carries a token or a secret."""

    #: The job's worktree (the checked-out PR head) as Shepherd recorded it: its files and the
    #: git directory Shepherd named, never the one the tree's ``.git`` names.
    checkout: Worktree
    #: Sub-project the failing step ran in, relative to the worktree ('' for the root).
    subdir: str
    #: The distilled failure the fixer matched.
    log: DistilledLog
    #: Runs the tool; in production the bubblewrap sandbox.
    runner: Runner
    #: Paths (globs, repository-relative) the repository config says never to touch.
    protected_paths: Sequence[str] = field(default_factory=tuple)
    #: ``autofix.scope: changed``: the repository-relative paths the pull request changed; a
    #: change the tool makes to any other file is put back (``FixResult.out_of_scope``). None:
    #: every file is in scope.
    scope: frozenset[str] | None = None
    #: ``owner/name`` of the repository ('' when unknown): part of the key of caches a fixer
    #: keeps between jobs (pre-commit's hook environments), so no repository shares another's.
    repository: str = ""

    @property
    def worktree(self) -> Path:
        """Root of the worktree's files."""
        return self.checkout.path


@dataclass(frozen=True)
class FixResult:
    fixer: str
    #: Whether the tool changed any file.
    changed: bool
    #: e.g. "ruff 0.17.6 (pinned in pyproject.toml)" or "black 26.10.1 (bundled)".
    tool_version: str | None = None
    #: True when the fixer's own check passes after applying it (e.g. ``ruff check`` exits 0).
    self_check_passed: bool = False
    detail: str = ""
    #: LLM tokens spent (input, output, cache_read, cache_write); empty for deterministic fixers.
    llm_usage: dict[str, int] = field(default_factory=dict)
    #: The fix may change what the code does (an eslint rule outside the layout/stylistic set,
    #: ``clippy --fix``): it goes to review as suggestions unless the repository allows pushing
    #: such fixes (``autofix.behaviour_changes: push``). ``behaviour_note`` says why.
    changes_behaviour: bool = False
    behaviour_note: str = ""
    #: Files the tool changed outside ``FixContext.scope``, put back as they were.
    out_of_scope: tuple[str, ...] = ()


class Fixer(Protocol):
    """One known autofix. Modules in ``fixers/`` each export one instance; ``FIXERS`` lists them."""

    #: Stable name used in outputs and config (``ruff-check``, ``black``, ...).
    name: str

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        """Pure: does this failure look like one this fixer repairs?"""
        ...

    async def apply(self, ctx: FixContext) -> FixResult:
        """Apply the fix to ``ctx.worktree`` through ``ctx.runner``."""
        ...
