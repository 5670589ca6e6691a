"""The partial REST models read GitHub's own example answers (the OpenAPI subset's examples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.github.resources import (
    ActionsJob,
    CheckRun,
    Comment,
    CommitComparison,
    Created,
    CreatedCommit,
    GitRef,
    PullFile,
    PullRequest,
    parse_list,
)


@pytest.fixture(scope="module")
def examples(shared_dir: Path) -> dict[str, Any]:
    spec = json.loads((shared_dir / "github" / "openapi-subset.json").read_text())
    return {name: ex["value"] for name, ex in spec["components"]["examples"].items()}


def test_pull_request(examples: dict[str, Any]) -> None:
    pull = PullRequest.model_validate(examples["pull-request"])
    raw = examples["pull-request"]
    assert pull.number == raw["number"]
    assert pull.head.sha == raw["head"]["sha"]
    assert pull.head.repo is not None
    assert pull.head.repo.full_name == raw["head"]["repo"]["full_name"]
    assert pull.base.ref == raw["base"]["ref"]
    assert pull.user.login == raw["user"]["login"]
    assert pull.label_names == [label["name"] for label in raw["labels"]]
    assert [t.slug for t in pull.requested_teams] == [t["slug"] for t in raw["requested_teams"]]
    assert pull.changed_files == raw["changed_files"]
    # The list answer (commits/{sha}/pulls) has the same fields the repair reads.
    [simple] = parse_list(PullRequest, examples["pull-request-simple-items"])
    assert simple.head.sha == examples["pull-request-simple-items"][0]["head"]["sha"]


def test_pull_files(examples: dict[str, Any]) -> None:
    files = parse_list(PullFile, examples["diff-entry-items"])
    raw = examples["diff-entry-items"]
    assert [f.filename for f in files] == [f["filename"] for f in raw]
    assert files[0].additions == raw[0]["additions"]
    assert (files[0].patch is None) is ("patch" not in raw[0])


def test_check_runs(examples: dict[str, Any]) -> None:
    raw = examples["check-run-paginated"]["check_runs"]
    runs = parse_list(CheckRun, raw)
    assert runs[0].id == raw[0]["id"]
    assert runs[0].app_slug == raw[0]["app"]["slug"]
    assert runs[0].output.title == raw[0]["output"]["title"]
    assert CheckRun.model_validate(examples["check-run"]).id == examples["check-run"]["id"]
    assert Created.model_validate(examples["check-run"]).id == examples["check-run"]["id"]


def test_compare_ref_commit_job_comment(examples: dict[str, Any]) -> None:
    comparison = CommitComparison.model_validate(examples["commit-comparison"])
    raw = examples["commit-comparison"]["commits"]
    assert comparison.messages == [c["commit"]["message"] for c in raw]
    ref = GitRef.model_validate(examples["git-ref"])
    assert ref.object.sha == examples["git-ref"]["object"]["sha"]
    assert CreatedCommit.model_validate(examples["git-commit"]).sha == examples["git-commit"]["sha"]
    assert ActionsJob.model_validate(examples["job"]).run_id == examples["job"]["run_id"]
    [comment] = parse_list(Comment, examples["issue-comment-items"])
    assert comment.body == examples["issue-comment-items"][0]["body"]
    assert comment.user is not None
    assert comment.user.login == examples["issue-comment-items"][0]["user"]["login"]
