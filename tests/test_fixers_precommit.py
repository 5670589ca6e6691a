"""The pre-commit fixer: the repository's own hooks run again in the sandbox with a git view of
the tree; matching by what the hooks printed; hook environments cached by configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.diagnosis.logs import distill
from fixers.base import NoFiles
from fixers.precommit import PRE_COMMIT, hook_results, run_args
from tests.fixer_support import apply_fixer, git, make_log, make_repo, read_files

#: The issue's case: a local python hook whose tool comes from additional_dependencies (PyPI).
CONFIG = """repos:
  - repo: local
    hooks:
      - id: pyupgrade
        name: pyupgrade
        entry: pyupgrade --py311-plus
        language: python
        types: [python]
        additional_dependencies: ["pyupgrade==3.19.1"]
"""
REPORT = (
    "pyupgrade................................................................Failed\n"
    "- hook id: pyupgrade\n- exit code: 1\n- files were modified by this hook\n\n"
    "Rewriting app.py\n"
)
LOG = make_log("pre-commit run --all-files --show-diff-on-failure", REPORT)

FIXES = [
    (
        "from typing import List\n\nx: List[int] = []\n",
        "from typing import List\n\nx: list[int] = []\n",
    ),
    ("print('{}'.format(1))\n", "print(f'{1}')\n"),
]
CLEAN = ["x: list[int] = []\n"]


def project(root: Path, app: str, **more: str) -> Path:
    return make_repo(root, {".pre-commit-config.yaml": CONFIG, "app.py": app, **more})


@pytest.mark.parametrize(("before", "after"), FIXES)
async def test_fixes(tmp_path: Path, before: str, after: str) -> None:
    repo = project(tmp_path / "repo", before)
    result = await apply_fixer(
        PRE_COMMIT, repo, LOG, tool_cache=tmp_path / "cache", repository="acme/widgets"
    )
    assert read_files(repo, ["app.py"]) == {"app.py": after}, result.detail
    assert result.changed
    assert result.self_check_passed, result.detail
    assert result.tool_version == "pre-commit 4.7.0 (bundled)"


@pytest.mark.parametrize("clean", CLEAN)
async def test_clean_input_is_a_noop(tmp_path: Path, clean: str) -> None:
    repo = project(tmp_path / "repo", clean)
    result = await apply_fixer(PRE_COMMIT, repo, LOG, tool_cache=tmp_path / "cache")
    assert not result.changed, result.detail
    assert result.self_check_passed
    assert git(repo, "status", "--porcelain") == ""


async def test_hook_environments_are_cached_by_configuration(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for i, (before, after) in enumerate(FIXES):
        repo = project(tmp_path / f"repo{i}", before)
        await apply_fixer(PRE_COMMIT, repo, LOG, tool_cache=cache, repository="acme/widgets")
        assert read_files(repo, ["app.py"]) == {"app.py": after}
    built = [p for p in (cache / "pre-commit").iterdir() if not p.name.startswith(".")]
    assert len(built) == 1  # the second repair reused the first one's environments


async def test_pinned_version_from_requirements(tmp_path: Path) -> None:
    repo = project(
        tmp_path / "repo", FIXES[0][0], **{"requirements-dev.txt": "pre-commit==4.2.0\n"}
    )
    result = await apply_fixer(PRE_COMMIT, repo, LOG, tool_cache=tmp_path / "cache")
    assert result.tool_version == "pre-commit 4.2.0 (pinned in requirements-dev.txt)"
    assert read_files(repo, ["app.py"]) == {"app.py": FIXES[0][1]}
    assert result.self_check_passed, result.detail


@pytest.mark.parametrize(
    ("excerpt", "expected"),
    [
        (REPORT, True),
        # A hook that only checks: classified by what it printed, not by this fixer.
        (
            "flake8...................................................................Failed\n"
            "- hook id: flake8\n- exit code: 1\n\napp.py:1:1: F401 'os' imported but unused\n",
            False,
        ),
        # One modifying hook and one checking hook: re-running cannot pass.
        (
            REPORT
            + "flake8...........Failed\n- hook id: flake8\n- exit code: 1\n\napp.py:1:1: F401\n",
            False,
        ),
        # Only the whitespace hooks: the whitespace fixer's.
        (
            "trim trailing whitespace.................................................Failed\n"
            "- hook id: trailing-whitespace\n- exit code: 1\n- files were modified by this hook\n",
            False,
        ),
    ],
)
def test_matches(excerpt: str, expected: bool) -> None:
    log = make_log("pre-commit run --all-files --show-diff-on-failure", excerpt)
    assert PRE_COMMIT.matches(log, NoFiles()) is expected


def test_matches_the_pre_commit_action_from_the_log_alone() -> None:
    log = distill(
        "##[group]Run pre-commit/action@v3.0.1\nwith:\n  extra_args: --all-files\n##[endgroup]\n"
        "##[group]Run pre-commit run --show-diff-on-failure --color=always --all-files\n"
        "pre-commit run --show-diff-on-failure --color=always --all-files\n"
        "shell: /usr/bin/bash --noprofile --norc -e -o pipefail {0}\n##[endgroup]\n"
        + REPORT
        + "##[error]Process completed with exit code 1.\n"
    )
    assert PRE_COMMIT.matches(log, NoFiles())


def test_hook_results() -> None:
    assert hook_results(REPORT) == (["pyupgrade"], {"pyupgrade"})


@pytest.mark.parametrize(
    ("command", "scope", "expected"),
    [
        (
            "pre-commit run --all-files --show-diff-on-failure",
            None,
            ["--all-files", "--show-diff-on-failure"],
        ),
        ("pre-commit run pyupgrade -a", None, ["pyupgrade", "-a"]),
        (
            "pre-commit run --from-ref origin/main --to-ref HEAD",
            frozenset({"b.py", "a.py"}),
            ["--files", "a.py", "b.py"],
        ),
        ("pre-commit run --from-ref origin/main --to-ref HEAD", None, ["--all-files"]),
        ("pre-commit run --color=always --all-files", None, ["--color=always", "--all-files"]),
    ],
)
def test_run_args(command: str, scope: frozenset[str] | None, expected: list[str]) -> None:
    assert run_args(command, scope) == expected
