"""bot.github.webhooks against every real webhook example in ../shared/github/webhooks."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from bot.github.webhooks import (
    EVENT_MODELS,
    NULL_SHA,
    AccountType,
    CheckConclusion,
    CheckRunAction,
    CheckRunEvent,
    CheckSuiteEvent,
    InstallationEvent,
    InstallationRepositoriesEvent,
    IssueCommentAction,
    IssueCommentEvent,
    PingEvent,
    PullRequestAction,
    PullRequestEvent,
    PushEvent,
    WebhookEvent,
    WorkflowJobAction,
    WorkflowJobEvent,
    WorkflowRunEvent,
    parse_event,
)

_E = TypeVar("_E", bound=WebhookEvent)

WEBHOOKS = Path(__file__).resolve().parents[1].parent / "shared" / "github" / "webhooks"


def _example_files() -> list[Path]:
    return sorted(p for event in EVENT_MODELS for p in (WEBHOOKS / event).glob("*.json"))


EXAMPLES = _example_files()


def load(event: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WEBHOOKS / event / name).read_text(encoding="utf-8"))
    return data


def parsed(model: type[_E], event: str, name: str) -> _E:
    result = parse_event(event, load(event, name))
    assert isinstance(result, model)
    return result


def test_examples_were_found() -> None:
    # Guards the parametrized test below against passing vacuously on a missing folder.
    assert len(EXAMPLES) >= 70
    assert {p.parent.name for p in EXAMPLES} == set(EVENT_MODELS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_parses(path: Path) -> None:
    event = path.parent.name
    payload = json.loads(path.read_text(encoding="utf-8"))
    result = parse_event(event, payload)
    assert isinstance(result, EVENT_MODELS[event])
    assert result.sender.login == payload["sender"]["login"]
    if "installation" in payload:
        assert result.installation is not None
        assert result.installation.id == payload["installation"]["id"]
    else:
        assert result.installation is None
    if "action" in payload:
        assert getattr(result, "action") == payload["action"]  # noqa: B009


def test_unmodelled_event_returns_none() -> None:
    payload = load("pull_request", "opened.payload.json")
    assert parse_event("pull_request_review", payload) is None
    assert parse_event("no_such_event", {}) is None


def test_event_models_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        EVENT_MODELS["x"] = PingEvent  # type: ignore[index]


@pytest.mark.parametrize(
    ("event", "mutate"),
    [
        ("check_run", lambda p: p.pop("check_run")),
        ("check_run", lambda p: p["check_run"].__setitem__("id", "not a number")),
        ("pull_request", lambda p: p["pull_request"].pop("head")),
        ("issue_comment", lambda p: p.pop("sender")),
        ("push", lambda p: p.__setitem__("commits", "nope")),
    ],
)
def test_malformed_payload_raises_validation_error(event: str, mutate: Any) -> None:
    payload = load(event, sorted(p.name for p in (WEBHOOKS / event).glob("*.json"))[0])
    mutate(payload)
    with pytest.raises(ValidationError):
        parse_event(event, payload)


def test_unknown_action_still_parses() -> None:
    payload = load("pull_request", "opened.payload.json")
    payload["action"] = "some_future_action"
    result = parse_event("pull_request", payload)
    assert isinstance(result, PullRequestEvent)
    assert result.action == "some_future_action"
    assert result.action not in set(PullRequestAction)


def test_action_compares_with_enum() -> None:
    result = parsed(PullRequestEvent, "pull_request", "opened.payload.json")
    assert result.action == PullRequestAction.opened


def test_pull_request_null_body() -> None:
    result = parsed(PullRequestEvent, "pull_request", "opened.with-null-body.json")
    assert result.pull_request.body is None
    assert result.pull_request.title


def test_pull_request_fields() -> None:
    result = parsed(PullRequestEvent, "pull_request", "opened.payload.json")
    pr = result.pull_request
    assert pr.number == result.number == 2
    assert pr.head.repo is not None
    assert pr.head.repo.clone_url.endswith(".git")
    assert not pr.is_fork
    assert pr.user.type == AccountType.user
    converted = parsed(PullRequestEvent, "pull_request", "converted_to_draft.payload.json")
    assert converted.pull_request.draft is True
    labeled = parsed(PullRequestEvent, "pull_request", "labeled.payload.json")
    assert labeled.label is not None
    assert labeled.label.name in {label.name for label in labeled.pull_request.labels}


def test_pull_request_deleted_fork_head_repo_is_none() -> None:
    payload = load("pull_request", "opened.payload.json")
    payload["pull_request"]["head"]["repo"] = None
    result = parse_event("pull_request", payload)
    assert isinstance(result, PullRequestEvent)
    assert result.pull_request.head.repo is None
    assert result.pull_request.is_fork


def test_pull_request_synchronize_before_after() -> None:
    result = parsed(PullRequestEvent, "pull_request", "synchronize.payload.json")
    assert result.action == PullRequestAction.synchronize
    assert result.after == result.pull_request.head.sha
    assert result.before is not None
    assert result.before != result.after


def test_missing_installation() -> None:
    result = parsed(CheckRunEvent, "check_run", "completed.payload.json")
    assert result.installation is None
    with_installation = parsed(CheckRunEvent, "check_run", "requested_action.payload.json")
    assert with_installation.installation is not None
    assert with_installation.installation.id == 690857


@pytest.mark.parametrize(
    ("event", "name"),
    [
        ("installation", "created.payload.json"),
        ("installation", "deleted.payload.json"),
        ("installation", "new_permissions_accepted.payload.json"),
        ("installation_repositories", "added.payload.json"),
        ("installation_repositories", "removed.payload.json"),
    ],
)
def test_installation_int_timestamps(event: str, name: str) -> None:
    payload = load(event, name)
    assert isinstance(payload["installation"]["created_at"], int)
    result = parse_event(event, payload)
    assert isinstance(result, InstallationEvent | InstallationRepositoriesEvent)
    created = result.installation.created_at
    assert created == datetime.fromtimestamp(payload["installation"]["created_at"], tz=UTC)


def test_installation_iso_timestamps_and_suspension() -> None:
    result = parsed(InstallationEvent, "installation", "suspend.payload.json")
    assert result.installation.created_at == datetime.fromisoformat("2021-04-28T22:32:21.000-04:00")
    assert result.installation.suspended_at is not None
    assert result.installation.suspended_by is not None
    assert result.repositories is None


def test_installation_created_repositories_and_account() -> None:
    result = parsed(InstallationEvent, "installation", "created.payload.json")
    assert result.installation.account is not None
    assert result.installation.account.login == "Codertocat"
    assert result.repositories is not None
    assert [r.full_name for r in result.repositories] == ["Codertocat/Hello-World"]
    added = parsed(InstallationRepositoriesEvent, "installation_repositories", "added.payload.json")
    assert [r.full_name for r in added.repositories_added] == ["Codertocat/Space"]
    assert added.repositories_removed == []
    assert added.requester is not None


def test_push_int_timestamp_on_repository() -> None:
    payload = load("push", "with-new-branch.payload.json")
    assert isinstance(payload["repository"]["pushed_at"], int)
    result = parse_event("push", payload)
    assert isinstance(result, PushEvent)
    assert result.repository.pushed_at == datetime.fromtimestamp(
        payload["repository"]["pushed_at"], tz=UTC
    )


def test_workflow_run_empty_name() -> None:
    for name in ("completed.payload.json", "requested.payload.json"):
        result = parsed(WorkflowRunEvent, "workflow_run", name)
        assert result.workflow_run.name == ""


def test_workflow_run_pull_requests_and_conclusion() -> None:
    result = parsed(WorkflowRunEvent, "workflow_run", "completed.with-pull-requests.payload.json")
    run = result.workflow_run
    assert [pr.number for pr in run.pull_requests] == [2]
    assert run.pull_requests[0].head.repo.name == "Hello-World"
    assert run.head_repository is not None
    assert run.event == "repository_dispatch"
    odd = parsed(WorkflowRunEvent, "workflow_run", "requested.with-conclusion.payload.json")
    assert odd.action == "requested"
    assert odd.workflow_run.conclusion == CheckConclusion.action_required


def test_check_run_app_without_slug() -> None:
    payloads = [load("check_run", p.name) for p in sorted((WEBHOOKS / "check_run").glob("*"))]
    without_slug = [p for p in payloads if "slug" not in p["check_run"]["app"]]
    assert without_slug, "expected at least one old-shape check_run example"
    for payload in without_slug:
        result = parse_event("check_run", payload)
        assert isinstance(result, CheckRunEvent)
        assert result.check_run.app.slug is None
        assert result.check_run.app.id == payload["check_run"]["app"]["id"]


def test_check_run_created_null_conclusion_and_output() -> None:
    result = parsed(CheckRunEvent, "check_run", "created.payload.json")
    assert result.action == CheckRunAction.created
    assert result.check_run.conclusion is None
    completed = parsed(CheckRunEvent, "check_run", "completed.payload.json")
    assert completed.check_run.output.title is None
    assert completed.check_run.output.summary is None
    assert completed.check_run.check_suite is not None
    assert [pr.number for pr in completed.check_run.pull_requests] == [2]


def test_check_run_rerequested_old_shape() -> None:
    result = parsed(CheckRunEvent, "check_run", "rerequested.payload.json")
    assert result.check_run.details_url is None
    assert result.check_run.pull_requests == []


def test_check_run_requested_action_identifier() -> None:
    result = parsed(CheckRunEvent, "check_run", "requested_action.payload.json")
    assert result.action == CheckRunAction.requested_action
    assert result.requested_action is not None
    assert result.requested_action.identifier == "lgtm|26764"
    assert result.check_run.app.slug == "electron-cation"
    assert result.check_run.output.summary is not None
    assert "<!--" in result.check_run.output.summary
    other = parsed(CheckRunEvent, "check_run", "completed.payload.json")
    assert other.requested_action is None


def test_check_suite_bot_sender_and_requested() -> None:
    rerequested = parsed(CheckSuiteEvent, "check_suite", "rerequested.payload.json")
    assert rerequested.sender.is_bot
    requested = parsed(CheckSuiteEvent, "check_suite", "requested.payload.json")
    assert requested.check_suite.conclusion is None
    assert requested.check_suite.pull_requests == []
    assert requested.check_suite.latest_check_runs_count == 0


def test_issue_comment_on_issue_is_not_pull_request() -> None:
    result = parsed(IssueCommentEvent, "issue_comment", "created.payload.json")
    assert result.action == IssueCommentAction.created
    assert result.issue.pull_request is None
    assert not result.issue.is_pull_request
    assert result.comment.performed_via_github_app is None
    assert result.comment.author_association == "OWNER"
    assert result.comment.body


def test_issue_comment_on_pull_request() -> None:
    # No example is a comment on a PR; GitHub marks one by adding issue.pull_request.
    payload = copy.deepcopy(load("issue_comment", "created.with-installation.payload.json"))
    repo_api = payload["repository"]["url"]
    number = payload["issue"]["number"]
    payload["issue"]["pull_request"] = {
        "url": f"{repo_api}/pulls/{number}",
        "html_url": f"{payload['repository']['html_url']}/pull/{number}",
    }
    payload["comment"]["body"] = "/shepherd fix"
    comment = parse_event("issue_comment", payload)
    assert isinstance(comment, IssueCommentEvent)
    assert comment.issue.is_pull_request
    assert comment.issue.pull_request is not None
    assert comment.issue.pull_request.url.endswith(f"/pulls/{number}")
    assert comment.installation is not None
    assert comment.comment.body == "/shepherd fix"


@pytest.mark.parametrize(
    "name",
    ["1.payload.json", "payload.json", "with-installation.payload.json"],
)
def test_push_tag_deletion(name: str) -> None:
    result = parsed(PushEvent, "push", name)
    assert result.ref.startswith("refs/tags/")
    assert result.branch is None
    assert result.deleted
    assert result.after == NULL_SHA
    assert result.head_commit is None
    assert result.commits == []


def test_push_new_branch_and_committer_without_username() -> None:
    new_branch = parsed(PushEvent, "push", "with-new-branch.payload.json")
    assert new_branch.created
    assert new_branch.before == NULL_SHA
    assert new_branch.branch is not None
    assert new_branch.head_commit is not None
    assert new_branch.head_commit.message == "Initial commit"
    no_username = parsed(PushEvent, "push", "with-no-username-committer.payload.json")
    committers = [c.committer for c in no_username.commits]
    assert any(c.username is None for c in committers)


def test_workflow_job_failed_step() -> None:
    result = parsed(
        WorkflowJobEvent, "workflow_job", "completed.failure.with-organization.payload.json"
    )
    job = result.workflow_job
    assert job.conclusion == CheckConclusion.failure
    assert [s.name for s in job.failed_steps] == ["Run yarn run format-check"]
    failed = job.failed_steps[0]
    after = [s for s in job.steps if s.number > failed.number]
    assert after
    assert {s.conclusion for s in after} <= {CheckConclusion.skipped, CheckConclusion.success}
    assert CheckConclusion.skipped in {s.conclusion for s in after}
    assert job.workflow_name is not None


def test_workflow_job_queued_variants() -> None:
    deployment = parsed(WorkflowJobEvent, "workflow_job", "queued.with-deployment.payload.json")
    assert deployment.action == WorkflowJobAction.queued
    assert deployment.workflow_job.status == "waiting"
    assert deployment.workflow_job.runner_name is None
    assert deployment.workflow_job.labels == ["self-hosted", "k8s"]
    assert deployment.workflow_job.steps == []
    queued_steps = parsed(
        WorkflowJobEvent, "workflow_job", "in_progress.with-queued-steps.payload.json"
    )
    assert queued_steps.sender.type == AccountType.bot
    assert any(s.conclusion is None for s in queued_steps.workflow_job.steps)
    assert any(s.name.endswith("\\") for s in queued_steps.workflow_job.steps)


def test_ping_variants() -> None:
    org = parsed(PingEvent, "ping", "with-organization.payload.json")
    assert org.repository is None
    assert org.hook.type == "Organization"
    with_app = parsed(PingEvent, "ping", "with-app_id.payload.json")
    assert with_app.hook.app_id is not None
    repo = parsed(PingEvent, "ping", "payload.json")
    assert repo.repository is not None


def test_extra_fields_are_ignored_and_models_are_frozen() -> None:
    payload = load("ping", "payload.json")
    payload["brand_new_field"] = {"x": 1}
    result = parse_event("ping", payload)
    assert isinstance(result, PingEvent)
    assert not hasattr(result, "brand_new_field")
    with pytest.raises(ValidationError):
        result.zen = "changed"  # type: ignore[misc]
