"""The ruff-format fixer: matching and (before, after) tables through the real sandbox.

No scenario case uses ruff format, so the no-match test over all cases is the scenario check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixers.base import WorktreeFiles
from fixers.ruff_format import RUFF_FORMAT
from tests.fixer_support import (
    all_cases,
    apply_fixer,
    assert_matches_only_its_scenarios,
    make_log,
    make_repo,
    read_files,
)

LOG = make_log("ruff format --check .", "Would reformat: a.py\n1 file would be reformatted")

FIXES = [
    ("x = {  'a':37,'b':42}\n", 'x = {"a": 37, "b": 42}\n'),
    ("def f( a ):\n  return a\n", "def f(a):\n    return a\n"),
    ("print('x')\n\n\n", 'print("x")\n'),
]
CLEAN = ['x = {"a": 37}\n', ""]


@pytest.mark.parametrize(("before", "after"), FIXES)
async def test_fixes(tmp_path: Path, before: str, after: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a.py": before})
    result = await apply_fixer(RUFF_FORMAT, repo, LOG)
    assert read_files(repo, ["a.py"]) == {"a.py": after}
    assert result.changed
    assert result.self_check_passed


@pytest.mark.parametrize("clean", CLEAN)
async def test_clean_input_is_a_noop(tmp_path: Path, clean: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a.py": clean})
    result = await apply_fixer(RUFF_FORMAT, repo, LOG)
    assert not result.changed
    assert result.self_check_passed


async def test_repo_config_is_honoured(tmp_path: Path) -> None:
    config = '[tool.ruff.format]\nquote-style = "single"\n'
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": config, "a.py": 'x = "a"\n'})
    result = await apply_fixer(RUFF_FORMAT, repo, LOG)
    assert read_files(repo, ["a.py"]) == {"a.py": "x = 'a'\n"}
    assert result.changed


@pytest.mark.parametrize("case", all_cases())
def test_matches_only_its_scenarios(case: str) -> None:
    assert_matches_only_its_scenarios(RUFF_FORMAT, case)


@pytest.mark.parametrize(
    ("command", "excerpt", "expected"),
    [
        ("ruff format --check .", "Would reformat: src/a.py\n1 file would be reformatted", True),
        ("ruff format --diff .", "--- a.py\n+++ a.py\n1 file would be reformatted", True),
        ("black --check .", "would reformat /a.py\nOh no!\n1 file would be reformatted.", False),
        ("ruff check .", "Found 1 error.\n[*] 1 fixable with `--fix`.", False),
    ],
)
def test_matches(command: str, excerpt: str, expected: bool) -> None:
    assert RUFF_FORMAT.matches(make_log(command, excerpt), WorktreeFiles(Path("/x"))) is expected
