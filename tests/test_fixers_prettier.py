"""The prettier fixer: matching, (before, after) tables through the real sandbox, the scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.diagnosis.logs import distill
from fixers.base import NoFiles, WorktreeFiles
from fixers.prettier import PRETTIER, flagged_files
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
    "npx prettier --check .",
    "Checking formatting...\n[warn] a.js\n[warn] Code style issues found in the above file. "
    "Run Prettier with --write to fix.",
)

FIXES = [
    ("const a = {b:1}\n", "const a = { b: 1 };\n"),
    ("function f(x){return x}\n", "function f(x) {\n  return x;\n}\n"),
    ("let s = 'q'", 'let s = "q";\n'),
]
CLEAN = ["const a = { b: 1 };\n"]


@pytest.mark.parametrize(("before", "after"), FIXES)
async def test_fixes(tmp_path: Path, before: str, after: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a.js": before})
    result = await apply_fixer(PRETTIER, repo, LOG)
    assert read_files(repo, ["a.js"]) == {"a.js": after}
    assert result.changed
    assert result.self_check_passed
    assert result.tool_version == "prettier 3.10.1 (bundled)"


@pytest.mark.parametrize("clean", CLEAN)
async def test_clean_input_is_a_noop(tmp_path: Path, clean: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a.js": clean})
    result = await apply_fixer(PRETTIER, repo, LOG)
    assert not result.changed
    assert result.self_check_passed


async def test_only_flagged_files_are_written(tmp_path: Path) -> None:
    ugly = "const a = {b:1}\n"
    repo = make_repo(tmp_path / "repo", {"a.js": ugly, "b.js": ugly})
    await apply_fixer(PRETTIER, repo, LOG)
    assert read_files(repo, ["a.js", "b.js"]) == {"a.js": "const a = { b: 1 };\n", "b.js": ugly}


def test_flagged_files_from_the_excerpt() -> None:
    excerpt = "[warn] src/app.js\n[warn] src/styles.css\n[warn] Code style issues found in 2 files."
    assert flagged_files(excerpt) == ["src/app.js", "src/styles.css"]


async def test_hostile_flagged_paths_are_ignored(tmp_path: Path) -> None:
    outside = tmp_path / "outside.js"
    outside.write_text("const a = {b:1}\n")
    log = make_log(
        "prettier --check .",
        f"[warn] ../outside.js\n[warn] {outside}\n[warn] Code style issues found in 2 files.",
    )
    repo = make_repo(tmp_path / "repo", {"a.js": "const a = {b:1}\n"})
    result = await apply_fixer(PRETTIER, repo, log)
    assert outside.read_text() == "const a = {b:1}\n"
    # With no usable flagged file the whole project is formatted.
    assert result.changed


async def test_scenario(tmp_path: Path) -> None:
    name = "af-prettier"
    repo, result = await fix_scenario(PRETTIER, name, tmp_path)
    assert result.tool_version == "prettier 3.10.1 (pinned in package-lock.json)"
    # must_pass_after uses npx: the repo's own prettier comes from `npm ci` (network, no scripts).
    setup = await run_in_sandbox("npm ci --ignore-scripts --no-audit --no-fund", repo, network=True)
    assert setup.ok, setup.output
    check = await run_in_sandbox(case_expect(name)["must_pass_after"], repo)
    assert check.ok, check.output


@pytest.mark.parametrize("case", all_cases())
def test_matches_only_its_scenarios(case: str) -> None:
    assert_matches_only_its_scenarios(PRETTIER, case)


@pytest.mark.parametrize(
    ("command", "package_json", "expected"),
    [
        ("npm run format:check", '{"scripts": {"format:check": "prettier --check ."}}', True),
        ("yarn lint", '{"scripts": {"lint": "prettier -c src"}}', True),
        ("npm run lint", '{"scripts": {"lint": "eslint ."}}', False),
        ("npm run format:check", None, False),
        ("npx prettier --check .", None, True),
    ],
)
def test_matches_through_package_scripts(
    tmp_path: Path, command: str, package_json: str | None, expected: bool
) -> None:
    if package_json is not None:
        (tmp_path / "package.json").write_text(package_json)
    log = make_log(command, "[warn] a.js\n[warn] Code style issues found in 1 file.")
    assert PRETTIER.matches(log, WorktreeFiles(tmp_path)) is expected


@pytest.mark.parametrize(
    "output",
    [
        # npm 6+ and pnpm echo the script's command under its header
        '> app@1.0.0 lint:css /home/travis/build/o/app\n> prettier "**/*.css" --check\n',
        # npm 6 repeats it in its error
        "npm ERR! app@1.0.0 format: `prettier --list-different src`\n",
        # yarn 1
        "yarn run v1.22.19\n$ prettier --check .\n",
    ],
)
def test_matches_a_package_script_seen_in_the_output(output: str) -> None:
    """Pattern: ``npm run lint`` (or pnpm, yarn) runs prettier; the log shows which script ran."""
    log = distill(
        "##[group]Run npm run lint\nnpm run lint\nshell: /usr/bin/bash -e {0}\n##[endgroup]\n"
        + output
        + "src/a.css\nCode style issues found in the above file(s). Forgot to run Prettier?\n"
        "##[error]Process completed with exit code 1.\n"
    )
    assert any("prettier" in s for s in log.scripts)
    assert PRETTIER.matches(log, NoFiles())
