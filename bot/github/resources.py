"""Partial models of the GitHub REST answers the bot reads (safir style).

Only the fields read are declared, each documented; unknown fields are dropped, never rejected
(``extra="ignore"``). Answers are parsed where they enter the code that reads them, so the rest
of it works with attributes, not ``["x"]`` / ``.get("x")`` chains. Where a REST answer has the
shape of a webhook payload's object, the webhook model (:mod:`bot.github.webhooks`) is used.

Fields GitHub may leave out or send as ``null`` default to the value the bot treats them as.
https://docs.github.com/en/rest
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from bot.github.webhooks import CheckRunOutput, Label, User
from bot.kernel import JSONObject

__all__ = [
    "ActionsJob",
    "CheckRun",
    "CheckRunApp",
    "CheckRunOutput",
    "Comment",
    "CommitComparison",
    "CompareCommit",
    "Created",
    "CreatedCommit",
    "GitCommit",
    "GitRef",
    "Label",
    "PullFile",
    "PullRef",
    "PullRepo",
    "PullRequest",
    "TeamRef",
    "User",
    "parse_list",
]


class _Resource(BaseModel):
    """Base of every REST model: unknown fields are dropped, never rejected."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Created(_Resource):
    """The answer to a create call of which only the new object's id is read."""

    id: int = Field(description="Id of the created object (check run, comment ...).")


class PullRepo(_Resource):
    """The repository a pull request's branch lives in (``head.repo``, ``base.repo``)."""

    full_name: str = Field(description="``owner/name``; a fork's differs from the base's.")
    clone_url: str = Field(default="", description="HTTPS URL git pushes to.")


class PullRef(_Resource):
    """One end of a pull request (``head`` or ``base``)."""

    ref: str = Field(default="", description="Branch name.")
    sha: str = Field(description="Commit SHA.")
    repo: PullRepo | None = Field(
        default=None, description="Repository of the branch; null when a fork was deleted."
    )


class TeamRef(_Resource):
    """A team asked to review (``requested_teams``)."""

    slug: str = Field(default="", description="Team slug.")


class PullRequest(_Resource):
    """``GET /repos/{owner}/{repo}/pulls/{n}`` and the items of ``commits/{sha}/pulls``."""

    number: int = Field(description="Pull request number.")
    title: str = Field(default="", description="Title.")
    state: str = Field(default="", description='"open" or "closed".')
    body: str | None = Field(default=None, description="Description; null when left empty.")
    user: User = Field(description="Author.")
    draft: bool = Field(default=False, description="Whether the PR is a draft.")
    head: PullRef = Field(description="Head branch and commit.")
    base: PullRef = Field(description="Base branch and commit.")
    labels: list[Label] = Field(default_factory=list, description="Current labels.")
    assignees: list[User] = Field(default_factory=list, description="Assignees.")
    requested_reviewers: list[User] = Field(
        default_factory=list, description="Users asked to review (and not yet reviewed)."
    )
    requested_teams: list[TeamRef] = Field(
        default_factory=list, description="Teams asked to review."
    )
    maintainer_can_modify: bool | None = Field(
        default=None, description="Whether a fork's author allows maintainers to push."
    )
    changed_files: int = Field(default=0, description="Number of files changed.")

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]


class PullFile(_Resource):
    """One item of ``GET /repos/{owner}/{repo}/pulls/{n}/files``."""

    filename: str = Field(description="Path of the file in the head.")
    previous_filename: str | None = Field(default=None, description="Path before a rename.")
    status: str = Field(default="modified", description="added, removed, modified, renamed ...")
    additions: int = Field(default=0, description="Lines added.")
    deletions: int = Field(default=0, description="Lines deleted.")
    patch: str | None = Field(
        default=None, description="The file's diff; absent for binary files and large diffs."
    )


class GitCommit(_Resource):
    """The git commit inside a compare item (``commits[].commit``)."""

    message: str = Field(default="", description="Full commit message, trailers included.")


class CompareCommit(_Resource):
    """One commit of a comparison."""

    commit: GitCommit = Field(default_factory=GitCommit, description="The git commit.")


class CommitComparison(_Resource):
    """``GET /repos/{owner}/{repo}/compare/{base}...{head}`` (only its commits are read)."""

    commits: list[CompareCommit] = Field(
        default_factory=list, description="Commits from base to head, oldest first."
    )

    @property
    def messages(self) -> list[str]:
        return [c.commit.message for c in self.commits]


class CheckRunApp(_Resource):
    """The App owning a check run."""

    slug: str | None = Field(default=None, description="App slug, e.g. ``github-actions``.")


class CheckRun(_Resource):
    """One item of ``GET /repos/{owner}/{repo}/commits/{ref}/check-runs``."""

    id: int = Field(description="Check run id; for GitHub Actions it is the job id.")
    name: str = Field(default="", description="Check run name, e.g. ``shepherd`` or a job name.")
    status: str = Field(default="", description="queued, in_progress or completed.")
    conclusion: str | None = Field(default=None, description="Conclusion; null until done.")
    app: CheckRunApp | None = Field(default=None, description="App that owns the check run.")
    output: CheckRunOutput = Field(default_factory=CheckRunOutput, description="Visible output.")

    @property
    def app_slug(self) -> str | None:
        return self.app.slug if self.app else None


class ActionsJob(_Resource):
    """``GET /repos/{owner}/{repo}/actions/jobs/{job_id}`` (only its run is read)."""

    run_id: int | None = Field(default=None, description="The workflow run the job is part of.")


class GitRefObject(_Resource):
    """What a git ref points at."""

    sha: str = Field(description="Commit SHA.")


class CreatedCommit(_Resource):
    """``POST /repos/{owner}/{repo}/git/commits`` (only the new commit's SHA is read)."""

    sha: str = Field(description="SHA of the new commit.")


class GitRef(_Resource):
    """``GET /repos/{owner}/{repo}/git/ref/{ref}``."""

    object: GitRefObject = Field(description="The commit the ref points at.")


class Comment(_Resource):
    """One item of ``GET /repos/{owner}/{repo}/issues/{n}/comments``."""

    id: int = Field(description="Comment id.")
    body: str | None = Field(default=None, description="Markdown body.")
    user: User | None = Field(default=None, description="Author; null for deleted accounts.")


_M = TypeVar("_M", bound=BaseModel)


def parse_list(model: type[_M], items: list[JSONObject]) -> list[_M]:
    """Parse each item of a list answer."""
    return [model.model_validate(item) for item in items]
