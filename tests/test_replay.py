"""``shepherd replay``: a payload through the routers and jobs; ``--dry-run`` makes no writes."""

from __future__ import annotations

import json
from pathlib import Path

from bot.ops.replay import replay
from tests.conftest import SHARED
from tests.e2e_support import World, scenario_files, scenario_log

WRITE_OPERATIONS = ("git/create-commit", "git/update-ref", "checks/create", "issues/create-comment")


async def test_dry_run_prints_the_writes_and_makes_none(world: World, tmp_path: Path) -> None:
    pull = world.open_pull("feature", scenario_files("af-black"), number=5)
    run, job = world.fail_job(pull.head_sha, "black", scenario_log("af-black"))
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(world.workflow_job_event(run, job)))

    report = await replay(payload, "workflow_job", settings=world.settings, dry_run=True)

    assert [j["kind"] for j in report.jobs] == ["repair"]
    assert report.jobs[0]["outcome"] == "fixed"
    planned = {(w.method, w.path.split("/")[-1]) for w in report.writes}
    assert ("POST", "commits") in planned  # git/create-commit
    assert ("POST", "check-runs") in planned
    assert any(w.method == "PATCH" and "/git/refs/heads/feature" in w.path for w in report.writes)
    for operation in WRITE_OPERATIONS:
        assert not world.sim.calls(operation), operation
    assert world.branch_sha("feature") == pull.head_sha
    assert "would PATCH" in report.render()
    world.sim.assert_no_violations()


async def test_replay_without_credentials_runs_the_handlers(settings: object) -> None:
    path = SHARED / "github" / "webhooks" / "pull_request" / "opened.payload.json"
    report = await replay(path, "pull_request", settings=settings, dry_run=True)  # type: ignore[arg-type]
    assert [j["kind"] for j in report.jobs] == ["triage", "prewarm"]
    assert report.github is False
    assert "pr.push" in [e["kind"] for e in report.events]
