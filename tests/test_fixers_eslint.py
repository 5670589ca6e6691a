"""The eslint fixer: matching (direct and through package scripts), (before, after) tables with
the real eslint in the sandbox, the no-op table, the repository's own eslint, behaviour flags."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bot.diagnosis.logs import distill
from fixers.base import NoFiles, WorktreeFiles
from fixers.eslint import ESLINT, eslint_args, fixable_counts
from tests.fixer_support import apply_fixer, make_log, make_repo, read_files

CONFIG = """export default [
  {
    rules: {
      "no-var": "error",
      "prefer-const": "error",
      "object-shorthand": "error",
      "quotes": ["error", "double"],
      "no-implicit-coercion": "error",
    },
  },
];
"""
PACKAGE = json.dumps({"name": "demo", "type": "module", "scripts": {"lint": "eslint ."}})
EXCERPT = (
    "/w/app.js\n  1:1  error  Unexpected var, use let or const instead  no-var\n\n"
    "✖ 1 problem (1 error, 0 warnings)\n"
    "  1 error and 0 warnings potentially fixable with the `--fix` option.\n"
)
LOG = make_log("npx eslint .", EXCERPT)

FIXES = [
    ("var a = 1;\na += 1;\n", "let a = 1;\na += 1;\n"),
    ("var a = 1;\nconsole.log(a);\n", "const a = 1;\nconsole.log(a);\n"),  # two passes
    ("let b = 2;\nconsole.log(b);\n", "const b = 2;\nconsole.log(b);\n"),
    ("const a = 1;\nconsole.log({ a: a });\n", "const a = 1;\nconsole.log({ a });\n"),
    ("console.log('q');\n", 'console.log("q");\n'),
]
CLEAN = ["const a = 1;\nconsole.log({ a });\n", "export const x = [1, 2];\n"]


def project(root: Path, app: str, **more: str) -> Path:
    return make_repo(
        root,
        {
            "eslint.config.js": CONFIG,
            "package.json": PACKAGE,
            ".gitignore": "node_modules/\n",
            "app.js": app,
            **more,
        },
    )


@pytest.mark.parametrize(("before", "after"), FIXES)
async def test_fixes(tmp_path: Path, before: str, after: str) -> None:
    repo = project(tmp_path / "repo", before)
    result = await apply_fixer(ESLINT, repo, LOG)
    assert read_files(repo, ["app.js"]) == {"app.js": after}
    assert result.changed
    assert result.self_check_passed
    assert not result.changes_behaviour, result.behaviour_note
    assert result.tool_version is not None
    assert result.tool_version.startswith("eslint 10.16.0 (bundled")


@pytest.mark.parametrize("clean", CLEAN)
async def test_clean_input_is_a_noop(tmp_path: Path, clean: str) -> None:
    repo = project(tmp_path / "repo", clean)
    result = await apply_fixer(ESLINT, repo, LOG)
    assert not result.changed
    assert result.self_check_passed


async def test_a_rule_that_may_change_behaviour_marks_the_fix(tmp_path: Path) -> None:
    repo = project(tmp_path / "repo", "const a = 1;\nconsole.log(!!a);\n")
    result = await apply_fixer(ESLINT, repo, LOG)
    assert read_files(repo, ["app.js"])["app.js"] == "const a = 1;\nconsole.log(Boolean(a));\n"
    assert result.changes_behaviour
    assert "no-implicit-coercion" in result.behaviour_note


async def test_the_repositorys_own_eslint_runs(tmp_path: Path) -> None:
    """Pattern: the job environment installed the repository's eslint in node_modules; that
    one runs, not the bundled one (here installed by npm, as ``npm ci`` would)."""
    package = json.dumps(
        {"name": "demo", "type": "module", "devDependencies": {"eslint": "9.39.1"}}
    )
    repo = project(tmp_path / "repo", "var a = 1;\nconsole.log(a);\n", **{"package.json": package})
    subprocess.run(
        ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=repo,
        check=True,
        capture_output=True,
    )
    result = await apply_fixer(ESLINT, repo, LOG)
    assert result.tool_version == "eslint 9.39.1 (the repository's node_modules)"
    assert read_files(repo, ["app.js"])["app.js"] == "const a = 1;\nconsole.log(a);\n"
    assert result.self_check_passed


async def test_pinned_version_from_package_json(tmp_path: Path) -> None:
    """No node_modules: the exact devDependencies pin is installed into the tool cache."""
    package = json.dumps(
        {"name": "demo", "type": "module", "devDependencies": {"eslint": "9.39.1"}}
    )
    repo = project(tmp_path / "repo", "var a = 1;\nconsole.log(a);\n", **{"package.json": package})
    result = await apply_fixer(ESLINT, repo, LOG, tool_cache=tmp_path / "cache")
    assert result.tool_version is not None
    assert result.tool_version.startswith("eslint 9.39.1 (pinned in package.json")
    assert read_files(repo, ["app.js"])["app.js"] == "const a = 1;\nconsole.log(a);\n"


async def test_only_the_files_in_scope_change(tmp_path: Path) -> None:
    repo = project(tmp_path / "repo", "var a = 1;\nconsole.log(a);\n", **{"old.js": "var b = 1;\n"})
    result = await apply_fixer(ESLINT, repo, LOG, scope=frozenset({"app.js"}))
    assert read_files(repo, ["app.js", "old.js"]) == {
        "app.js": "const a = 1;\nconsole.log(a);\n",
        "old.js": "var b = 1;\n",
    }
    assert result.out_of_scope == ("old.js",)
    assert not result.self_check_passed  # old.js still fails: the repair widens the scope


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("npx eslint .", ["."]),
        ("eslint src test --max-warnings 0", ["src", "test", "--max-warnings", "0"]),
        ("npx eslint -f stylish --ext .js src", ["--ext", ".js", "src"]),
        ("npx eslint --format=json --cache", ["--cache", "."]),
    ],
)
def test_arguments_of_the_check_are_reused(command: str, expected: list[str]) -> None:
    assert eslint_args(make_log(command, EXCERPT), NoFiles()) == expected


@pytest.mark.parametrize(
    ("command", "package_json", "excerpt", "expected"),
    [
        ("npx eslint .", None, EXCERPT, True),
        ("npm run lint", PACKAGE, EXCERPT, True),
        ("pnpm lint", PACKAGE, EXCERPT, True),
        ("yarn lint", '{"scripts": {"lint": "prettier --check ."}}', EXCERPT, False),
        (
            "npx eslint .",
            None,
            "✖ 3 problems (3 errors, 0 warnings)\n"
            "  1 error and 0 warnings potentially fixable with the `--fix` option.",
            False,
        ),
        ("npx eslint .", None, "✖ 2 problems (2 errors, 0 warnings)\n", False),
    ],
)
def test_matches(
    tmp_path: Path, command: str, package_json: str | None, excerpt: str, expected: bool
) -> None:
    if package_json is not None:
        (tmp_path / "package.json").write_text(package_json)
    assert ESLINT.matches(make_log(command, excerpt), WorktreeFiles(tmp_path)) is expected


@pytest.mark.parametrize(
    "header",
    [
        "> demo@1.0.0 lint\n> eslint .\n\n",  # npm
        "> demo@1.0.0 lint /home/runner/work/demo/demo\n> eslint .\n\n",  # pnpm
    ],
)
def test_matches_a_script_from_the_log_alone(header: str) -> None:
    log = distill(
        "##[group]Run npm run lint\nnpm run lint\nshell: /usr/bin/bash -e {0}\n##[endgroup]\n"
        + header
        + EXCERPT
        + "##[error]Process completed with exit code 1.\n"
    )
    assert ESLINT.matches(log, NoFiles())


def test_fixable_counts() -> None:
    assert fixable_counts(EXCERPT) == (1, 0, 1, 0)
    assert fixable_counts("no summary") is None
