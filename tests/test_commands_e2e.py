"""Commands and buttons end to end: comment → server → worker → GitHub simulator + bare git remote.

People steer Shepherd from the PR. These tests deliver real webhook payloads (GitHub's examples,
adapted) and check what a person would see: the 👀 reaction, the pushed fix, the one reply, the
sticky comment, the labels, the check run's buttons.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from cachetools import TTLCache

from bot.app.web import METRICS, STORE
from bot.app.worker import WorkerPool
from bot.commands.job import may_run, render_refusal
from bot.commands.parse import button_identifier, spec_for
from bot.kernel.errors import StoreError
from bot.kernel.settings import Settings
from bot.reporting.summary import extract_outcome
from bot.store.episodes import EventKind
from tests.e2e_support import World, git, scenario_files, scenario_log
from tests.test_agent_ladder import ServerFactory, start_model

RUFF = "af-ruff-check-unused-imports"
STICKY = "<!-- shepherd:sticky -->"


@pytest.mark.parametrize(
    ("verb", "permission", "private", "allowed"),
    [
        ("fix", "admin", False, True),
        ("fix", "maintain", False, True),
        ("fix", "write", True, True),
        ("fix", "triage", False, False),
        ("fix", "read", False, False),
        ("stop", "none", False, False),
        ("stop", None, False, False),
        ("explain", None, False, True),
        ("help", "none", False, True),
        ("explain", "none", True, False),
        ("explain", "read", True, True),
        ("help", "triage", True, True),
    ],
)
def test_who_may_run_what(verb: str, permission: str | None, private: bool, allowed: bool) -> None:
    spec = spec_for(verb)
    assert spec is not None
    assert may_run(spec, permission, private=private) is allowed


def test_refusal_names_each_rule_once() -> None:
    specs = [spec_for(v) for v in ("fix", "explain", "stop")]
    text = render_refusal(
        "eve", [s for s in specs if s], repo="acme/widgets", private=True, source="comment"
    )
    assert text.startswith("@eve asked for `/shepherd fix`, `/shepherd explain`, `/shepherd stop`")
    assert (
        "`/shepherd fix`, `/shepherd stop`: people with write, maintain or admin access only"
        in (text)
    )
    assert "`/shepherd explain`: people with read access only" in text
    assert "Anyone may run" not in text  # not on a private repository


def _red_pull(world: World, number: int, branch: str = "feature") -> str:
    """A PR whose lint job failed, with no failure delivered yet: Shepherd has not acted."""
    pull = world.open_pull(branch, scenario_files(RUFF), number=number)
    world.fail_job(pull.head_sha, "lint", scenario_log(RUFF))
    return pull.head_sha


def _bot_replies(world: World, pr: int) -> list[dict[str, Any]]:
    return [
        c
        for c in world.sim.comments.values()
        if c["_issue"] == pr and c["user"]["login"] == "shepherd[bot]" and STICKY not in c["body"]
    ]


def _eyes(world: World, comment_id: int) -> list[dict[str, Any]]:
    return [
        r for r in world.sim.reactions if r["comment_id"] == comment_id and r["content"] == "eyes"
    ]


def _sticky(world: World, pr: int) -> str:
    [comment] = world.sticky_comments(pr)
    return str(comment["body"])


async def _comment(world: World, pr: int, body: str, *, user: str) -> int:
    payload = world.comment_event(pr, body, user=user)
    assert await world.deliver("issue_comment", payload) == 202
    await world.drain()
    return int(payload["comment"]["id"])


async def test_collaborator_fix_reacts_and_pushes_a_verified_fix(world: World) -> None:
    world.repo.permissions["alice"] = "write"
    head = _red_pull(world, 21)

    comment_id = await _comment(world, 21, "Looks like lint.\n/shepherd fix\n", user="alice")

    assert len(_eyes(world, comment_id)) == 1
    new_head = world.branch_sha("feature")
    assert git(world.bare, "rev-parse", f"{new_head}^") == head
    assert "Shepherd-Job: acme/widgets#21/" in git(world.bare, "log", "-1", "--format=%B", new_head)
    body = _sticky(world, 21)
    outcome = extract_outcome(body)
    assert outcome is not None
    assert outcome["outcome"] == "fixed"
    assert "`/shepherd fix` by `alice` (comment): Fixed and pushed" in body
    # The fix speaks for itself: no reply comment.
    assert _bot_replies(world, 21) == []
    world.sim.assert_no_violations()


async def test_non_collaborator_is_refused_once_and_nothing_happens(world: World) -> None:
    head = _red_pull(world, 22)

    comment_id = await _comment(
        world, 22, "/shepherd fix\n/shepherd retry\n/shepherd stop\n", user="mallory"
    )

    assert world.branch_sha("feature") == head
    assert not world.sim.calls("git/create-commit")
    assert not world.sim.calls("actions/re-run-workflow-failed-jobs")
    assert _eyes(world, comment_id) == []
    [reply] = _bot_replies(world, 22)
    assert "@mallory" in reply["body"]
    assert "`/shepherd fix`, `/shepherd retry`, `/shepherd stop`" in reply["body"]
    assert "write, maintain or admin" in reply["body"]
    assert "shepherd/paused" not in world.sim.pulls[("acme/widgets", 22)].labels
    # author_association says OWNER in the payload; the permission API decided.
    assert len(world.sim.calls("repos/get-collaborator-permission-level")) == 1
    events = await world.client.app[STORE].list_events("acme/widgets", 22)
    refused = [e for e in events if e.kind == "command" and e.data["decision"] == "refused"]
    assert [e.data["verb"] for e in refused] == ["fix", "retry", "stop"]
    assert all(e.data["actor"] == "mallory" for e in refused)
    world.sim.assert_no_violations()


async def test_stop_then_ci_failure_does_not_push_and_resume_repairs(world: World) -> None:
    world.repo.permissions["maria"] = "maintain"
    # The permission cache's clock stands still: the cache hit asserted below must not depend on
    # how long this test's repair and job environments take on a busy machine (TTL 60 s).
    world.pool.deps.permissions = TTLCache(maxsize=16, ttl=60, timer=lambda: 0.0)
    pull = world.open_pull("feature", scenario_files(RUFF), number=23)
    head = pull.head_sha

    stop_id = await _comment(world, 23, "/shepherd stop", user="maria")
    assert len(_eyes(world, stop_id)) == 1
    assert "shepherd/paused" in world.sim.pulls[("acme/widgets", 23)].labels
    assert "Shepherd is paused on this PR" in _sticky(world, 23)

    run, job = world.fail_job(head, "lint", scenario_log(RUFF))
    assert await world.deliver("workflow_job", world.workflow_job_event(run, job)) == 202
    await world.drain()
    assert world.branch_sha("feature") == head  # paused: no push
    assert not world.sim.calls("git/update-ref")
    body = _sticky(world, 23)
    outcome = extract_outcome(body)
    assert outcome is not None
    assert outcome["outcome"] == "handoff"
    assert "paused" in outcome["detail"]
    assert "shepherd/needs-human" not in world.sim.pulls[("acme/widgets", 23)].labels
    [check] = world.shepherd_runs(head)
    assert [a["identifier"] for a in check["actions"]] == [button_identifier("resume")]
    # Automatic triage (a PR event) changes no labels while paused either.
    labels = list(world.sim.pulls[("acme/widgets", 23)].labels)
    await world.deliver("pull_request", world.pull_request_event(pull, "reopened"))
    await world.drain()
    assert world.sim.pulls[("acme/widgets", 23)].labels == labels

    await _comment(world, 23, "/shepherd resume", user="maria")
    new_head = world.branch_sha("feature")
    assert git(world.bare, "rev-parse", f"{new_head}^") == head
    assert "shepherd/paused" not in world.sim.pulls[("acme/widgets", 23)].labels
    body = _sticky(world, 23)
    assert "Shepherd is paused on this PR" not in body
    outcome = extract_outcome(body)
    assert outcome is not None
    assert outcome["outcome"] == "fixed"
    assert "`/shepherd resume` by `maria` (comment): Resumed; repair of" in body
    # The permission was looked up once and cached for the second comment.
    assert len(world.sim.calls("repos/get-collaborator-permission-level")) == 1
    world.sim.assert_no_violations()


async def test_explain_replies_citing_the_recorded_events(world: World) -> None:
    pull = world.open_pull("leak", scenario_files("hu-secret-detected"), number=24)
    run, job = world.fail_job(pull.head_sha, "secret-scan", scenario_log("hu-secret-detected"))
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()

    # A public repository: anyone may ask why.
    comment_id = await _comment(world, 24, "/shepherd explain", user="passerby")

    assert len(_eyes(world, comment_id)) == 1
    [reply] = _bot_replies(world, 24)
    text = reply["body"]
    events = await world.client.app[STORE].list_events("acme/widgets", 24)
    by_kind = {e.kind: e for e in events}
    config, classified = by_kind["config.read"], by_kind["repair.classified"]
    outcome = by_kind["repair.outcome"]
    assert f"event #{config.id}" in text
    assert f"base `{world.base_sha[:7]}`" in text
    assert f"event #{classified.id}" in text
    assert "**human**" in text
    assert f"event #{outcome.id}" in text
    assert "**handoff**" in text
    assert "Budget for head" in text
    assert "LLM attempt 0/1 used" in text
    cited = {int(n) for n in re.findall(r"event #(\d+)", text)}
    assert cited <= {e.id for e in events}
    assert world.branch_sha("leak") == pull.head_sha
    world.sim.assert_no_violations()


async def test_fix_button_has_the_same_effect_as_the_comment(world: World) -> None:
    world.repo.permissions["alice"] = "admin"
    head = _red_pull(world, 25)
    payload = world.button_event(25, head, button_identifier("fix"), user="alice")

    assert await world.deliver("check_run", payload) == 202
    await world.drain()

    new_head = world.branch_sha("feature")
    assert git(world.bare, "rev-parse", f"{new_head}^") == head
    body = _sticky(world, 25)
    outcome = extract_outcome(body)
    assert outcome is not None
    assert outcome["outcome"] == "fixed"
    assert "`/shepherd fix` by `alice` (button): Fixed and pushed" in body
    assert world.sim.reactions == []  # no comment to react to
    world.sim.assert_no_violations()


async def test_button_click_by_a_reader_is_refused(world: World) -> None:
    world.repo.permissions["rita"] = "read"
    head = _red_pull(world, 26)
    payload = world.button_event(26, head, button_identifier("stop"), user="rita")

    assert await world.deliver("check_run", payload) == 202
    await world.drain()

    [reply] = _bot_replies(world, 26)
    assert "@rita clicked a Shepherd button for `/shepherd stop`" in reply["body"]
    assert "shepherd/paused" not in world.sim.pulls[("acme/widgets", 26)].labels
    world.sim.assert_no_violations()


async def test_the_same_comment_delivered_twice_is_acted_on_once(world: World) -> None:
    world.repo.permissions["alice"] = "write"
    _red_pull(world, 27)
    payload = world.comment_event(27, "/shepherd fix", user="alice")

    assert await world.deliver("issue_comment", payload, delivery="d-1") == 202
    assert await world.deliver("issue_comment", payload, delivery="d-1") == 200
    # Even a second delivery id for the same comment maps to the same job key.
    assert await world.deliver("issue_comment", payload, delivery="d-2") == 202
    await world.drain()

    assert len(world.sim.calls("git/update-ref")) == 1
    assert len(world.sim.calls("reactions/create-for-issue-comment")) == 1
    world.sim.assert_no_violations()


async def test_edited_comments_and_bot_comments_do_nothing(world: World) -> None:
    world.repo.permissions["alice"] = "write"
    world.repo.permissions["renovate[bot]"] = "write"
    head = _red_pull(world, 28)

    edited = world.comment_event(28, "/shepherd fix", user="alice", action="edited")
    assert await world.deliver("issue_comment", edited) == 202
    by_bot = world.comment_event(28, "/shepherd fix", user="renovate[bot]")
    assert await world.deliver("issue_comment", by_bot) == 202
    await world.drain()

    assert world.branch_sha("feature") == head
    assert world.sim.reactions == []
    assert _bot_replies(world, 28) == []
    assert not world.sim.calls("repos/get-collaborator-permission-level")
    store = world.client.app[STORE]
    for payload in (edited, by_bot):
        key = f"command:acme/widgets#28/c{payload['comment']['id']}"
        assert await store.find_job(key) is None
    world.sim.assert_no_violations()


async def test_help_and_unknown_verbs_get_one_reply(world: World) -> None:
    _red_pull(world, 29)

    comment_id = await _comment(world, 29, "/shepherd frobnicate\n/shepherd help", user="bob")

    [reply] = _bot_replies(world, 29)
    assert "Unknown command `/shepherd frobnicate`" in reply["body"]
    assert "`/shepherd help`" in reply["body"]
    assert "| `/shepherd resume` | people with write access or above |" in reply["body"]
    assert len(_eyes(world, comment_id)) == 1  # help was accepted
    world.sim.assert_no_violations()


async def test_private_repository_needs_read_access_to_explain(world: World) -> None:
    world.repo.private = True
    _red_pull(world, 30)

    comment_id = await _comment(world, 30, "/shepherd explain", user="stranger")

    assert _eyes(world, comment_id) == []
    [reply] = _bot_replies(world, 30)
    assert "people with read access" in reply["body"]
    assert "Why Shepherd" not in reply["body"]
    world.sim.assert_no_violations()


async def test_retry_reruns_the_failed_actions_runs_and_records_it(world: World) -> None:
    world.repo.permissions["alice"] = "write"
    pull = world.open_pull("flaky", {"app.py": "print('hi')\n"}, number=31)
    run, _ = world.fail_job(pull.head_sha, "test", scenario_log("in-pip-index-timeout"))

    await _comment(world, 31, "/shepherd retry", user="alice")

    assert run.rerun_failed_jobs == 1
    events = await world.client.app[STORE].list_events("acme/widgets", 31)
    [rerun] = [e for e in events if e.kind == "command.rerun"]
    assert rerun.data == {"sha": pull.head_sha, "runs": [run.id], "by": "alice"}
    assert "Re-ran the failed jobs of 1 workflow run(s)" in _sticky(world, 31)
    assert _bot_replies(world, 31) == []
    world.sim.assert_no_violations()


async def test_fix_on_shepherds_own_commit_says_the_budget_is_spent(world: World) -> None:
    world.repo.permissions["alice"] = "write"
    head = _red_pull(world, 32)
    await _comment(world, 32, "/shepherd fix", user="alice")
    ours = world.branch_sha("feature")
    assert ours != head
    world.sim.pulls[("acme/widgets", 32)].head_sha = ours
    world.fail_job(ours, "lint", scenario_log(RUFF))

    await _comment(world, 32, "/shepherd fix", user="alice")

    assert world.branch_sha("feature") == ours
    [reply] = _bot_replies(world, 32)
    assert "budget is spent" in reply["body"]
    assert "A new push by someone other than Shepherd starts a new episode" in reply["body"]
    world.sim.assert_no_violations()


async def test_triage_runs_now_and_is_shown_in_the_sticky_comment(world: World) -> None:
    world.repo.permissions["alice"] = "write"
    _red_pull(world, 33)

    comment_id = await _comment(world, 33, "/shepherd triage", user="alice")

    assert len(_eyes(world, comment_id)) == 1
    labels = world.sim.pulls[("acme/widgets", 33)].labels
    assert any(label.startswith("size/") for label in labels)
    body = _sticky(world, 33)
    assert "<!-- shepherd:section:triage -->" in body
    assert "`/shepherd triage` by `alice` (comment): Re-triaged" in body
    events = await world.client.app[STORE].list_events("acme/widgets", 33)
    assert [e.data["action"] for e in events if e.kind == "pr.triaged"] == ["command"]
    world.sim.assert_no_violations()


async def test_a_failing_command_says_why_in_a_reply(world: World) -> None:
    world.repo.permissions["alice"] = "write"
    pull = world.open_pull("flaky", {"app.py": "print('hi')\n"}, number=34)
    world.fail_job(pull.head_sha, "test", scenario_log("in-pip-index-timeout"))
    world.sim.inject(
        "actions/re-run-workflow-failed-jobs",
        status=403,
        body={"message": "Resource not accessible by integration"},
    )

    comment_id = await _comment(world, 34, "/shepherd retry", user="alice")

    assert len(_eyes(world, comment_id)) == 1
    [reply] = _bot_replies(world, 34)
    assert reply["body"].count("`/shepherd retry` failed:") == 1
    record = extract_outcome(reply["body"])  # the machine-readable outcome rides along
    assert record is not None
    assert record["title"] == "/shepherd retry failed"
    assert "403" in record["detail"] or "not accessible" in record["detail"]
    assert "failed: " in _sticky(world, 34)
    world.sim.assert_no_violations()


async def test_a_crash_between_replying_and_recording_does_not_reply_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.open_pull("feature", {"a.py": "x = 1\n"}, number=25)
    store = world.client.app[STORE]
    real_append = store.append_event
    crashed: list[str] = []

    async def crash_once(spec: Any) -> int:
        if spec.kind == EventKind.COMMAND_REPLY and not crashed:
            crashed.append(spec.kind)
            raise StoreError("the database went away")  # after the reply was posted
        return await real_append(spec)

    monkeypatch.setattr(store, "append_event", crash_once)
    monkeypatch.setattr("bot.app.worker.backoff_seconds", lambda attempt: 0.0)
    await _comment(world, 25, "/shepherd help", user="passerby")
    await world.drain()  # the retried job

    assert crashed
    [reply] = _bot_replies(world, 25)  # the retried job did not post it again
    assert "/shepherd fix" in reply["body"]
    stats = await store.stats()
    assert stats.jobs_queued == 0
    world.sim.assert_no_violations()


async def test_fix_command_runs_the_repair_job_and_its_outcome_reaches_the_metrics(
    world: World, aiohttp_server: ServerFactory
) -> None:
    """``/shepherd fix`` goes through the repair job's own function: the LLM rung it may use
    (policy ``command``, the default) and the outcome are counted in /metrics exactly like a
    repair started by a CI failure."""
    case = "ag-pytest-off-by-one"
    sim, url = await start_model(aiohttp_server, case)
    world.repo.permissions["alice"] = "write"
    head = world.open_pull("feature", scenario_files(case), number=40).head_sha
    world.fail_job(head, "test", scenario_log(case))
    settings = Settings(
        **{
            **world.settings.model_dump(),
            "anthropic_api_key": sim.api_key,
            "anthropic_base_url": url,
        }
    )
    world.pool = WorkerPool(
        store=world.client.app[STORE], settings=settings, metrics=world.client.app[METRICS], count=0
    )

    await _comment(world, 40, "/shepherd fix", user="alice")

    assert git(world.bare, "rev-parse", f"{world.branch_sha('feature')}^") == head
    metrics = await (await world.client.get("/metrics")).text()
    assert 'shepherd_repair_outcomes_total{outcome="fixed",trigger="command"} 1.0' in metrics
    assert 'shepherd_fixer_runs_total{fixer="agent",result="changed"} 1.0' in metrics
    for kind in ("input", "output"):
        found = re.search(rf'^shepherd_llm_tokens_total\{{kind="{kind}"\}} (\S+)$', metrics, re.M)
        assert found is not None, kind
        assert float(found[1]) > 0, kind
    assert 'shepherd_jobs_total{kind="command",outcome="done"} 1.0' in metrics
    world.sim.assert_no_violations()
