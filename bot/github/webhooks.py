"""Partial pydantic models of the GitHub webhook payloads Shepherd reads.

Only the fields the bot uses are modelled; everything else in a payload is ignored
(``extra="ignore"``), so GitHub adding fields never breaks parsing. Fields GitHub sometimes leaves
out (older payload shapes, repository or organization hooks instead of App deliveries) are
optional. Actions are typed as ``str`` so an action GitHub adds later still parses; compare them
with the ``*Action`` enums, which are ``StrEnum`` and therefore equal to the plain strings.

Payload reference: https://docs.github.com/en/webhooks/webhook-events-and-payloads
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import orjson
import simdjson
from pydantic import BaseModel, ConfigDict, Field

from bot.kernel.errors import PayloadError

__all__ = [
    "EVENT_MODELS",
    "Account",
    "AccountType",
    "App",
    "CheckConclusion",
    "CheckRun",
    "CheckRunAction",
    "CheckRunEvent",
    "CheckRunOutput",
    "CheckStatus",
    "CheckSuite",
    "CheckSuiteAction",
    "CheckSuiteEvent",
    "CheckSuiteRef",
    "Commit",
    "CommitAuthor",
    "Envelope",
    "Hook",
    "Installation",
    "InstallationAction",
    "InstallationEvent",
    "InstallationRepositoriesAction",
    "InstallationRepositoriesEvent",
    "InstallationRepository",
    "Issue",
    "IssueComment",
    "IssueCommentAction",
    "IssueCommentEvent",
    "IssuePullRequestLink",
    "Label",
    "PingEvent",
    "PullRequest",
    "PullRequestAction",
    "PullRequestEvent",
    "PullRequestMinimal",
    "PullRequestMinimalRef",
    "PullRequestMinimalRepo",
    "PullRequestRef",
    "PushEvent",
    "Pusher",
    "Repository",
    "RepositorySummary",
    "RequestedAction",
    "Team",
    "User",
    "WebhookEvent",
    "WorkflowJob",
    "WorkflowJobAction",
    "WorkflowJobEvent",
    "WorkflowRun",
    "WorkflowRunAction",
    "WorkflowRunEvent",
    "WorkflowStep",
    "parse_event",
    "read_envelope",
]

# Timestamps: GitHub sends some as epoch seconds (installation.created_at in most installation
# events, repository.pushed_at in push) and others as ISO 8601 strings, in the same field across
# deliveries. pydantic parses both into an aware UTC datetime, so fields are typed ``datetime``.

# A SHA of forty zeros stands for "no commit" in push payloads (branch created or deleted).
NULL_SHA = "0" * 40


class _Model(BaseModel):
    """Base of every payload model: unknown fields are dropped, never rejected."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# --- enums of known values (compare with ==; the fields themselves stay ``str``) -----------------


class AccountType(StrEnum):
    """Kinds of GitHub account in ``user.type``."""

    user = "User"
    bot = "Bot"
    organization = "Organization"


class CheckRunAction(StrEnum):
    """Known ``check_run`` actions."""

    created = "created"
    completed = "completed"
    rerequested = "rerequested"
    requested_action = "requested_action"


class CheckSuiteAction(StrEnum):
    """Known ``check_suite`` actions."""

    completed = "completed"
    requested = "requested"
    rerequested = "rerequested"


class WorkflowRunAction(StrEnum):
    """Known ``workflow_run`` actions."""

    requested = "requested"
    in_progress = "in_progress"
    completed = "completed"


class WorkflowJobAction(StrEnum):
    """Known ``workflow_job`` actions."""

    queued = "queued"
    waiting = "waiting"
    in_progress = "in_progress"
    completed = "completed"


class PullRequestAction(StrEnum):
    """Known ``pull_request`` actions (GitHub adds new ones from time to time)."""

    assigned = "assigned"
    auto_merge_disabled = "auto_merge_disabled"
    auto_merge_enabled = "auto_merge_enabled"
    closed = "closed"
    converted_to_draft = "converted_to_draft"
    demilestoned = "demilestoned"
    dequeued = "dequeued"
    edited = "edited"
    enqueued = "enqueued"
    labeled = "labeled"
    locked = "locked"
    milestoned = "milestoned"
    opened = "opened"
    ready_for_review = "ready_for_review"
    reopened = "reopened"
    review_request_removed = "review_request_removed"
    review_requested = "review_requested"
    synchronize = "synchronize"
    unassigned = "unassigned"
    unlabeled = "unlabeled"
    unlocked = "unlocked"


class IssueCommentAction(StrEnum):
    """Known ``issue_comment`` actions."""

    created = "created"
    edited = "edited"
    deleted = "deleted"


class InstallationAction(StrEnum):
    """Known ``installation`` actions."""

    created = "created"
    deleted = "deleted"
    new_permissions_accepted = "new_permissions_accepted"
    suspend = "suspend"
    unsuspend = "unsuspend"


class InstallationRepositoriesAction(StrEnum):
    """Known ``installation_repositories`` actions."""

    added = "added"
    removed = "removed"


class CheckStatus(StrEnum):
    """Known ``status`` values of check runs, check suites, workflow runs and jobs."""

    queued = "queued"
    in_progress = "in_progress"
    completed = "completed"
    waiting = "waiting"
    requested = "requested"
    pending = "pending"


class CheckConclusion(StrEnum):
    """Known ``conclusion`` values of completed checks, workflow runs, jobs and steps."""

    success = "success"
    failure = "failure"
    neutral = "neutral"
    cancelled = "cancelled"
    skipped = "skipped"
    timed_out = "timed_out"
    action_required = "action_required"
    stale = "stale"
    startup_failure = "startup_failure"


#: Conclusions the repair ladder looks at (``cancelled`` and ``timed_out`` are usually infra).
FAILED_CONCLUSIONS: frozenset[str] = frozenset(
    {
        CheckConclusion.failure,
        CheckConclusion.timed_out,
        CheckConclusion.cancelled,
        CheckConclusion.startup_failure,
    }
)
#: The App that owns GitHub Actions' check runs; for it, a check run's id is the job id.
ACTIONS_APP_SLUG = "github-actions"


# --- shared sub-models -------------------------------------------------------------------------


class User(_Model):
    """A GitHub account (user, bot or organization) as embedded in payloads."""

    login: str = Field(description="Account login, e.g. ``octocat`` or ``shepherd[bot]``.")
    id: int = Field(description="Numeric account id.")
    type: str = Field(description='Account kind: "User", "Bot" or "Organization" (AccountType).')

    @property
    def is_bot(self) -> bool:
        """Whether GitHub marks this account as a bot (Apps, Dependabot, Renovate ...)."""
        return self.type == AccountType.bot


# An installation's ``account`` is the same shape as a user.
Account = User


class Team(_Model):
    """A team, as found among a pull request's requested reviewers."""

    id: int = Field(description="Numeric team id.")
    name: str = Field(description="Team display name.")
    slug: str = Field(description="Team slug, used in ``@org/slug`` mentions.")


class Label(_Model):
    """An issue or pull-request label."""

    name: str = Field(description="Label name, e.g. ``size/M``.")


class Repository(_Model):
    """The full repository object of an event's top-level ``repository``."""

    id: int = Field(description="Numeric repository id.")
    name: str = Field(description="Repository name without owner.")
    full_name: str = Field(description="``owner/name``.")
    owner: User = Field(description="Owning user or organization.")
    clone_url: str = Field(description="HTTPS URL git clones and fetches from.")
    default_branch: str = Field(description="Name of the default branch.")
    private: bool = Field(description="Whether the repository is private.")
    fork: bool = Field(description="Whether the repository is a fork.")
    html_url: str | None = Field(default=None, description="Web URL of the repository.")
    pushed_at: datetime | None = Field(
        default=None,
        description="Time of the last push; epoch seconds in push payloads, ISO 8601 elsewhere.",
    )


class RepositorySummary(_Model):
    """The smaller repository object of ``workflow_run.head_repository`` (no clone_url)."""

    id: int = Field(description="Numeric repository id.")
    name: str = Field(description="Repository name without owner.")
    full_name: str = Field(description="``owner/name``.")
    owner: User = Field(description="Owning user or organization.")
    private: bool = Field(description="Whether the repository is private.")
    fork: bool = Field(description="Whether the repository is a fork.")


class InstallationRepository(_Model):
    """A repository as listed in installation events: identity only."""

    id: int = Field(description="Numeric repository id.")
    name: str = Field(description="Repository name without owner.")
    full_name: str = Field(description="``owner/name``.")
    private: bool = Field(description="Whether the repository is private.")


class Installation(_Model):
    """A GitHub App installation; in non-installation events GitHub sends only ``id``."""

    id: int = Field(description="Installation id, used to mint installation tokens.")
    account: Account | None = Field(default=None, description="User or org it is installed on.")
    app_id: int | None = Field(default=None, description="Id of the installed App.")
    app_slug: str | None = Field(default=None, description="Slug of the installed App.")
    target_type: str | None = Field(default=None, description='"User" or "Organization".')
    repository_selection: str | None = Field(default=None, description='"all" or "selected".')
    events: list[str] | None = Field(default=None, description="Events the App subscribes to.")
    created_at: datetime | None = Field(
        default=None, description="Creation time; epoch seconds or ISO 8601 depending on action."
    )
    updated_at: datetime | None = Field(
        default=None, description="Last update time; epoch seconds or ISO 8601."
    )
    suspended_at: datetime | None = Field(default=None, description="When it was suspended.")
    suspended_by: User | None = Field(default=None, description="Who suspended it.")


class App(_Model):
    """A GitHub App, as the owner of a check run/suite or the author of a comment."""

    id: int = Field(description="Numeric App id; compare with our own App id.")
    slug: str | None = Field(default=None, description="App slug; absent in older payloads.")
    name: str | None = Field(default=None, description="App display name.")
    owner: User | None = Field(default=None, description="Account that owns the App.")


class PullRequestMinimalRepo(_Model):
    """The repository stub inside ``pull_requests[].head/base`` of check and workflow events."""

    id: int = Field(description="Numeric repository id.")
    url: str = Field(description="API URL of the repository.")
    name: str = Field(description="Repository name without owner.")


class PullRequestMinimalRef(_Model):
    """Head or base of a minimal pull request."""

    ref: str = Field(description="Branch name.")
    sha: str = Field(description="Commit SHA.")
    repo: PullRequestMinimalRepo = Field(description="Repository the branch lives in.")


class PullRequestMinimal(_Model):
    """A pull request as listed in ``check_run.pull_requests`` and similar.

    GitHub lists only PRs whose head is in the same repository: for fork PRs this list is empty
    and the PR must be found by head SHA.
    """

    number: int = Field(description="Pull request number.")
    id: int | None = Field(default=None, description="Global pull request id.")
    url: str | None = Field(default=None, description="API URL of the pull request.")
    head: PullRequestMinimalRef = Field(description="The PR head.")
    base: PullRequestMinimalRef = Field(description="The PR base.")


class PullRequestRef(_Model):
    """Head or base of a full pull request."""

    ref: str = Field(description="Branch name.")
    sha: str = Field(description="Commit SHA.")
    label: str | None = Field(default=None, description="``owner:branch``.")
    user: User | None = Field(default=None, description="Owner of the branch's repository.")
    repo: Repository | None = Field(
        description="Repository of the branch; null when a fork's repository was deleted."
    )


class PullRequest(_Model):
    """A pull request, as in ``pull_request`` events.

    Reduced copies (``pull_request_review``) lack the counters and merge fields, so those are
    optional.
    """

    number: int = Field(description="Pull request number.")
    title: str = Field(description="Title.")
    body: str | None = Field(description="Description in markdown; null when left empty.")
    user: User = Field(description="Author.")
    draft: bool = Field(default=False, description="Whether the PR is a draft.")
    state: str = Field(description='"open" or "closed".')
    head: PullRequestRef = Field(description="Head branch and commit.")
    base: PullRequestRef = Field(description="Base branch and commit.")
    labels: list[Label] = Field(default_factory=list, description="Current labels.")
    assignees: list[User] = Field(default_factory=list, description="Assignees.")
    requested_reviewers: list[User | Team] = Field(
        default_factory=list, description="Users (or teams) asked to review."
    )
    requested_teams: list[Team] = Field(default_factory=list, description="Teams asked to review.")
    maintainer_can_modify: bool | None = Field(
        default=None, description="Whether maintainers (and so the bot) may push to a fork head."
    )
    merged: bool | None = Field(default=None, description="Whether the PR was merged.")
    additions: int | None = Field(default=None, description="Lines added.")
    deletions: int | None = Field(default=None, description="Lines deleted.")
    changed_files: int | None = Field(default=None, description="Number of files changed.")
    html_url: str = Field(description="Web URL of the PR.")
    author_association: str = Field(description="Author's relation to the repo (not authority).")

    @property
    def is_fork(self) -> bool:
        """Whether the head lives in another repository than the base (or was deleted)."""
        if self.head.repo is None or self.base.repo is None:
            return True
        return self.head.repo.id != self.base.repo.id


class CheckRunOutput(_Model):
    """The visible output of a check run."""

    title: str | None = Field(default=None, description="Output title.")
    summary: str | None = Field(default=None, description="Output summary (markdown).")
    text: str | None = Field(default=None, description="Output details (markdown).")


class CheckSuiteRef(_Model):
    """The check suite a check run belongs to."""

    id: int = Field(description="Check suite id.")


class CheckRun(_Model):
    """A check run."""

    id: int = Field(description="Check run id.")
    name: str = Field(description="Check run name, e.g. ``shepherd`` or a CI job name.")
    head_sha: str = Field(description="Commit the check ran on.")
    status: str = Field(description="Status (CheckStatus).")
    conclusion: str | None = Field(description="Conclusion (CheckConclusion); null until done.")
    app: App = Field(description="App that owns the check run.")
    check_suite: CheckSuiteRef | None = Field(default=None, description="Owning suite.")
    pull_requests: list[PullRequestMinimal] = Field(
        default_factory=list, description="Same-repo PRs whose head is ``head_sha``."
    )
    output: CheckRunOutput = Field(default_factory=CheckRunOutput, description="Visible output.")
    details_url: str | None = Field(default=None, description="Link to the integrator's details.")
    external_id: str | None = Field(default=None, description="Integrator's reference.")
    html_url: str | None = Field(default=None, description="Web URL of the check run.")


class RequestedAction(_Model):
    """The button a user pressed on a check run (``check_run`` ``requested_action``)."""

    identifier: str = Field(description="Identifier the App gave the button (at most 20 chars).")


class CheckSuite(_Model):
    """A check suite."""

    id: int = Field(description="Check suite id.")
    head_branch: str | None = Field(default=None, description="Branch; null for fork PR heads.")
    head_sha: str = Field(description="Commit the suite is for.")
    status: str | None = Field(default=None, description="Status (CheckStatus).")
    conclusion: str | None = Field(default=None, description="Conclusion; null until done.")
    app: App | None = Field(default=None, description="App that owns the suite.")
    pull_requests: list[PullRequestMinimal] = Field(
        default_factory=list, description="Same-repo PRs whose head is ``head_sha``."
    )
    latest_check_runs_count: int | None = Field(default=None, description="Runs in the suite.")


class WorkflowRun(_Model):
    """A GitHub Actions workflow run."""

    id: int = Field(description="Run id.")
    name: str = Field(description="Workflow name; may be the empty string.")
    head_sha: str = Field(description="Commit the run is for.")
    head_branch: str | None = Field(default=None, description="Branch the run is for.")
    status: str = Field(description="Status (CheckStatus).")
    conclusion: str | None = Field(description="Conclusion (CheckConclusion); null until done.")
    run_attempt: int = Field(description="Attempt number, 1 for the first run.")
    run_number: int | None = Field(default=None, description="Sequential run number.")
    workflow_id: int | None = Field(default=None, description="Id of the workflow.")
    event: str = Field(description="Event that triggered the run, e.g. ``pull_request``.")
    pull_requests: list[PullRequestMinimal] = Field(
        default_factory=list, description="Same-repo PRs for the head; empty for fork heads."
    )
    head_repository: RepositorySummary | None = Field(
        default=None, description="Repository of the head (a fork for fork PRs)."
    )
    html_url: str | None = Field(default=None, description="Web URL of the run.")
    path: str | None = Field(default=None, description="Workflow file path in the repository.")


class WorkflowStep(_Model):
    """One step of a workflow job."""

    name: str = Field(description="Step name as shown in the log.")
    status: str = Field(description="Status (CheckStatus).")
    conclusion: str | None = Field(description="Conclusion (CheckConclusion); null until done.")
    number: int = Field(description="1-based position in the job.")


class WorkflowJob(_Model):
    """A GitHub Actions job."""

    id: int = Field(description="Job id; its log is downloaded by this id.")
    run_id: int = Field(description="Id of the workflow run the job belongs to.")
    run_attempt: int = Field(description="Attempt of the run.")
    name: str = Field(description="Job name.")
    head_sha: str = Field(description="Commit the job ran on.")
    head_branch: str | None = Field(default=None, description="Branch the job ran on.")
    status: str = Field(description="Status (CheckStatus); may differ from the action.")
    conclusion: str | None = Field(description="Conclusion (CheckConclusion); null until done.")
    steps: list[WorkflowStep] = Field(default_factory=list, description="Steps, in order.")
    labels: list[str] = Field(default_factory=list, description="Runner labels requested.")
    runner_name: str | None = Field(default=None, description="Runner; null until assigned.")
    workflow_name: str | None = Field(default=None, description="Name of the workflow.")
    html_url: str | None = Field(default=None, description="Web URL of the job.")

    @property
    def failed_steps(self) -> list[WorkflowStep]:
        """Steps that concluded with ``failure``, in order."""
        return [step for step in self.steps if step.conclusion == CheckConclusion.failure]


class IssuePullRequestLink(_Model):
    """Marker on an issue that is really a pull request."""

    url: str = Field(description="API URL of the pull request.")
    html_url: str | None = Field(default=None, description="Web URL of the pull request.")


class Issue(_Model):
    """An issue or pull request, as seen by issue events."""

    number: int = Field(description="Issue (or pull request) number.")
    title: str = Field(description="Title.")
    user: User = Field(description="Author.")
    state: str | None = Field(default=None, description='"open" or "closed".')
    labels: list[Label] = Field(default_factory=list, description="Current labels.")
    pull_request: IssuePullRequestLink | None = Field(
        default=None, description="Present only when the issue is a pull request."
    )

    @property
    def is_pull_request(self) -> bool:
        """Whether this issue is a pull request (GitHub sends a ``pull_request`` link then)."""
        return self.pull_request is not None


class IssueComment(_Model):
    """A comment on an issue or pull request conversation."""

    id: int = Field(description="Comment id, for reactions and edits.")
    body: str = Field(description="Comment text in markdown.")
    user: User = Field(description="Author.")
    author_association: str = Field(description="Author's relation to the repo (not authority).")
    performed_via_github_app: App | None = Field(
        default=None, description="App that posted the comment, if any."
    )
    html_url: str | None = Field(default=None, description="Web URL of the comment.")


class CommitAuthor(_Model):
    """Git author or committer of a pushed commit."""

    name: str = Field(description="Git name.")
    email: str | None = Field(default=None, description="Git email.")
    username: str | None = Field(default=None, description="GitHub login, when GitHub knows it.")


class Commit(_Model):
    """A commit in a push payload."""

    id: str = Field(description="Commit SHA.")
    message: str = Field(description="Full message, including trailers.")
    timestamp: datetime | None = Field(default=None, description="Commit time.")
    author: CommitAuthor = Field(description="Git author.")
    committer: CommitAuthor = Field(description="Git committer.")


class Pusher(_Model):
    """Who pushed, in git terms."""

    name: str = Field(description="Pusher's name (a login for GitHub users).")
    email: str | None = Field(default=None, description="Pusher's email.")


class Hook(_Model):
    """The webhook configuration described by a ping."""

    id: int = Field(description="Hook id.")
    type: str = Field(description='"Repository", "Organization" or "App".')
    app_id: int | None = Field(default=None, description="App id, for App hooks.")
    events: list[str] = Field(default_factory=list, description="Subscribed events.")


# --- events ------------------------------------------------------------------------------------


class WebhookEvent(_Model):
    """Fields common to every event the bot models."""

    installation: Installation | None = Field(
        default=None,
        description="App installation; absent for repository/organization hook deliveries.",
    )
    sender: User = Field(description="Account that triggered the event.")


class CheckRunEvent(WebhookEvent):
    """``check_run``: a check run was created, completed, re-requested or a button pressed."""

    action: str = Field(description="Action (CheckRunAction).")
    check_run: CheckRun = Field(description="The check run.")
    requested_action: RequestedAction | None = Field(
        default=None, description="The button pressed, for ``requested_action``."
    )
    repository: Repository = Field(description="Repository of the check run.")


class CheckSuiteEvent(WebhookEvent):
    """``check_suite``: a check suite was requested, re-requested or completed."""

    action: str = Field(description="Action (CheckSuiteAction).")
    check_suite: CheckSuite = Field(description="The check suite.")
    repository: Repository = Field(description="Repository of the check suite.")


class WorkflowRunEvent(WebhookEvent):
    """``workflow_run``: a workflow run was requested, started or completed."""

    action: str = Field(description="Action (WorkflowRunAction).")
    workflow_run: WorkflowRun = Field(description="The workflow run.")
    repository: Repository = Field(description="Repository of the run.")


class WorkflowJobEvent(WebhookEvent):
    """``workflow_job``: a job was queued, started, is waiting or completed."""

    action: str = Field(description="Action (WorkflowJobAction).")
    workflow_job: WorkflowJob = Field(description="The job.")
    repository: Repository = Field(description="Repository of the job.")


class PullRequestEvent(WebhookEvent):
    """``pull_request``: a pull request changed."""

    action: str = Field(description="Action (PullRequestAction).")
    number: int = Field(description="Pull request number.")
    pull_request: PullRequest = Field(description="The pull request.")
    label: Label | None = Field(default=None, description="Label added or removed.")
    before: str | None = Field(default=None, description="Previous head SHA (synchronize).")
    after: str | None = Field(default=None, description="New head SHA (synchronize).")
    repository: Repository = Field(description="Base repository.")


class IssueCommentEvent(WebhookEvent):
    """``issue_comment``: a comment on an issue or pull request was created, edited or deleted."""

    action: str = Field(description="Action (IssueCommentAction).")
    issue: Issue = Field(description="The issue or pull request commented on.")
    comment: IssueComment = Field(description="The comment.")
    repository: Repository = Field(description="Repository of the issue.")


class InstallationEvent(WebhookEvent):
    """``installation``: the App was installed, removed, suspended or re-permissioned."""

    action: str = Field(description="Action (InstallationAction).")
    installation: Installation = Field(description="The installation (full object).")
    repositories: list[InstallationRepository] | None = Field(
        default=None, description="Repositories granted; absent for suspend/unsuspend."
    )
    requester: User | None = Field(default=None, description="Who requested the install.")


class InstallationRepositoriesEvent(WebhookEvent):
    """``installation_repositories``: repositories were added to or removed from an install."""

    action: str = Field(description="Action (InstallationRepositoriesAction).")
    installation: Installation = Field(description="The installation (full object).")
    repository_selection: str = Field(description='"all" or "selected".')
    repositories_added: list[InstallationRepository] = Field(description="Repositories added.")
    repositories_removed: list[InstallationRepository] = Field(description="Repositories removed.")
    requester: User | None = Field(default=None, description="Who requested the change.")


class PushEvent(WebhookEvent):
    """``push``: commits or a tag were pushed, or a ref was created or deleted."""

    ref: str = Field(description="Full ref, e.g. ``refs/heads/main`` or ``refs/tags/v1``.")
    before: str = Field(description="SHA before the push; forty zeros when the ref is new.")
    after: str = Field(description="SHA after the push; forty zeros when the ref was deleted.")
    created: bool = Field(description="Whether the push created the ref.")
    deleted: bool = Field(description="Whether the push deleted the ref.")
    forced: bool = Field(description="Whether the push was forced.")
    base_ref: str | None = Field(default=None, description="Ref the pushed ref was based on.")
    head_commit: Commit | None = Field(description="Tip commit; null when the ref was deleted.")
    commits: list[Commit] = Field(default_factory=list, description="Pushed commits (max 20).")
    pusher: Pusher = Field(description="Who pushed.")
    repository: Repository = Field(description="Repository pushed to.")

    @property
    def branch(self) -> str | None:
        """The branch name for ``refs/heads/...`` pushes, None for tags and other refs."""
        prefix = "refs/heads/"
        return self.ref.removeprefix(prefix) if self.ref.startswith(prefix) else None


class PingEvent(WebhookEvent):
    """``ping``: GitHub checks that the webhook endpoint answers."""

    zen: str = Field(description="A random line of GitHub zen.")
    hook_id: int = Field(description="Id of the hook being pinged.")
    hook: Hook = Field(description="The hook configuration.")
    repository: Repository | None = Field(
        default=None, description="Repository of a repository hook; absent otherwise."
    )


# Read-only so no caller can register models at run time (no module-level mutable state).
EVENT_MODELS: Mapping[str, type[WebhookEvent]] = MappingProxyType(
    {
        "check_run": CheckRunEvent,
        "check_suite": CheckSuiteEvent,
        "workflow_run": WorkflowRunEvent,
        "workflow_job": WorkflowJobEvent,
        "pull_request": PullRequestEvent,
        "issue_comment": IssueCommentEvent,
        "installation": InstallationEvent,
        "installation_repositories": InstallationRepositoriesEvent,
        "push": PushEvent,
        "ping": PingEvent,
    }
)


def parse_event(event: str, payload: Mapping[str, Any]) -> WebhookEvent | None:
    """Parse a webhook payload into the model registered for its ``X-GitHub-Event`` name.

    Returns None for events the bot does not model. Raises ``pydantic.ValidationError`` when the
    payload does not fit the model; the caller maps it to its own error.
    """
    model = EVENT_MODELS.get(event)
    if model is None:
        return None
    return model.model_validate(payload)


# --- ingest: the few fields stored beside a delivery's body ---------------------------------------

_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What ingest reads from a delivery body: the columns the store indexes it by."""

    action: str | None
    installation_id: int | None
    repo: str | None


def read_envelope(body: bytes) -> Envelope:
    """Check that ``body`` is a JSON object and read its action, installation and repository.

    Ingest must refuse a body that is not JSON, but needs only three of its fields; building the
    whole payload as Python objects (orjson) was a quarter of the event loop's time per request.
    simdjson validates the whole document (syntax and UTF-8) without building it: 8 vs 35 us on
    12-24 KB payloads. Where simdjson refuses (it also refuses integers beyond 64 bits, which
    JSON allows), orjson, the parser the workers use, has the last word, so ingest accepts
    exactly what a worker can read. Raises ``PayloadError``.
    """
    if body.startswith(_UTF8_BOM):  # simdjson skips a BOM; orjson, and so the workers, do not
        raise PayloadError("The body is not JSON: it starts with a UTF-8 byte order mark.")
    try:
        # A fresh parser per call (0.1 us): a parser's documents die with its next parse, so a
        # shared one would tie every caller to one thread and one document at a time.
        document = simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"The body is not JSON: {exc}.") from None
    if not isinstance(document, simdjson.Object | dict):
        raise PayloadError("The body is not a JSON object.")
    installation = document.get("installation")
    repository = document.get("repository")
    installation_id = (
        installation.get("id") if isinstance(installation, simdjson.Object | dict) else None
    )
    repo = repository.get("full_name") if isinstance(repository, simdjson.Object | dict) else None
    action = document.get("action")
    return Envelope(
        action=action if isinstance(action, str) else None,
        installation_id=installation_id if type(installation_id) is int else None,
        repo=repo if isinstance(repo, str) else None,
    )
