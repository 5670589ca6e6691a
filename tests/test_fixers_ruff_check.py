"""The ruff-check fixer: matching, (before, after) tables through the real sandbox, the scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.diagnosis.logs import distill
from fixers.base import NoFiles, WorktreeFiles
from fixers.ruff_check import RUFF_CHECK
from fixers.tools import ToolChoice, bundled_executable, prepare_tool, resolve_tool
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
    write_files,
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
    repo, _ = await fix_scenario(RUFF_CHECK, name, tmp_path)
    check = await run_in_sandbox(case_expect(name)["must_pass_after"], repo)
    assert check.ok, check.output


@pytest.mark.parametrize("case", all_cases())
def test_matches_only_its_scenarios(case: str) -> None:
    assert_matches_only_its_scenarios(RUFF_CHECK, case)


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


# --- which ruff runs (fixers/tools.py) --------------------------------------------------------------

PINS = [
    (
        {"pyproject.toml": '[dependency-groups]\nlint = ["ruff==0.6.9"]\n'},
        "0.6.9",
        "pyproject.toml",
    ),
    (
        {
            "pyproject.toml": "[project.optional-dependencies]\ndev = [\"ruff == 0.5.0 ; python_version >= '3.8'\"]\n"
        },
        "0.5.0",
        "pyproject.toml",
    ),
    (
        {"pyproject.toml": '[tool.uv]\ndev-dependencies = ["ruff==0.4.1"]\n'},
        "0.4.1",
        "pyproject.toml",
    ),
    (
        {
            ".pre-commit-config.yaml": "repos:\n- repo: https://github.com/astral-sh/ruff-pre-commit\n  rev: v0.6.9\n  hooks: [{id: ruff}]\n"
        },
        "0.6.9",
        ".pre-commit-config.yaml",
    ),
    (
        {
            "requirements-dev.txt": "-r requirements/lint.txt\n",
            "requirements/lint.txt": "ruff==0.3.0\n",
        },
        "0.3.0",
        "requirements/lint.txt",
    ),
    ({"requirements.txt": "ruff>=0.5\n"}, None, None),
    ({"pyproject.toml": "not toml ["}, None, None),
]


@pytest.mark.parametrize(("files", "version", "source"), PINS)
def test_pins_are_found(
    tmp_path: Path, files: dict[str, str], version: str | None, source: str | None
) -> None:
    write_files(tmp_path, files)
    choice = resolve_tool("ruff", WorktreeFiles(tmp_path), bundled="0.17.6")
    if version is None:
        assert choice == ToolChoice("ruff", "0.17.6", "bundled", (str(bundled_executable("ruff")),))
    else:
        assert choice == ToolChoice("ruff", version, f"pinned in {source}", (), needs_install=True)


def test_subdir_pin_wins_over_the_root(tmp_path: Path) -> None:
    write_files(
        tmp_path, {"requirements.txt": "ruff==0.1.0\n", "svc/requirements.txt": "ruff==0.2.0\n"}
    )
    assert resolve_tool("ruff", WorktreeFiles(tmp_path), "svc", bundled="1").version == "0.2.0"
    assert resolve_tool("ruff", WorktreeFiles(tmp_path), "other", bundled="1").version == "0.1.0"


@pytest.mark.parametrize(
    "hostile", ["0.6.9;touch x", "0.6.9 --index-url=http://evil", "../../x", "1.0.0\nruff"]
)
def test_hostile_versions_are_not_used(tmp_path: Path, hostile: str) -> None:
    write_files(
        tmp_path,
        {
            ".pre-commit-config.yaml": f"repos:\n- repo: https://github.com/astral-sh/ruff-pre-commit\n  rev: {hostile!r}\n"
        },
    )
    choice = resolve_tool("ruff", WorktreeFiles(tmp_path), bundled="0.17.6")
    assert choice.version == "0.17.6"
    assert choice.source == "bundled; ignored unusable pin in .pre-commit-config.yaml"
    assert choice.argv_prefix == (str(bundled_executable("ruff")),)


async def test_unavailable_pinned_version_falls_back_to_bundled(tmp_path: Path) -> None:
    choice = ToolChoice("ruff", "0.0.999", "pinned in pyproject.toml", (), needs_install=True)
    prepared = await prepare_tool(choice, cache_dir=tmp_path / "cache")
    assert prepared.version == "0.17.6"
    assert prepared.source.startswith(
        "bundled; 0.0.999 pinned in pyproject.toml could not be installed"
    )
    assert prepared.argv_prefix == (str(bundled_executable("ruff")),)
    assert not (tmp_path / "cache" / "python" / "ruff-0.0.999").exists()


async def test_no_tool_cache_falls_back_to_bundled() -> None:
    choice = ToolChoice("ruff", "0.6.9", "pinned in pyproject.toml", (), needs_install=True)
    prepared = await prepare_tool(choice, cache_dir=None)
    assert (
        prepared.source
        == "bundled; 0.6.9 pinned in pyproject.toml cannot be installed: no tool cache is configured"
    )


async def test_differing_pin_runs_the_pinned_version(tmp_path: Path) -> None:
    # ruff 0.6.9 really is installed (from the package index) into the cache, outside the sandbox,
    # and runs inside it from the read-only cache mount.
    pyproject = CONFIG + '[dependency-groups]\ndev = ["ruff==0.6.9"]\n'
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": pyproject, "a.py": FIXES[0][0]})
    result = await apply_fixer(RUFF_CHECK, repo, LOG, tool_cache=tmp_path / "cache")
    assert result.tool_version == "ruff 0.6.9 (pinned in pyproject.toml)"
    assert read_files(repo, ["a.py"]) == {"a.py": FIXES[0][1]}
    assert result.self_check_passed
    assert (tmp_path / "cache" / "python" / "ruff-0.6.9" / "bin" / "ruff").exists()


def test_matches_the_command_seen_only_in_the_echoed_script() -> None:
    """Pattern: a ``gh run view --log-failed`` excerpt that starts inside the step's script, so
    the ``Run …`` header is gone and the command shows only in the echoed script lines."""
    stamp = "2026-07-23T10:06:40.3157293Z "
    lines = [
        "fi",
        'uvx ruff check "${FILES[@]}"',
        'uvx ruff format --check "${FILES[@]}"',
        "shell: /usr/bin/bash -e {0}",
        "##[endgroup]",
        "F401 [*] `app.auth.decode` imported but unused",
        "Found 1 error.",
        "[*] 1 fixable with the `--fix` option.",
        "##[error]Process completed with exit code 1.",
    ]
    log = distill("\n".join(f"lint\tRuff lint\t{stamp}{line}" for line in lines))
    assert log.command is not None
    assert "uvx ruff check" in log.command
    assert RUFF_CHECK.matches(log, NoFiles())
