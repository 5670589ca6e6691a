"""Triage and the agent lane end to end: webhook → server → worker → GitHub simulator + git."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from bot.reporting.summary import extract_outcome
from bot.store import JobState
from bot.triage.job import TRIAGE_JSON_OPEN
from handlers.pull_requests import TRIAGE_ACTIONS
from tests.conftest import SHARED
from tests.e2e_support import World, git, scenario_files, scenario_log
from tests.ghsim import SimContext, SimPull, commit_files


def extract_triage(body: str) -> dict[str, Any] | None:
    """Read back the triage JSON hidden in a sticky comment."""
    start = body.find(TRIAGE_JSON_OPEN)
    if start < 0:
        return None
    end = body.find("-->", start + len(TRIAGE_JSON_OPEN))
    if end < 0:
        return None
    value = json.loads(body[start + len(TRIAGE_JSON_OPEN) : end])
    return value if isinstance(value, dict) else None


RUFF = "af-ruff-check-unused-imports"
PR_EXAMPLES = sorted(p.name for p in (SHARED / "github" / "webhooks" / "pull_request").glob("*"))
COPILOT = "copilot-swe-agent[bot]"
LAUNCHER_TRAILER = "Co-authored-by: alice <1234+alice@users.noreply.github.com>"


def set_base(world: World, files: dict[str, str | None]) -> None:
    """Commit ``files`` on main; PRs opened afterwards start from (and compare to) it."""
    world.base_sha = commit_files(world.bare, "main", files, "Base")


def push(world: World, pull: SimPull, files: dict[str, str | None], message: str) -> str:
    """Someone pushes to the PR's branch; the simulator's PR follows, as GitHub's does."""
    sha = commit_files(world.bare, pull.head_ref, files, message)
    git(world.bare, "update-ref", f"refs/pull/{pull.number}/head", sha)
    pull.head_sha = sha
    return sha


def lines(count: int, prefix: str = "x") -> str:
    return "".join(f"{prefix}{i} = {i}\n" for i in range(count))


def sizes(labels: list[str]) -> list[str]:
    return [label for label in labels if label.startswith("size/")]


def sticky(world: World, pr: int) -> dict[str, Any]:
    [comment] = world.sticky_comments(pr)  # one comment, always edited in place
    return comment


async def job_state(world: World, key: str) -> tuple[JobState, str | None] | None:
    job = await world.pool.store.find_job(key)
    return None if job is None else (job.state, job.outcome)


async def test_every_pull_request_example_is_triaged_or_ignored(world: World) -> None:
    set_base(world, {".github/CODEOWNERS": "* @acme/core\ndocs/ @dana\n"})
    pulls: dict[str, tuple[SimPull, str]] = {}
    for number, name in enumerate(PR_EXAMPLES, start=1):
        pull = world.open_pull(
            f"example-{number}",
            {f"src/mod{number}.py": lines(12), f"docs/mod{number}.md": "# Module\n"},
            number=number,
        )
        payload = world.pull_request_event(pull, example=name)
        pulls[name] = (pull, payload["action"])
        assert await world.deliver("pull_request", payload) == 202
    await world.drain()

    triaged = 0
    for name, (pull, action) in pulls.items():
        state = await job_state(
            world, f"triage:acme/widgets#{pull.number}@{pull.head_sha}/{action}"
        )
        if action not in TRIAGE_ACTIONS:
            assert state is None, name
            assert pull.labels == [], name
            assert not world.sticky_comments(pull.number), name
            continue
        triaged += 1
        assert state == (JobState.DONE, "triaged"), name
        assert sizes(pull.labels) == ["size/S"], name  # 13 lines
        assert "risk/no-tests" in pull.labels, name
        [check] = world.shepherd_runs(pull.head_sha)
        assert check["conclusion"] == "success", name
        data = extract_triage(sticky(world, pull.number)["body"])
        assert data is not None, name
        assert sorted(data["reviewers"]) == ["@acme/core", "@dana"], name
        assert pull.requested_teams == ["core"], name
        assert pull.requested_reviewers == ["dana"], name
    assert triaged == 9  # opened ×3, reopened ×2, synchronize, ready_for_review ×3
    world.sim.assert_no_violations()


async def test_size_label_is_replaced_lockfiles_excluded_base_codeowners_win(world: World) -> None:
    set_base(world, {".github/CODEOWNERS": "* @base-owner\n"})
    pull = world.open_pull(
        "sized",
        {
            "app.py": lines(8),
            "CODEOWNERS": "* @pr-owner\n",  # added by the PR: not the rules it is judged by
            "uv.lock": lines(400, "lock"),  # excluded from the size
        },
        number=21,
    )
    await world.deliver("pull_request", world.pull_request_event(pull, "opened"))
    await world.drain()
    assert sizes(pull.labels) == ["size/XS"]  # 9 changed lines
    data = extract_triage(sticky(world, 21)["body"])
    assert data is not None
    assert data["changed_lines"] == 9
    assert data["excluded"] == ["uv.lock"]
    assert data["reviewers"] == ["@base-owner"]
    assert pull.requested_reviewers == ["base-owner"]

    first_head = pull.head_sha
    push(world, pull, {"app.py": lines(9)}, "One more line")
    await world.deliver("pull_request", world.pull_request_event(pull, "synchronize"))
    await world.drain()
    assert sizes(pull.labels) == ["size/S"]  # 10 lines: replaced, never both
    removed = [c.path for c in world.sim.calls("issues/remove-label")]
    assert removed == ["/repos/acme/widgets/issues/21/labels/size/XS"]
    data = extract_triage(sticky(world, 21)["body"])  # the same comment, edited
    assert data is not None
    assert data["changed_lines"] == 10
    assert len(world.sim.calls("pulls/request-reviewers")) == 1  # not asked again on a push
    assert [r["conclusion"] for r in world.shepherd_runs(first_head)] == ["success"]
    [check] = world.shepherd_runs(pull.head_sha)
    assert "size/S" in check["output"]["title"]
    world.sim.assert_no_violations()


async def test_a_refused_diff_falls_back_to_the_files_api(world: World) -> None:
    pull = world.open_pull("huge", {"a.py": lines(40), "tests/test_a.py": lines(2)}, number=5)
    # The simulator serves every diff; make it answer as GitHub does past its diff limits.
    get_pull = world.sim._handlers["pulls/get"]

    async def refuse_diffs(ctx: SimContext) -> Any:
        if ctx.accept("application/vnd.github.diff"):
            # What GitHub answers for a diff over its limits.
            message = "Sorry, the diff exceeded the maximum number of files (300)."
            return web.json_response({"message": message}, status=406)
        return await get_pull(ctx)

    world.sim._handlers["pulls/get"] = refuse_diffs
    await world.deliver("pull_request", world.pull_request_event(pull, "opened"))
    await world.drain()
    assert world.sim.calls("pulls/list-files")
    assert sizes(pull.labels) == ["size/M"]  # 42 lines
    assert "risk/no-tests" not in pull.labels
    world.sim.assert_no_violations()


async def test_invalid_config_reports_a_neutral_check_and_nothing_else(world: World) -> None:
    set_base(world, {".github/shepherd.yml": "triage:\n  size_thresholds: [1, 2]\n"})
    pull = world.open_pull("cfg", {"a.py": lines(3)}, number=6)
    await world.deliver("pull_request", world.pull_request_event(pull, "opened"))
    await world.drain()
    [check] = world.shepherd_runs(pull.head_sha)
    assert check["conclusion"] == "neutral"
    [annotation] = world.sim.annotations(check["id"])
    assert annotation["path"] == ".github/shepherd.yml"
    assert annotation["start_line"] == 2
    assert pull.labels == []
    assert not world.sticky_comments(6)
    assert not world.sim.calls("pulls/request-reviewers")
    world.sim.assert_no_violations()


async def test_agent_policy_fails_the_check_run_one_line_per_finding(world: World) -> None:
    set_base(
        world,
        {
            ".github/shepherd.yml": (
                "agent_lane:\n  require_tests: true\n  forbid_github_changes: true\n"
            )
        },
    )
    pull = world.open_pull(
        "copilot/policy",
        {"src/a.py": lines(3), ".github/labeler.yml": "x: y\n"},
        number=8,
        user=COPILOT,
    )
    await world.deliver("pull_request", world.pull_request_event(pull, "opened"))
    await world.drain()
    [check] = world.shepherd_runs(pull.head_sha)
    assert check["conclusion"] == "failure"
    assert check["output"]["title"] == "Agent policy: 2 problems"
    summary = check["output"]["summary"]
    assert "Tests required" in summary
    assert "may not change .github/" in summary
    assert len(world.sticky_comments(8)) == 1  # no comment storm
    assert "agent-authored" in pull.labels
    assert not world.sim.calls("pulls/request-reviewers")
    world.sim.assert_no_violations()


async def test_agent_pr_gets_reviewers_once_checks_are_green_after_a_repair(
    world: World,
) -> None:
    set_base(world, {".github/CODEOWNERS": "* @acme/core @bob\n"})
    pull = world.open_pull(
        "copilot/render",
        scenario_files(RUFF),
        number=42,
        user=COPILOT,
        message=f"Add invoice rendering\n\n{LAUNCHER_TRAILER}",
    )
    head = pull.head_sha

    # Opened: triaged, labelled, nobody asked to review yet.
    await world.deliver("pull_request", world.pull_request_event(pull, "opened"))
    await world.drain()
    assert "agent-authored" in pull.labels
    assert len(sizes(pull.labels)) == 1
    assert not world.sim.calls("pulls/request-reviewers")
    assert "Waiting for CI" in sticky(world, 42)["body"]

    # CI fails (ruff): the suite completes red, Shepherd fixes and pushes.
    run, job = world.fail_job(head, "lint", scenario_log(RUFF))
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.deliver("check_suite", world.check_suite_event(pull, head, conclusion="failure"))
    await world.drain()
    new_head = world.branch_sha("copilot/render")
    assert new_head != head
    assert not world.sim.calls("pulls/request-reviewers")  # red: humans stay out

    # GitHub reports the App's push as a synchronize by the bot; CI then passes on it.
    pull.head_sha = new_head
    await world.deliver(
        "pull_request", world.pull_request_event(pull, "synchronize", sender="shepherd[bot]")
    )
    await world.drain()
    assert not world.sim.calls("pulls/request-reviewers")  # no checks reported yet
    world.pass_check(new_head, "CI / lint")
    world.pass_check(new_head, "CI / test")
    await world.deliver("check_suite", world.check_suite_event(pull, new_head))
    await world.drain()

    [request] = world.sim.calls("pulls/request-reviewers")
    assert request.json == {"reviewers": ["bob"], "team_reviewers": ["core"]}
    assert pull.requested_reviewers == ["bob"]
    body = sticky(world, 42)["body"]
    assert "All 2 checks passed: review requested from `bob`, `acme/core`" in body
    data = extract_triage(body)  # the triage summary rides in the same comment
    assert data is not None
    assert data["agent"]["name"] == "GitHub Copilot"
    assert data["agent"]["launched_by"] == "alice"
    outcome = extract_outcome(body)  # ... beside the repair's
    assert outcome is not None
    assert outcome["outcome"] == "fixed"

    # Bob reviews (GitHub drops him from the requested list), then another suite completes on
    # the same head: asked once, not twice.
    pull.requested_reviewers.clear()
    pull.requested_teams.clear()
    await world.deliver("check_suite", world.check_suite_event(pull, new_head))
    await world.drain()
    assert len(world.sim.calls("pulls/request-reviewers")) == 1
    assert len(world.sticky_comments(42)) == 1
    world.sim.assert_no_violations()


async def test_agent_pr_handed_off_calls_in_the_human_who_launched_it(world: World) -> None:
    pull = world.open_pull(
        "copilot/leak",
        scenario_files("hu-secret-detected"),
        number=43,
        user=COPILOT,
        message=f"Add settings\n\n{LAUNCHER_TRAILER}",
    )
    await world.deliver("pull_request", world.pull_request_event(pull, "opened"))
    run, job = world.fail_job(pull.head_sha, "secret-scan", scenario_log("hu-secret-detected"))
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()
    outcome = extract_outcome(sticky(world, 43)["body"])
    assert outcome is not None
    assert outcome["outcome"] == "handoff"

    # Shepherd's own check suite completes after its report: the lane sees the hand-off.
    for _ in range(2):
        await world.deliver(
            "check_suite", world.check_suite_event(pull, pull.head_sha, conclusion="failure")
        )
        await world.drain()
    [request] = world.sim.calls("pulls/request-reviewers")
    assert request.json == {"reviewers": ["alice"]}
    assert "🙋 @alice:" in sticky(world, 43)["body"]
    world.sim.assert_no_violations()


async def test_a_reviewer_github_refuses_does_not_block_the_others(world: World) -> None:
    set_base(world, {"CODEOWNERS": "* @outsider @carol\n"})
    pull = world.open_pull("owners", {"a.py": lines(2)}, number=31)
    # The pair is refused (one is not a collaborator), then "outsider" alone; "carol" passes.
    world.sim.inject("pulls/request-reviewers", status=422, times=2)
    await world.deliver("pull_request", world.pull_request_event(pull, "opened"))
    await world.drain()
    assert [c.json for c in world.sim.calls("pulls/request-reviewers")] == [
        {"reviewers": ["outsider", "carol"]},
        {"reviewers": ["outsider"]},
        {"reviewers": ["carol"]},
    ]
    assert pull.requested_reviewers == ["carol"]
    assert await job_state(world, f"triage:acme/widgets#31@{pull.head_sha}/opened") == (
        JobState.DONE,
        "triaged",
    )
    events = await world.pool.store.list_events("acme/widgets", 31)
    [asked] = [e for e in events if e.kind == "agent_lane.reviewers_requested"]
    assert asked.data["reviewers"] == ["carol"]
    assert asked.data["refused"] == ["outsider"]
    world.sim.assert_no_violations()


async def test_triage_after_a_repair_keeps_the_repair_verdict_in_the_check_run(
    world: World,
) -> None:
    pull = world.open_pull("late", scenario_files("hu-secret-detected"), number=44)
    run, job = world.fail_job(pull.head_sha, "secret-scan", scenario_log("hu-secret-detected"))
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()
    [check] = world.shepherd_runs(pull.head_sha)
    verdict = (check["conclusion"], check["output"]["title"], check["output"]["summary"])

    # The pull_request delivery arrives late (GitHub does not order deliveries).
    await world.deliver("pull_request", world.pull_request_event(pull, "opened"))
    await world.drain()
    [check] = world.shepherd_runs(pull.head_sha)
    assert (check["conclusion"], check["output"]["title"], check["output"]["summary"]) == verdict
    assert check["output"]["text"].startswith(f"**{sizes(pull.labels)[0]}**")
    body = sticky(world, 44)["body"]
    assert "shepherd:section:repair" in body
    assert "shepherd:section:triage" in body
    world.sim.assert_no_violations()


async def test_agent_lane_only_suggests_when_requests_are_off(world: World) -> None:
    set_base(
        world,
        {
            ".github/CODEOWNERS": "* @bob\n",
            ".github/shepherd.yml": "triage:\n  request_reviewers: false\n",
        },
    )
    pull = world.open_pull("copilot/quiet", {"a.py": lines(2)}, number=45, user=COPILOT)
    await world.deliver("pull_request", world.pull_request_event(pull, "opened"))
    await world.drain()
    world.pass_check(pull.head_sha)
    await world.deliver("check_suite", world.check_suite_event(pull, pull.head_sha))
    await world.drain()
    assert not world.sim.calls("pulls/request-reviewers")
    assert "passed: ready for human review. Suggested reviewers: @bob." in sticky(world, 45)["body"]
    world.sim.assert_no_violations()
