"""The one exception tree of Shepherd.

Library errors (gidgethub, aiohttp, asyncpg, sqlite3, anthropic, subprocess) are mapped to these
at the boundary that calls the library, chained with ``raise ... from exc``, so the core only ever
handles ``ShepherdError`` subclasses.
"""

from __future__ import annotations


class ShepherdError(Exception):
    """Base of every error Shepherd raises on purpose."""

    #: Whether doing the same thing again later may succeed.
    retryable: bool = False


class PayloadError(ShepherdError):
    """A webhook body is not what GitHub sends (not JSON, or not a JSON object)."""


class ConfigError(ShepherdError):
    """Settings or repository configuration are invalid; an operator must act."""


class StoreError(ShepherdError):
    """The durable store failed or is unreachable."""

    retryable = True


class GitHubError(ShepherdError):
    """A GitHub API call failed after the client's own retries."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable


class GitHubRateLimited(GitHubError):
    """Primary or secondary rate limit hit and the bounded wait was not enough."""


class PushRejected(GitHubError):
    """GitHub refused the ref update: the branch moved, is protected, or is a fork we cannot write."""


class WorkspaceError(ShepherdError):
    """A git operation on the mirror cache or a worktree failed."""


class SandboxError(ShepherdError):
    """An untrusted command could not be run safely (no sandbox, or the sandbox itself failed)."""


class SandboxUnavailable(SandboxError):
    """bubblewrap is missing or cannot create namespaces, and running unsandboxed is not allowed."""


class FixerError(ShepherdError):
    """A fixer tool could not be run (missing tool, crash, timeout)."""


class UnsafeWorktree(ShepherdError):
    """Untrusted code wrote git metadata (a ``.git`` file or directory, a nested repository) into
    a worktree. The job stops there: no git command reads that tree again and nothing is pushed."""

    def __init__(self, paths: list[str]) -> None:
        shown = ", ".join(f"`{p}`" for p in paths[:5])
        super().__init__(
            f"code from the pull request wrote git metadata into the worktree ({shown}); "
            "Shepherd stopped this repair without reading the tree again"
        )
        self.paths = list(paths)


class ServiceError(ShepherdError):
    """A job's service (postgres, redis, mysql/mariadb) could not be started or set up."""


class ServiceUnavailable(ServiceError):
    """A workflow service this host cannot provide: the job hands off instead of passing silently."""

    def __init__(self, name: str, image: str, reason: str = "") -> None:
        message = f"service {name} (image {image}) cannot be provided here"
        super().__init__(f"{message}: {reason}" if reason else message)
        self.name = name
        self.image = image
        self.reason = reason
