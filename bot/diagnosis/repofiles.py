"""What diagnosis and the fixers may read of a repository: a read-only view of its files."""

from __future__ import annotations

from typing import Protocol


class RepoFiles(Protocol):
    """Read-only view of a repository's files (a worktree, a git tree at a SHA, or nothing)."""

    def exists(self, path: str) -> bool: ...

    def read_text(self, path: str) -> str | None:
        """The file's text, or None when it does not exist or is not text."""
        ...


class NoFiles:
    """A repository view with no files (``shepherd diagnose`` has only the log)."""

    def exists(self, path: str) -> bool:
        return False

    def read_text(self, path: str) -> str | None:
        return None
