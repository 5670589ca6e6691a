"""The black fixer: matching, (before, after) tables through the real sandbox, the scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixers.base import WorktreeFiles
from fixers.black import BLACK
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
    "black --check .", "would reformat /w/a.py\n\nOh no! 💥 💔 💥\n1 file would be reformatted."
)

FIXES = [
    ("x = {  'a':37,'b':42,\n'c':927}\n", 'x = {"a": 37, "b": 42, "c": 927}\n'),
    ("def f(a,):\n  return a\n", "def f(\n    a,\n):\n    return a\n"),
    ("if x :\n    pass\n", "if x:\n    pass\n"),
    ("print('hello')\n\n\n\n", 'print("hello")\n'),
]
CLEAN = ["x = 1\n", "def f(a: int) -> int:\n    return a\n", ""]


@pytest.mark.parametrize(("before", "after"), FIXES)
async def test_fixes(tmp_path: Path, before: str, after: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a.py": before})
    result = await apply_fixer(BLACK, repo, LOG)
    assert read_files(repo, ["a.py"]) == {"a.py": after}
    assert result.changed
    assert result.self_check_passed
    assert result.fixer == "black"
    assert result.tool_version is not None
    assert result.tool_version.startswith("black ")
    assert "a.py" in result.detail


@pytest.mark.parametrize("clean", CLEAN)
async def test_clean_input_is_a_noop(tmp_path: Path, clean: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a.py": clean})
    result = await apply_fixer(BLACK, repo, LOG)
    assert not result.changed
    assert result.self_check_passed
    assert read_files(repo, ["a.py"]) == {"a.py": clean}


async def test_only_the_ci_targets_and_subdir_are_formatted(tmp_path: Path) -> None:
    ugly = "x = {  'a':37}\n"
    repo = make_repo(
        tmp_path / "repo",
        {"svc/src/a.py": ugly, "svc/other/b.py": ugly, "c.py": ugly},
    )
    log = make_log("black --check --diff src", "would reformat /w/svc/src/a.py", "svc")
    result = await apply_fixer(BLACK, repo, log, subdir="svc")
    assert result.changed
    assert read_files(repo, ["svc/src/a.py", "svc/other/b.py", "c.py"]) == {
        "svc/src/a.py": 'x = {"a": 37}\n',
        "svc/other/b.py": ugly,
        "c.py": ugly,
    }


async def test_protected_paths_are_left_alone(tmp_path: Path) -> None:
    ugly = "x = {  'a':37}\n"
    repo = make_repo(tmp_path / "repo", {"src/a.py": ugly, "migrations/0001.py": ugly})
    result = await apply_fixer(BLACK, repo, LOG, protected=["migrations/**"])
    assert read_files(repo, ["src/a.py", "migrations/0001.py"]) == {
        "src/a.py": 'x = {"a": 37}\n',
        "migrations/0001.py": ugly,
    }
    assert "migrations/0001.py" in result.detail
    # black --check still fails on the protected file: the result must say so.
    assert not result.self_check_passed


async def test_pinned_version_equal_to_bundled_is_reported(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "repo", {"a.py": "x=1\n", "requirements-dev.txt": "black==26.10.1\n"}
    )
    result = await apply_fixer(BLACK, repo, LOG)
    assert result.tool_version == "black 26.10.1 (pinned in requirements-dev.txt)"


async def test_scenario(tmp_path: Path) -> None:
    name = "af-black"
    repo, _ = await fix_scenario(BLACK, name, tmp_path)
    check = await run_in_sandbox(case_expect(name)["must_pass_after"], repo)
    assert check.ok, check.output


@pytest.mark.parametrize("case", all_cases())
def test_matches_only_its_scenarios(case: str) -> None:
    assert_matches_only_its_scenarios(BLACK, case)


@pytest.mark.parametrize(
    ("command", "excerpt", "expected"),
    [
        ("black --check src", "would reformat /a/b.py\nOh no!\n1 file would be reformatted.", True),
        ("make lint", "would reformat src/x.py", True),
        ("ruff format --check .", "Would reformat: a.py\n1 file would be reformatted", False),
        ("black --check .", "error: cannot format a.py: Cannot parse: 1:4", False),
        ("pytest", "All done! ✨ 🍰 ✨", False),
    ],
)
def test_matches(command: str, excerpt: str, expected: bool) -> None:
    assert (
        BLACK.matches(make_log(command, excerpt), WorktreeFiles(Path("/nonexistent"))) is expected
    )
