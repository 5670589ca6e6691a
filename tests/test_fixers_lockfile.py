"""The lockfile fixer: matching, and `uv lock` through the real sandbox (network to the index)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.diagnosis.logs import DistilledLog
from fixers.base import WorktreeFiles
from fixers.lockfile import DEFAULT_POETRY, LOCKFILE, manager_for, moved_versions
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


# --- npm, pnpm, yarn, poetry, cargo ---------------------------------------------------------------

NPM_LOG = make_log(
    "npm ci",
    "npm error `npm ci` can only install packages when your package.json and package-lock.json "
    "or npm-shrinkwrap.json are in sync. Please update your lock file with `npm install` before "
    "continuing.\nnpm error Missing: ms@2.1.3 from lock file\n",
)
PNPM_LOG = make_log(
    "pnpm install --frozen-lockfile",
    ' ERR_PNPM_OUTDATED_LOCKFILE  Cannot install with "frozen-lockfile" because pnpm-lock.yaml '
    "is not up to date with <ROOT>/package.json\n",
)
YARN_LOG = make_log(
    "yarn install --frozen-lockfile",
    "error Your lockfile needs to be updated, but yarn was run with `--frozen-lockfile`.\n",
)
POETRY_LOG = make_log(
    "poetry install --no-root",
    "pyproject.toml changed significantly since poetry.lock was last generated. "
    "Run `poetry lock` to fix the lock file.\n",
)
CARGO_LOG = make_log(
    "cargo build --locked",
    "error: the lock file /home/runner/work/w/w/Cargo.lock needs to be updated but --locked was "
    "passed to prevent this\n",
)


def _package(deps: dict[str, str], **extra: str) -> str:
    return json.dumps({"name": "demo", "version": "1.0.0", "dependencies": deps, **extra})


async def _stale_node_repo(tmp_path: Path, tool: list[str], lock: str, **extra: str) -> Path:
    """A repository locked for debug 4.3.4 (which locks ms 2.1.2), then ms 2.1.3 added."""
    repo = make_repo(tmp_path / "repo", {"package.json": _package({"debug": "4.3.4"}, **extra)})
    setup = "npm_config_manage_package_manager_versions=false " + " ".join(tool)
    done = await run_in_sandbox(setup, repo, network=True)
    assert done.ok, done.output
    assert (repo / lock).is_file()
    commit_all(repo, "lock")
    (repo / "package.json").write_text(_package({"debug": "4.3.4", "ms": "2.1.3"}, **extra))
    commit_all(repo, "add ms")
    return repo


NODE_CASES = [
    (
        NPM_LOG,
        ["npm", "install", "--package-lock-only", "--ignore-scripts"],
        "package-lock.json",
        "npm ci --dry-run --ignore-scripts",
    ),
    (
        PNPM_LOG,
        ["pnpm", "install", "--lockfile-only", "--ignore-scripts"],
        "pnpm-lock.yaml",
        "pnpm install --frozen-lockfile --lockfile-only --ignore-scripts",
    ),
    (
        YARN_LOG,
        ["yarn", "install", "--ignore-scripts", "--modules-folder", "/tmp/nm"],
        "yarn.lock",
        "yarn install --frozen-lockfile --ignore-scripts --modules-folder /tmp/nm",
    ),
]


@pytest.mark.parametrize(("log", "tool", "lock", "check"), NODE_CASES)
async def test_node_lock_gets_the_missing_package_and_nothing_else_moves(
    tmp_path: Path, log: DistilledLog, tool: list[str], lock: str, check: str
) -> None:
    repo = await _stale_node_repo(tmp_path, tool, lock)
    stale = await run_in_sandbox(check, repo, network=True)
    assert not stale.ok
    before = (repo / lock).read_text()
    assert LOCKFILE.matches(log, WorktreeFiles(repo))
    result = await apply_fixer(LOCKFILE, repo, log)
    assert result.changed, result.detail
    assert result.self_check_passed, result.detail
    after = (repo / lock).read_text()
    assert "2.1.3" in after
    assert "4.3.4" in before
    assert "4.3.4" in after  # debug did not move
    assert git(repo, "status", "--porcelain").split() == ["M", lock]
    fresh = await run_in_sandbox(check, repo, network=True)
    assert fresh.ok, fresh.output


@pytest.mark.parametrize(("log", "tool", "lock", "check"), NODE_CASES)
async def test_node_lock_in_step_is_a_noop(
    tmp_path: Path, log: DistilledLog, tool: list[str], lock: str, check: str
) -> None:
    repo = make_repo(tmp_path / "repo", {"package.json": _package({"debug": "4.3.4"})})
    done = await run_in_sandbox(" ".join(tool), repo, network=True)
    assert done.ok, done.output
    commit_all(repo, "lock")
    result = await apply_fixer(LOCKFILE, repo, log)
    assert not result.changed, result.detail
    assert result.self_check_passed
    assert git(repo, "status", "--porcelain") == ""


async def test_pnpm_version_pinned_by_package_manager(tmp_path: Path) -> None:
    repo = await _stale_node_repo(
        tmp_path,
        ["pnpm", "install", "--lockfile-only", "--ignore-scripts"],
        "pnpm-lock.yaml",
        packageManager="pnpm@9.15.9",
    )
    result = await apply_fixer(LOCKFILE, repo, PNPM_LOG, tool_cache=tmp_path / "cache")
    assert result.tool_version == "pnpm 9.15.9 (pinned in package.json packageManager)"
    assert result.changed
    assert result.self_check_passed, result.detail


POETRY_PYPROJECT = """[tool.poetry]
name = "demo"
version = "0.1.0"
description = ""
authors = ["A <a@example.invalid>"]
package-mode = false

[tool.poetry.dependencies]
python = "^3.11"
iniconfig = "2.0.0"
"""


async def test_poetry_lock_with_the_version_from_its_header(tmp_path: Path) -> None:
    """Pin: poetry.lock's ``@generated by Poetry X`` header; that poetry is installed."""
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": POETRY_PYPROJECT})
    cache = tmp_path / "cache"
    first = await apply_fixer(LOCKFILE, repo, POETRY_LOG, tool_cache=cache)
    assert first.changed, first.detail
    assert first.tool_version == f"poetry {DEFAULT_POETRY} (default; poetry.lock names no version)"
    lock = (repo / "poetry.lock").read_text()
    assert f"@generated by Poetry {DEFAULT_POETRY}" in lock
    commit_all(repo, "lock")
    noop = await apply_fixer(LOCKFILE, repo, POETRY_LOG, tool_cache=cache)
    assert not noop.changed
    assert noop.self_check_passed
    (repo / "pyproject.toml").write_text(POETRY_PYPROJECT + 'packaging = "24.1"\n')
    result = await apply_fixer(LOCKFILE, repo, POETRY_LOG, tool_cache=cache)
    assert result.changed, result.detail
    assert result.self_check_passed, result.detail
    assert result.tool_version == f"poetry {DEFAULT_POETRY} (pinned in poetry.lock)"
    new = (repo / "poetry.lock").read_text()
    assert 'name = "packaging"' in new
    assert 'version = "2.0.0"' in new  # iniconfig kept


CARGO_TOML = """[package]
name = "app"
version = "0.1.0"
edition = "2021"

[dependencies]
"""


async def test_cargo_lock_gets_the_new_workspace_crate(tmp_path: Path) -> None:
    """Offline: a path dependency added without updating Cargo.lock (crates.io is not needed)."""
    files = {
        "Cargo.toml": CARGO_TOML,
        "src/main.rs": "fn main() {}\n",
        "util/Cargo.toml": CARGO_TOML.replace('"app"', '"util"'),
        "util/src/lib.rs": "",
        ".gitignore": "target/\n",
    }
    repo = make_repo(tmp_path / "repo", files)
    first = await apply_fixer(LOCKFILE, repo, CARGO_LOG)
    assert first.changed
    commit_all(repo, "lock")
    noop = await apply_fixer(LOCKFILE, repo, CARGO_LOG)
    assert not noop.changed
    assert noop.self_check_passed
    (repo / "Cargo.toml").write_text(CARGO_TOML + 'util = { path = "util" }\n')
    result = await apply_fixer(LOCKFILE, repo, CARGO_LOG)
    assert result.changed, result.detail
    assert result.self_check_passed, result.detail
    assert 'name = "util"' in (repo / "Cargo.lock").read_text()
    assert result.tool_version is not None
    assert result.tool_version.startswith("cargo 1.65")


def test_moved_versions() -> None:
    before = {"a": {"1.0.0"}, "b": {"2.0.0"}, "c": {"1.0.0"}}
    after = {"a": {"1.0.0"}, "b": {"2.1.0"}, "d": {"0.1.0"}}
    assert moved_versions(before, after) == {"b": ("2.0.0", "2.1.0")}


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (NPM_LOG, "npm"),
        (PNPM_LOG, "pnpm"),
        (YARN_LOG, "yarn"),
        (
            make_log(
                "yarn install --immutable",
                "➤ YN0028: │ The lockfile would have been modified by this install, which is explicitly forbidden.",
            ),
            "yarn",
        ),
        (POETRY_LOG, "poetry"),
        (CARGO_LOG, "cargo"),
        (LOG, None),
    ],
)
def test_manager_for(log: DistilledLog, expected: str | None) -> None:
    manager = manager_for(log)
    assert (manager.name if manager else None) == expected
    assert LOCKFILE.matches(log, WorktreeFiles(Path("/x")))
