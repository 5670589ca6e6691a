"""The whitespace fixer: matching, (before, after) tables through the real sandbox, the scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixers.base import NoFiles
from fixers.whitespace import WHITESPACE, configured_args, failed_hooks
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

ALL_FAILED = make_log(
    "pre-commit run --all-files",
    "trim trailing whitespace.................................................Failed\n"
    "fix end of files.........................................................Failed\n"
    "mixed line ending........................................................Failed\n",
)

FIXES = [
    ("a = 1   \nb = 2\t\n", "a = 1\nb = 2\n"),
    ("no newline at end", "no newline at end\n"),
    ("too many\n\n\n", "too many\n"),
    ("mixed\r\nendings\r\nhere\n", "mixed\r\nendings\r\nhere\r\n"),
]
CLEAN = ["clean\n", "", "two\nlines\n"]


@pytest.mark.parametrize(("before", "after"), FIXES)
async def test_fixes(tmp_path: Path, before: str, after: str) -> None:
    repo = make_repo(tmp_path / "repo", {"notes.txt": before})
    result = await apply_fixer(WHITESPACE, repo, ALL_FAILED)
    assert read_files(repo, ["notes.txt"]) == {"notes.txt": after}
    assert result.changed
    assert result.self_check_passed
    assert result.tool_version is not None
    assert result.tool_version.startswith("pre-commit-hooks ")


@pytest.mark.parametrize("clean", CLEAN)
async def test_clean_input_is_a_noop(tmp_path: Path, clean: str) -> None:
    repo = make_repo(tmp_path / "repo", {"notes.txt": clean})
    result = await apply_fixer(WHITESPACE, repo, ALL_FAILED)
    assert not result.changed
    assert result.self_check_passed


async def test_only_tracked_text_files_outside_protected_paths(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {"a.txt": "x  \n", "vendor/b.txt": "y  \n", "img.bin": b"\x00\x01  \n", "-n.txt": "z \n"},
    )
    (repo / "untracked.txt").write_text("u  \n")
    result = await apply_fixer(WHITESPACE, repo, ALL_FAILED, protected=["vendor/"])
    assert read_files(repo, ["a.txt", "vendor/b.txt", "untracked.txt", "-n.txt"]) == {
        "a.txt": "x\n",
        "vendor/b.txt": "y  \n",
        "untracked.txt": "u  \n",
        "-n.txt": "z\n",
    }
    assert (repo / "img.bin").read_bytes() == b"\x00\x01  \n"
    assert result.changed


async def test_only_the_failed_hooks_run(tmp_path: Path) -> None:
    log = make_log(
        "pre-commit run -a", "fix end of files......Failed\n- hook id: end-of-file-fixer\n"
    )
    repo = make_repo(tmp_path / "repo", {"a.txt": "x  \ny"})
    result = await apply_fixer(WHITESPACE, repo, log)
    assert read_files(repo, ["a.txt"]) == {"a.txt": "x  \ny\n"}
    assert "end-of-file-fixer" in result.detail


def test_failed_hooks_and_config_args() -> None:
    assert failed_hooks(ALL_FAILED.excerpt) == list(
        ["trailing-whitespace", "end-of-file-fixer", "mixed-line-ending"]
    )
    assert failed_hooks("check yaml....Failed\ntrim trailing whitespace....Passed") == []
    config = (
        "repos:\n- repo: local\n  hooks:\n  - id: trailing-whitespace\n"
        "    args: [--markdown-linebreak-ext=md]\n  - id: mixed-line-ending\n"
        "    args: ['--fix=lf; rm -rf /']\n"
    )
    assert configured_args(config, "trailing-whitespace") == ("--markdown-linebreak-ext=md",)
    assert configured_args(config, "mixed-line-ending") is None  # not a plain option: ignored
    assert configured_args("not: [valid", "trailing-whitespace") is None


async def test_scenario(tmp_path: Path) -> None:
    name = "af-whitespace-precommit"
    repo, _ = await fix_scenario(WHITESPACE, name, tmp_path)
    # pre-commit is bundled; the case's hooks are local (language: system): no network needed.
    check = await run_in_sandbox(case_expect(name)["must_pass_after"], repo)
    assert check.ok, check.output


@pytest.mark.parametrize("case", all_cases())
def test_matches_only_its_scenarios(case: str) -> None:
    assert_matches_only_its_scenarios(WHITESPACE, case)


@pytest.mark.parametrize(
    ("excerpt", "hooks"),
    [
        # stylelint (old and new rule names)
        (
            "normalize.css\n429:1\tUnexpected missing newline at end of file (no-missing-eof-newline)",
            ["end-of-file-fixer"],
        ),
        (
            "a.css\n 3:1  ✖  Unexpected missing end-of-source newline  no-missing-end-of-source-newline",
            ["end-of-file-fixer"],
        ),
        # eslint stylish
        (
            "/w/a.js\n  3:1  error  Newline required at end of file but not found  eol-last\n"
            "  2:9  error  Trailing spaces not allowed  no-trailing-spaces",
            ["trailing-whitespace", "end-of-file-fixer"],
        ),
        # pycodestyle / flake8
        (
            "src/a.py:4:10: W291 trailing whitespace\nsrc/a.py:9:1: W292 no newline at end of file",
            ["trailing-whitespace", "end-of-file-fixer"],
        ),
        # another finding in the same run: the whitespace hooks alone cannot make it pass
        (
            "src/a.py:4:10: W291 trailing whitespace\nsrc/a.py:5:80: E501 line too long (99 > 79)",
            [],
        ),
        (
            "/w/a.js\n  3:1  error  Newline required at end of file but not found  eol-last\n"
            "  4:5  error  'x' is defined but never used  no-unused-vars",
            [],
        ),
        # the words without a finding's position are not a finding
        ("trim trailing whitespace....Passed\nmissing newline at end of file, see docs", []),
    ],
)
def test_linters_whitespace_findings_are_the_hooks_findings(excerpt: str, hooks: list[str]) -> None:
    """Pattern: a linter (stylelint, eslint, pycodestyle) reporting only a missing final newline
    or trailing whitespace, which the pre-commit-hooks fixers repair."""
    assert failed_hooks(excerpt) == hooks
    assert WHITESPACE.matches(make_log("npm test", excerpt), NoFiles()) is bool(hooks)
