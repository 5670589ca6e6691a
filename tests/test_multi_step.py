"""A job with two failed steps is diagnosed and repaired as a whole.

The job runs ``isort --check-only --diff src`` and then, with ``if: ${{ !cancelled() }}``,
``black --check src``; both fail. Shepherd reports one failure per step, applies isort before
black, and verifies both commands in the sandbox. The log is made by really running the tools on
the repository, wrapped in the runner's raw log format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.diagnosis.logs import distill_steps
from bot.kernel.problems import Category, OutcomeKind
from bot.kernel.repoconfig import RepoConfig
from bot.ops.local import FRESH_EPISODE, diagnose_log, fix_repo
from bot.repair.blueprint import Diagnosis, LlmGate, Step, diagnose_steps, plan_repair
from bot.reporting.summary import extract_outcome
from bot.sandbox import make_runner
from fixers import FIXERS
from fixers.base import NoFiles
from fixers.tools import bundled_tool_dirs
from tests.conftest import REPO_ROOT
from tests.e2e_support import World, git
from tests.fixer_support import make_repo

STAMP = "2026-11-17T07:02:44.9032795Z "
WORKSPACE = "/home/runner/work/demo/demo"
ISORT = "isort --check-only --diff src"
BLACK = "black --check src"

FILES = {
    "pyproject.toml": (
        '[project]\nname = "demo"\nversion = "0.1.0"\n\n'
        '[tool.isort]\nprofile = "black"\nknown_first_party = ["demo"]\n'
    ),
    "src/demo/__init__.py": "",
    "src/demo/calc.py": (
        "import sys\nimport os\nfrom typing import List\n\n\n"
        "def total(xs :List[int])->int:\n    return sum( xs )\n\n\n"
        "def here() -> str:\n    return os.getcwd() + sys.platform\n"
    ),
}


def tool_output(repo: Path, command: str) -> list[str]:
    """What the tool prints in CI: run for real, with the runner's workspace path."""
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=repo,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    return (done.stdout + done.stderr).replace(str(repo), WORKSPACE).rstrip("\n").split("\n")


def step(command: str, output: list[str]) -> list[str]:
    return [
        f"##[group]Run {command}",
        f"\x1b[36;1m{command}\x1b[0m",
        "shell: /usr/bin/bash -e {0}",
        "##[endgroup]",
        *output,
        "##[error]Process completed with exit code 1.",
    ]


def two_step_log(repo: Path, isort: str = ISORT, black: str = BLACK) -> str:
    lines = [
        "Current runner version: '2.331.0'",
        "Complete job name: lint",
        *step(isort, tool_output(repo, isort)),
        *step(black, tool_output(repo, black)),
        "Post job cleanup.",
        "Cleaning up orphan processes",
    ]
    return "\ufeff" + "\n".join(STAMP + line for line in lines) + "\n"


@pytest.fixture
def repo_and_log(tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "repo", FILES)
    log = tmp_path / "job.log"
    log.write_text(two_step_log(repo), encoding="utf-8")
    return repo, log


def test_both_failed_steps_are_distilled(repo_and_log: tuple[Path, Path]) -> None:
    _, log = repo_and_log
    steps = distill_steps(log.read_bytes())
    assert [(s.job, s.step, s.command, s.exit_code) for s in steps] == [
        ("lint", ISORT, ISORT, 1),
        ("lint", BLACK, BLACK, 1),
    ]
    assert "Imports are incorrectly sorted" in steps[0].excerpt
    assert "would reformat" in steps[1].excerpt


def test_diagnose_reports_one_failure_per_step(repo_and_log: tuple[Path, Path]) -> None:
    repo, log = repo_and_log
    result = diagnose_log(log, fixers=FIXERS, repo_dir=repo)
    data = result.to_json()
    assert [(f["job"], f["step"], f["fixers"]) for f in data["failures"]] == [
        ("lint", ISORT, ["isort"]),
        ("lint", BLACK, ["black"]),
    ]
    assert data["category"] == "autofix"
    assert data["plan"] == "fix"
    assert data["title"] == "Fixable: isort, black"
    assert data["log"]["distilled_bytes"] == sum(
        len(f["excerpt"].encode()) for f in data["failures"]
    )


async def test_shepherd_fix_repairs_both_steps_and_verifies_both(
    repo_and_log: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, log = repo_and_log
    runner = make_runner(
        allow_unsandboxed=False, tool_dirs=bundled_tool_dirs(), tool_cache=tmp_path / "tools"
    )
    result = await fix_repo(repo, log, fixers=FIXERS, runner=runner, agent=None)
    outcome = result.outcome
    assert outcome.outcome is OutcomeKind.FIXED, outcome.model_dump_json(indent=2)
    assert [f.step for f in outcome.failures] == [ISORT, BLACK]
    assert [fix.fixer for fix in outcome.fixes] == ["isort", "black"]
    assert outcome.verification is not None
    assert f"`{ISORT}` passes in the sandbox" in outcome.verification
    assert f"`{BLACK}` passes in the sandbox" in outcome.verification
    # Both checks pass on the tree left behind, as CI will run them.
    bin_dir = Path(sys.executable).parent
    for command in (ISORT, BLACK):
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=repo,
            env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_the_cli_prints_both_failures(repo_and_log: tuple[Path, Path], tmp_path: Path) -> None:
    _, log = repo_and_log
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "SHEPHERD_"))}
    env["SHEPHERD_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "shepherd"), "diagnose", "--log", str(log), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [f["step"] for f in data["failures"]] == [ISORT, BLACK]
    assert all(f["confidence"] == "high" for f in data["failures"])


# --- the plan across failed steps -----------------------------------------------------------


def diagnoses_of(log: Path) -> list[Diagnosis]:
    return diagnose_steps("lint", distill_steps(log.read_bytes()), fixers=FIXERS, repo=NoFiles())


def test_the_plan_runs_fixers_in_registry_order_whatever_the_step_order(
    repo_and_log: tuple[Path, Path],
) -> None:
    _, log = repo_and_log
    diagnoses = diagnoses_of(log)
    order = [f.name for f in FIXERS]
    plan = plan_repair(
        list(reversed(diagnoses)),
        state=FRESH_EPISODE,
        config=RepoConfig(),
        is_agent_pr=True,
        llm=LlmGate(True),
        order=order,
    )
    assert plan.step is Step.FIX
    assert [name for name, _ in plan.fixers] == ["isort", "black"]
    assert order.index("ruff-check") < order.index("ruff-format")
    assert order.index("isort") < order.index("black")


def test_a_runner_loss_after_an_earlier_failed_step_does_not_trigger_a_rerun(
    repo_and_log: tuple[Path, Path],
) -> None:
    _, log = repo_and_log
    text = log.read_text(encoding="utf-8").replace(
        "Post job cleanup.",
        "##[group]Run pytest\n"
        + STAMP
        + "##[endgroup]\n"
        + STAMP
        + "##[error]The runner has received a shutdown signal.\n"
        + STAMP
        + "Post job cleanup.",
    )
    diagnoses = diagnose_steps("lint", distill_steps(text), fixers=FIXERS, repo=NoFiles())
    assert [d.classification.category for d in diagnoses] == [
        Category.AUTOFIX,
        Category.AUTOFIX,
        Category.INFRA,
    ]
    plan = plan_repair(
        diagnoses,
        state=FRESH_EPISODE,
        config=RepoConfig(),
        is_agent_pr=True,
        llm=LlmGate(True),
        order=[f.name for f in FIXERS],
    )
    assert plan.step is Step.FIX
    # The loss alone is still re-run.
    alone = plan_repair(
        diagnoses[2:],
        state=FRESH_EPISODE,
        config=RepoConfig(),
        is_agent_pr=True,
        llm=LlmGate(True),
    )
    assert alone.step is Step.RERUN


# --- the same job through the server -------------------------------------------------------

# The commands the base branch's workflows run (the scenarios' isort and black jobs): only those
# are executed to verify a fix.
SERVER_ISORT = "isort --check-only --diff src tests"
SERVER_BLACK = "black --check --diff src tests"


async def test_the_server_repairs_both_failed_steps_in_one_commit(
    world: World, tmp_path: Path
) -> None:
    files = {
        **FILES,
        "tests/test_calc.py": "from demo.calc import total\n\n\ndef test_total():\n    assert total([1, 2]) == 3\n",
        # What the base branch's jobs install before their checks (`pip install -r ...`).
        "requirements-dev.txt": "isort==9.0.2\nblack==26.10.1\n",
    }
    local = make_repo(tmp_path / "local", files)
    log = two_step_log(local, SERVER_ISORT, SERVER_BLACK)
    pull = world.open_pull("imports-and-format", files, number=51)
    head = pull.head_sha
    run, job = world.fail_job(head, "lint", log)

    assert await world.deliver("workflow_job", world.workflow_job_event(run, job)) == 202
    await world.drain()

    [comment] = world.sticky_comments(51)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert outcome["outcome"] == "fixed", outcome["detail"]
    new_head = world.branch_sha("imports-and-format")
    assert new_head != head
    assert git(world.bare, "rev-parse", f"{new_head}^") == head  # one commit on the head
    assert [(f["job"], f["step"], f["fixers"]) for f in outcome["failures"]] == [
        ("lint", SERVER_ISORT, ["isort"]),
        ("lint", SERVER_BLACK, ["black"]),
    ]
    assert [fix["fixer"] for fix in outcome["fixes"]] == ["isort", "black"]
    assert f"`{SERVER_ISORT}` passes in its job environment" in outcome["verification"]
    assert f"`{SERVER_BLACK}` passes in its job environment" in outcome["verification"]
    # The pushed tree passes both checks.
    checkout = tmp_path / "pushed"
    subprocess.run(["git", "clone", "-q", str(world.bare), str(checkout)], check=True)
    subprocess.run(["git", "checkout", "-q", new_head], cwd=checkout, check=True)
    bin_dir = Path(sys.executable).parent
    for command in (SERVER_ISORT, SERVER_BLACK):
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=checkout,
            env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    world.sim.assert_no_violations()
