"""The repair ladder end to end: webhook → server → worker → GitHub simulator + bare git remote."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.app.web import STORE
from bot.kernel.errors import StoreError
from bot.reporting.summary import extract_outcome
from bot.sandbox import CommandResult, Runner
from bot.store.episodes import EventKind
from tests.conftest import load_payload
from tests.e2e_support import World, git, scenario_files, scenario_log

RUFF = "af-ruff-check-unused-imports"


def _tree_passes_ruff(bare: Path, sha: str, tmp: Path) -> bool:
    out = tmp / "check"
    subprocess.run(["git", "clone", "-q", str(bare), str(out)], check=True)
    subprocess.run(["git", "checkout", "-q", sha], cwd=out, check=True)
    done = subprocess.run(
        [str(Path(".venv/bin/ruff").resolve()), "check", "."],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


async def test_autofix_pushes_one_commit_then_hands_off_on_its_own_commit(
    world: World, tmp_path: Path
) -> None:
    pull = world.open_pull("feature", scenario_files(RUFF), number=142)
    head = pull.head_sha
    run, job = world.fail_job(head, "lint", scenario_log(RUFF))

    assert await world.deliver("workflow_job", world.workflow_job_event(run, job)) == 202
    await world.drain()

    new_head = world.branch_sha("feature")
    assert new_head != head
    assert git(world.bare, "rev-parse", f"{new_head}^") == head  # exactly one commit, on the head
    message = git(world.bare, "log", "-1", "--format=%B", new_head)
    assert "Shepherd-Job: acme/widgets#142/" in message
    assert _tree_passes_ruff(world.bare, new_head, tmp_path)

    [check] = world.shepherd_runs(head)
    assert check["conclusion"] == "success"
    [comment] = world.sticky_comments(142)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert outcome["outcome"] == "fixed"
    assert outcome["failures"][0]["fixers"] == ["ruff-check"]
    assert outcome["commit"] == new_head
    world.sim.assert_no_violations()
    metrics = await (await world.client.get("/metrics")).text()
    assert 'shepherd_fixer_runs_total{fixer="ruff-check",result="changed"} 1.0' in metrics
    assert 'shepherd_jobs_total{kind="repair",outcome="fixed"} 1.0' in metrics

    # CI fails again, now on Shepherd's own commit: hand off, never re-fix.
    run2, job2 = world.fail_job(new_head, "lint", scenario_log(RUFF))
    assert await world.deliver("workflow_job", world.workflow_job_event(run2, job2)) == 202
    await world.drain()
    assert world.branch_sha("feature") == new_head  # no push
    [comment] = world.sticky_comments(142)  # edited, not a second comment
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert outcome["outcome"] == "handoff"
    assert outcome["budget"]["ci_rounds_used"] == 2
    assert "shepherd/needs-human" in world.sim.pulls[("acme/widgets", 142)].labels
    world.sim.assert_no_violations()
    metrics = await (await world.client.get("/metrics")).text()
    assert 'shepherd_budget_exhausted_total{budget="ci_rounds"} 1.0' in metrics


async def test_redelivery_of_the_failure_is_processed_once(world: World) -> None:
    pull = world.open_pull("feature", scenario_files(RUFF), number=7)
    run, job = world.fail_job(pull.head_sha, "lint", scenario_log(RUFF))
    event = world.workflow_job_event(run, job)
    assert await world.deliver("workflow_job", event, delivery="same") == 202
    assert await world.deliver("workflow_job", event, delivery="same") == 200
    await world.drain()
    assert len(world.sim.calls("git/update-ref")) == 1


async def test_infra_failure_reruns_once_then_hands_off(world: World) -> None:
    pull = world.open_pull("flaky", {"app.py": "print('hi')\n"}, number=9)
    log = scenario_log("in-pip-index-timeout")
    run, job = world.fail_job(pull.head_sha, "test", log)
    assert await world.deliver("workflow_job", world.workflow_job_event(run, job)) == 202
    await world.drain()
    assert run.rerun_failed_jobs == 1
    assert world.branch_sha("flaky") == pull.head_sha

    # The re-run fails the same way (attempt 2, same SHA): no second re-run.
    job.log = log
    world.sim.check_runs[job.id]["conclusion"] = "failure"
    assert await world.deliver("workflow_job", world.workflow_job_event(run, job, attempt=2)) == 202
    await world.drain()
    assert run.rerun_failed_jobs == 1
    [comment] = world.sticky_comments(9)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert outcome["outcome"] == "handoff"
    assert outcome["retryable"] is True
    world.sim.assert_no_violations()


async def test_human_failure_never_changes_code(world: World) -> None:
    pull = world.open_pull("leak", scenario_files("hu-secret-detected"), number=33)
    run, job = world.fail_job(pull.head_sha, "secret-scan", scenario_log("hu-secret-detected"))
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()
    assert world.branch_sha("leak") == pull.head_sha
    assert not world.sim.calls("git/create-commit")
    [comment] = world.sticky_comments(33)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert outcome["outcome"] == "handoff"
    assert outcome["failures"][0]["category"] == "human"


async def test_fork_pr_gets_the_patch_not_a_push(world: World) -> None:
    pull = world.open_pull(
        "fork-feature",
        scenario_files(RUFF),
        number=12,
        head_repo_full_name="mallory/widgets",
        maintainer_can_modify=False,
    )
    run, job = world.fail_job(pull.head_sha, "lint", scenario_log(RUFF))
    event = world.workflow_job_event(run, job)
    await world.deliver("workflow_job", event)
    await world.drain()
    assert world.branch_sha("fork-feature") == pull.head_sha
    assert not world.sim.calls("git/update-ref")
    [comment] = world.sticky_comments(12)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert outcome["outcome"] == "handoff"
    assert outcome["next_action"] == "apply_patch"
    assert "render.py" in (outcome["patch"] or "")
    assert "git apply" in comment["body"]
    [review] = world.sim.calls("pulls/create-review")
    assert review.json["comments"]
    assert all("```suggestion" in c["body"] for c in review.json["comments"])
    world.sim.assert_no_violations()


class RecordingRunner:
    """The real sandbox, recording every command it is asked to run."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.commands: list[str] = []

    async def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        self.commands.append(" ".join(argv))
        return await self.inner.run(argv, **kwargs)


def record_commands(world: World) -> RecordingRunner:
    env = world.pool.deps.repair_env
    recorder = RecordingRunner(env.runner_factory())
    world.pool.deps.repair_env = replace(env, runner_factory=lambda: recorder)
    return recorder


async def test_hostile_log_and_branch_name_are_data_not_commands(world: World) -> None:
    """Shell-looking lines in a job log and shell syntax in a branch name: the fix is pushed to
    exactly that branch, and no line of the log is run."""
    branch = "feat/$(touch_pwned);`touch_pwned`"
    pull = world.open_pull(branch, scenario_files(RUFF), number=66)
    head = pull.head_sha
    hostile = ["$(touch pwned)", "`touch pwned`", "; touch pwned #", "bash -c 'touch pwned'"]
    log = scenario_log(RUFF).replace(
        "##[error]Process completed with exit code 1.",
        "".join(f"2026-11-17T07:02:50.0000000Z {line}\n" for line in hostile)
        + "2026-11-17T07:02:50.1000000Z ##[error]Process completed with exit code 1.",
    )
    recorder = record_commands(world)
    run, job = world.fail_job(head, "lint", log)
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()

    assert not any("pwned" in command for command in recorder.commands)
    assert "bash -e -c ruff check ." in recorder.commands  # the base workflow's own command
    new_head = world.branch_sha(branch)
    assert git(world.bare, "rev-parse", f"{new_head}^") == head
    assert "pwned" not in git(world.bare, "show", "--stat", new_head)
    world.sim.assert_no_violations()


async def test_a_command_the_base_workflows_do_not_run_is_never_executed(world: World) -> None:
    """The PR rewrote its own workflow step to ``ruff check . ; touch pwned``. That text comes
    from the PR, not from the base branch, so it is never executed; the fixer's own check
    verifies the fix instead, and the summary says so."""
    pull = world.open_pull("own-workflow", scenario_files(RUFF), number=67)
    head = pull.head_sha
    log = scenario_log(RUFF).replace("Run ruff check .", "Run ruff check . ; touch pwned")
    log = log.replace("[36;1mruff check .", "[36;1mruff check . ; touch pwned")
    recorder = record_commands(world)
    run, job = world.fail_job(head, "lint", log)
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()

    assert not any("pwned" in command for command in recorder.commands), recorder.commands
    [comment] = world.sticky_comments(67)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert outcome["failures"][0]["command"] == "ruff check . ; touch pwned"
    assert outcome["outcome"] == "fixed"
    assert "not one the base branch's workflows run" in outcome["verification"]
    assert git(world.bare, "rev-parse", f"{world.branch_sha('own-workflow')}^") == head
    world.sim.assert_no_violations()


async def test_removed_repositories_lose_their_mirror(world: World) -> None:
    pull = world.open_pull("feature", scenario_files(RUFF), number=70)
    run, job = world.fail_job(pull.head_sha, "lint", scenario_log(RUFF))
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()
    mirror = world.pool.deps.workspaces.mirror_path("acme/widgets")
    assert mirror.exists()

    payload = load_payload("installation_repositories", "removed.payload.json")
    payload["repositories_removed"][0]["full_name"] = "acme/widgets"
    assert await world.deliver("installation_repositories", payload) == 202
    await world.drain()
    assert not mirror.exists()


@pytest.mark.parametrize("crash_on", [EventKind.PUSHED, EventKind.CHECK_RUN])
async def test_a_crash_after_the_push_still_reports_once(
    world: World, monkeypatch: pytest.MonkeyPatch, crash_on: str
) -> None:
    """The worker dies after moving the branch: before recording the push, or after recording it
    but before the report was recorded. The retried job finds its own commit, pushes nothing
    more, and reports it: one push, one check run on the head, one sticky comment."""
    pull = world.open_pull("feature", scenario_files(RUFF), number=44)
    head = pull.head_sha
    store = world.client.app[STORE]
    real_append = store.append_event
    crashed: list[str] = []

    async def crash_once(spec: Any) -> int:
        if spec.kind == crash_on and not crashed:
            crashed.append(spec.kind)
            raise StoreError("the database went away")
        return await real_append(spec)

    monkeypatch.setattr(store, "append_event", crash_once)
    monkeypatch.setattr("bot.app.worker.backoff_seconds", lambda attempt: 0.0)
    run, job = world.fail_job(head, "lint", scenario_log(RUFF))
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()

    assert crashed == [crash_on]
    new_head = world.branch_sha("feature")
    assert git(world.bare, "rev-parse", f"{new_head}^") == head
    assert len([c for c in world.sim.calls("git/update-ref") if c.status == 200]) == 1
    [check] = world.shepherd_runs(head)
    assert check["conclusion"] == "success"
    [comment] = world.sticky_comments(44)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert outcome["outcome"] == "fixed"
    assert outcome["commit"] == new_head
    world.sim.assert_no_violations()
