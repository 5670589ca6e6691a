"""The lockfile fixer: matching, and `uv lock` through the real sandbox (network to the index)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixers.base import WorktreeFiles
from fixers.lockfile import LOCKFILE
from tests.fixer_support import (
    all_cases,
    apply_fixer,
    assert_matches_only_its_scenarios,
    case_expect,
    commit_all,
    fix_scenario,
    git,
    make_log,
    make_repo,
    run_in_sandbox,
)

LOG = make_log(
    "uv lock --locked",
    "Resolved 3 packages in 2ms\n"
    "error: The lockfile at `uv.lock` needs to be updated, but `--locked` was provided.",
)
PYPROJECT = (
    '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.11"\ndependencies = []\n'
)


async def test_stale_lockfile_is_regenerated(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": PYPROJECT})
    first = await apply_fixer(LOCKFILE, repo, LOG)  # creates uv.lock
    assert first.changed
    assert first.self_check_passed
    commit_all(repo, "lock")
    # Adding a dependency makes the lock stale; no network-free fix exists, uv resolves it.
    (repo / "pyproject.toml").write_text(PYPROJECT.replace("[]", '["iniconfig"]'))
    result = await apply_fixer(LOCKFILE, repo, LOG)
    assert result.changed
    assert result.self_check_passed
    assert 'name = "iniconfig"' in (repo / "uv.lock").read_text()
    assert "network access" in result.detail
    assert result.tool_version is not None
    assert result.tool_version.startswith("uv ")


async def test_fresh_lockfile_is_a_noop(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": PYPROJECT})
    await apply_fixer(LOCKFILE, repo, LOG)
    commit_all(repo, "lock")
    result = await apply_fixer(LOCKFILE, repo, LOG)
    assert not result.changed
    assert result.self_check_passed
    assert git(repo, "status", "--porcelain") == ""


async def test_scenario(tmp_path: Path) -> None:
    name = "af-lockfile-uv"
    repo, _ = await fix_scenario(LOCKFILE, name, tmp_path)
    assert 'name = "tenacity"' in (repo / "uv.lock").read_text()
    assert git(repo, "status", "--porcelain").split() == ["M", "uv.lock"]
    check = await run_in_sandbox(case_expect(name)["must_pass_after"], repo, network=True)
    assert check.ok, check.output


@pytest.mark.parametrize("case", all_cases())
def test_matches_only_its_scenarios(case: str) -> None:
    assert_matches_only_its_scenarios(LOCKFILE, case)


@pytest.mark.parametrize(
    ("command", "excerpt", "expected"),
    [
        ("uv sync --locked", "error: The lockfile at `uv.lock` needs to be updated, but", True),
        ("uv lock --check", "The lockfile at `uv.lock` needs to be updated", True),
        ("uv lock --locked", "No solution found when resolving dependencies:", False),
        ("uv sync", "error: Failed to fetch: `https://pypi.org/simple/httpx/`", False),
    ],
)
def test_matches(command: str, excerpt: str, expected: bool) -> None:
    assert LOCKFILE.matches(make_log(command, excerpt), WorktreeFiles(Path("/x"))) is expected
