"""The isort fixer: matching, (before, after) tables through the real sandbox, the scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixers.base import WorktreeFiles
from fixers.isort import ISORT
from tests.fixer_support import (
    all_cases,
    apply_fixer,
    assert_matches_only_its_scenarios,
    case_expect,
    fix_scenario,
    make_log,
    make_repo,
    read_files,
    run_in_sandbox,
)

LOG = make_log(
    "isort --check-only --diff .",
    "ERROR: /w/a.py Imports are incorrectly sorted and/or formatted.",
)

FIXES = [
    ("import sys\nimport os\n", "import os\nimport sys\n"),
    ("from a import c, b\n", "from a import b, c\n"),
    ("import requests\nimport os\n", "import os\n\nimport requests\n"),
]
CLEAN = ["import os\nimport sys\n", ""]


@pytest.mark.parametrize(("before", "after"), FIXES)
async def test_fixes(tmp_path: Path, before: str, after: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a.py": before})
    result = await apply_fixer(ISORT, repo, LOG)
    assert read_files(repo, ["a.py"]) == {"a.py": after}
    assert result.changed
    assert result.self_check_passed
    assert result.tool_version == "isort 9.0.2 (bundled)"


@pytest.mark.parametrize("clean", CLEAN)
async def test_clean_input_is_a_noop(tmp_path: Path, clean: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a.py": clean})
    result = await apply_fixer(ISORT, repo, LOG)
    assert not result.changed
    assert result.self_check_passed


async def test_scenario(tmp_path: Path) -> None:
    name = "af-isort"
    repo, result = await fix_scenario(ISORT, name, tmp_path)
    assert result.tool_version == "isort 9.0.2 (pinned in requirements-dev.txt)"
    check = await run_in_sandbox(case_expect(name)["must_pass_after"], repo)
    assert check.ok, check.output


@pytest.mark.parametrize("case", all_cases())
def test_matches_only_its_scenarios(case: str) -> None:
    assert_matches_only_its_scenarios(ISORT, case)


@pytest.mark.parametrize(
    ("command", "excerpt", "expected"),
    [
        (
            "isort --check-only src",
            "ERROR: /a.py Imports are incorrectly sorted and/or formatted.",
            True,
        ),
        ("isort -c .", "ERROR: /a.py something", True),
        ("isort --check-only .", "Skipped 2 files", False),
        ("pytest", "ImportError: cannot import name 'x'", False),
    ],
)
def test_matches(command: str, excerpt: str, expected: bool) -> None:
    assert ISORT.matches(make_log(command, excerpt), WorktreeFiles(Path("/x"))) is expected
