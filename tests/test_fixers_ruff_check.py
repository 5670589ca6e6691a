"""The ruff-check fixer: matching, (before, after) tables through the real sandbox, the scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixers.base import WorktreeFiles
from fixers.ruff_check import RUFF_CHECK
from tests.fixer_support import (
    all_cases,
    apply_fixer,
    case_dir,
    case_expect,
    case_log,
    copy_case,
    make_log,
    make_repo,
    read_files,
    run_in_sandbox,
)

LOG = make_log(
    "ruff check .", "F401 [*] `os` imported but unused\nFound 1 error.\n[*] 1 fixable with `--fix`."
)
CONFIG = '[tool.ruff.lint]\nselect = ["F", "I", "UP"]\n'

FIXES = [
    ("import os\nimport sys\n\nprint(sys.argv)\n", "import sys\n\nprint(sys.argv)\n"),
    (
        "import sys\nimport os\n\nprint(os.sep, sys.argv)\n",
        "import os\nimport sys\n\nprint(os.sep, sys.argv)\n",
    ),
    (
        "from typing import List\n\n\ndef f(x: List[int]) -> List[int]:\n    return x\n",
        "\n\ndef f(x: list[int]) -> list[int]:\n    return x\n",
    ),
]
CLEAN = ["import sys\n\nprint(sys.argv)\n", ""]


@pytest.mark.parametrize(("before", "after"), FIXES)
async def test_fixes(tmp_path: Path, before: str, after: str) -> None:
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": CONFIG, "a.py": before})
    result = await apply_fixer(RUFF_CHECK, repo, LOG)
    assert read_files(repo, ["a.py"]) == {"a.py": after}
    assert result.changed
    assert result.self_check_passed
    assert result.tool_version == "ruff 0.17.6 (bundled)"


@pytest.mark.parametrize("clean", CLEAN)
async def test_clean_input_is_a_noop(tmp_path: Path, clean: str) -> None:
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": CONFIG, "a.py": clean})
    result = await apply_fixer(RUFF_CHECK, repo, LOG)
    assert not result.changed
    assert result.self_check_passed


async def test_unfixable_findings_fail_the_self_check(tmp_path: Path) -> None:
    before = "import os\n\nprint(undefined_name)\n"
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": CONFIG, "a.py": before})
    result = await apply_fixer(RUFF_CHECK, repo, LOG)
    assert result.changed  # the unused import went
    assert not result.self_check_passed  # F821 is left for someone else
    assert "F821" in result.detail
    assert read_files(repo, ["a.py"]) == {"a.py": "\nprint(undefined_name)\n"}


async def test_no_cache_dir_is_left_behind(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": CONFIG, "a.py": FIXES[0][0]})
    await apply_fixer(RUFF_CHECK, repo, LOG)
    assert not (repo / ".ruff_cache").exists()


async def test_scenario(tmp_path: Path) -> None:
    name = "af-ruff-check-unused-imports"
    repo = copy_case(name, tmp_path / "repo")
    log = case_log(name)
    assert RUFF_CHECK.matches(log, WorktreeFiles(repo))
    result = await apply_fixer(RUFF_CHECK, repo, log)
    assert result.changed
    assert result.self_check_passed
    check = await run_in_sandbox(case_expect(name)["must_pass_after"], repo)
    assert check.ok, check.output


@pytest.mark.parametrize("case", all_cases())
def test_matches_only_its_scenarios(case: str) -> None:
    expect = case_expect(case)
    wanted = "ruff-check" in [expect.get("fixer"), *expect.get("fixers", [])]
    assert RUFF_CHECK.matches(case_log(case), WorktreeFiles(case_dir(case) / "repo")) is wanted


@pytest.mark.parametrize(
    ("command", "excerpt", "expected"),
    [
        ("ruff check src", "Found 3 errors.\n[*] 2 fixable with `--fix`.", True),
        ("uv run ruff check .", "Found 1 error.\n[*] 1 fixable with the `--fix` option.", True),
        ("ruff check .", "F821 Undefined name `x`\nFound 1 error.", False),
        ("ruff format --check .", "Would reformat: a.py", False),
        ("pytest", "[*] 1 fixable with `--fix`.", False),
    ],
)
def test_matches(command: str, excerpt: str, expected: bool) -> None:
    assert RUFF_CHECK.matches(make_log(command, excerpt), WorktreeFiles(Path("/x"))) is expected
