"""Every CI failure scenario in ../shared/scenarios through ``shepherd fix``.

Autofix scenarios end with the scenario's own ``must_pass_after`` command passing on the fixed
tree; infra, human and (without the LLM) agent scenarios leave the tree untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.kernel.problems import OutcomeKind
from bot.ops.local import fix_repo
from bot.sandbox import make_runner
from fixers import FIXERS
from fixers.tools import bundled_tool_dirs
from tests.conftest import REPO_ROOT, SHARED
from tests.fixer_support import case_expect, copy_case

CASES = SHARED / "scenarios" / "cases"
SCENARIOS = sorted(p.name for p in CASES.iterdir() if p.is_dir())


def test_the_scenario_folder_is_there() -> None:
    assert len(SCENARIOS) >= 17


def checkout(name: str, tmp_path: Path) -> Path:
    """The scenario's repo as a git checkout (pre-commit and the whitespace fixer need one)."""
    return copy_case(name, tmp_path / "repo")


def tool_env() -> dict[str, str]:
    bins = [str(Path(sys.executable).parent), str(REPO_ROOT / ".tools" / "node" / "bin")]
    return {**os.environ, "PATH": os.pathsep.join([*bins, os.environ.get("PATH", "")])}


def status(repo: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("name", [n for n in SCENARIOS if case_expect(n)["category"] == "autofix"])
async def test_autofix_scenario_passes_after_shepherd_fix(name: str, tmp_path: Path) -> None:
    repo = checkout(name, tmp_path)
    runner = make_runner(
        allow_unsandboxed=False, tool_dirs=bundled_tool_dirs(), tool_cache=tmp_path / "tools"
    )
    result = await fix_repo(
        repo, CASES / name / "job.log", fixers=FIXERS, runner=runner, agent=None
    )
    wanted = case_expect(name)
    assert result.outcome.outcome is OutcomeKind.FIXED, result.outcome.model_dump_json(indent=2)
    assert result.outcome.failures[0].fixers == wanted.get("fixers", [wanted["fixer"]])
    assert status(repo)  # the fix is left in the working tree
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)  # pre-commit checks tracked files
    # As the scenario's CI would: its set-up (e.g. `npm ci`), then the command that must pass.
    script = " && ".join([*wanted.get("setup_commands", []), wanted["must_pass_after"]])
    after = subprocess.run(
        ["bash", "-c", script],
        cwd=repo / wanted.get("working_directory", "."),
        env=tool_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert after.returncode == 0, after.stdout + after.stderr


@pytest.mark.parametrize("name", [n for n in SCENARIOS if case_expect(n)["category"] != "autofix"])
async def test_other_scenarios_change_no_code(name: str, tmp_path: Path) -> None:
    repo = checkout(name, tmp_path)
    runner = make_runner(allow_unsandboxed=False, tool_dirs=bundled_tool_dirs())
    result = await fix_repo(
        repo,
        CASES / name / "job.log",
        fixers=FIXERS,
        runner=runner,
        agent=None,
        llm_skip_reason="disabled with --no-agent",
    )
    category = case_expect(name)["category"]
    assert result.outcome.failures[0].category == category
    assert result.outcome.outcome is (
        OutcomeKind.RERUN if category == "infra" else OutcomeKind.HANDOFF
    )
    assert status(repo) == ""
