"""The LLM rung inside the ladder: ``shepherd fix`` and the server, against the Messages API
simulator playing each agent scenario's reference patch as tool-use edits."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from bot.app.web import METRICS, STORE
from bot.app.worker import WorkerPool
from bot.kernel.problems import OutcomeKind
from bot.kernel.settings import Settings
from bot.llm.factory import make_agent
from bot.ops.local import fix_repo
from bot.reporting.summary import extract_outcome
from bot.sandbox import make_runner
from fixers import FIXERS
from fixers.tools import bundled_tool_dirs
from tests.anthropic_sim import MessagesSimulator, reference_session
from tests.e2e_support import World, git, scenario_files, scenario_log
from tests.fixer_support import case_expect
from tests.ghsim import commit_files
from tests.test_scenarios import CASES, SCENARIOS, checkout, tool_env

AGENT_CASES = [n for n in SCENARIOS if case_expect(n)["category"] == "agent"]
ServerFactory = Callable[..., Awaitable[TestServer]]


async def start_model(aiohttp_server: ServerFactory, case: str) -> tuple[MessagesSimulator, str]:
    patch = (CASES / case / "reference_fix.patch").read_text()
    sim = MessagesSimulator(script=reference_session(patch, explanation=f"Fixed {case}."))
    server = await aiohttp_server(sim.app())
    return sim, str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize("case", AGENT_CASES)
async def test_agent_scenarios_are_fixed_by_the_ladder(
    case: str, tmp_path: Path, aiohttp_server: ServerFactory, make_settings: Callable[..., Settings]
) -> None:
    sim, url = await start_model(aiohttp_server, case)
    settings = make_settings(anthropic_api_key=sim.api_key, anthropic_base_url=url)
    agent, why_not = make_agent(settings)
    assert agent is not None, why_not
    repo = checkout(case, tmp_path)
    runner = make_runner(allow_unsandboxed=False, tool_dirs=bundled_tool_dirs())

    result = await fix_repo(
        repo, CASES / case / "job.log", fixers=FIXERS, runner=runner, agent=agent
    )

    outcome = result.outcome
    assert outcome.outcome is OutcomeKind.FIXED, outcome.model_dump_json(indent=2)
    assert outcome.budget.llm_attempts_used == 1
    [fix] = outcome.fixes
    assert fix.fixer == "agent"
    assert "tokens in" in fix.detail
    done = subprocess.run(
        ["bash", "-c", case_expect(case)["must_pass_after"]],
        cwd=repo,
        env=tool_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_shepherd_fix_cli_runs_the_llm_rung(
    tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    case = "ag-pytest-off-by-one"
    sim, url = await start_model(aiohttp_server, case)
    repo = checkout(case, tmp_path)
    env = {
        **tool_env(),
        "ANTHROPIC_API_KEY": sim.api_key,
        "ANTHROPIC_BASE_URL": url,
        "SHEPHERD_DATA_DIR": str(tmp_path / "data"),
        "SHEPHERD_LOG_FORMAT": "text",
    }
    shepherd = str(Path(sys.executable).parent / "shepherd")
    proc = await __import__("asyncio").create_subprocess_exec(
        shepherd,
        "fix",
        "--repo",
        str(repo),
        "--log",
        str(CASES / case / "job.log"),
        "--json",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (err + out).decode()
    data = json.loads(out)
    assert data["outcome"] == "fixed"
    assert data["budget"]["llm_attempts_used"] == 1
    assert data["failures"][0]["category"] == "agent"
    assert sim.requests, "the CLI never called the model"


async def test_no_api_key_skips_the_rung_and_says_so(tmp_path: Path) -> None:
    case = "ag-pytest-off-by-one"
    repo = checkout(case, tmp_path)
    env = {k: v for k, v in tool_env().items() if not k.startswith("ANTHROPIC_")}
    env.update({"SHEPHERD_DATA_DIR": str(tmp_path / "data"), "SHEPHERD_LOG_FORMAT": "text"})
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "shepherd"),
            "fix",
            "--repo",
            str(repo),
            "--log",
            str(CASES / case / "job.log"),
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert data["outcome"] == "handoff"
    assert "no ANTHROPIC_API_KEY configured" in data["detail"]
    assert git(repo, "status", "--porcelain") == ""


async def test_agent_pr_is_repaired_by_the_llm_and_pushed(
    world: World, aiohttp_server: ServerFactory
) -> None:
    case = "ag-pytest-off-by-one"
    sim, url = await start_model(aiohttp_server, case)
    # Policy from the base branch: LLM repair automatic on agent-authored PRs.
    world.base_sha = commit_files(
        world.bare, "main", {".github/shepherd.yml": "llm:\n  mode: auto\n"}, "Enable LLM repair"
    )
    files = scenario_files(case)
    pull = world.open_pull(
        "copilot/fix-pages", files, number=88, user="Copilot", body="Fixes pagination."
    )
    head = pull.head_sha
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
    run, job = world.fail_job(head, "test", scenario_log(case))
    assert await world.deliver("workflow_job", world.workflow_job_event(run, job)) == 202
    await world.drain()

    new_head = world.branch_sha("copilot/fix-pages")
    assert git(world.bare, "rev-parse", f"{new_head}^") == head
    message = git(world.bare, "log", "-1", "--format=%B", new_head)
    assert "LLM repair" in message
    assert settings.llm_model in message
    assert "Shepherd-Job:" in message
    [comment] = world.sticky_comments(88)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert outcome["outcome"] == "fixed"
    assert outcome["budget"]["llm_attempts_used"] == 1
    assert "tokens in" in comment["body"]
    assert outcome["llm_usage"]["input"] > 0
    world.sim.assert_no_violations()
    metrics = await (await world.client.get("/metrics")).text()
    assert 'shepherd_llm_tokens_total{kind="output"}' in metrics
