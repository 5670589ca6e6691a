"""The gofmt fixer: matching (a multi-line script, gofmt -d, golangci-lint), (before, after)
tables with the real gofmt/goimports in the sandbox, the no-op table, the Go version reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.diagnosis.logs import distill
from fixers.base import NoFiles
from fixers.gofmt import GOFMT, invocation
from tests.fixer_support import apply_fixer, git, make_log, make_repo, read_files

GO_MOD = "module example.com/demo\n\ngo 1.19\n"
SCRIPT = (
    'unformatted="$(gofmt -l .)"\nif [ -n "$unformatted" ]; then\n'
    '  echo "Not gofmt-ed:"; echo "$unformatted"; gofmt -d .; exit 1\nfi'
)
LOG = make_log(SCRIPT, "Not gofmt-ed:\nmain.go\ndiff main.go.orig main.go\n--- main.go.orig\n")
IMPORTS_LOG = make_log('test -z "$(goimports -l .)"', "main.go\n")

FIXES = [
    (
        "package main\n\nfunc main()  {\nprintln(1)\n}\n",
        "package main\n\nfunc main() {\n\tprintln(1)\n}\n",
    ),
    (
        'package main\n\nimport (\n\t"os"\n\t"fmt"\n)\n\nvar _ = fmt.Sprint(os.Args)\n',
        'package main\n\nimport (\n\t"fmt"\n\t"os"\n)\n\nvar _ = fmt.Sprint(os.Args)\n',
    ),
]
CLEAN = ["package main\n\nfunc main() {\n\tprintln(1)\n}\n"]


@pytest.mark.parametrize(("before", "after"), FIXES)
async def test_fixes(tmp_path: Path, before: str, after: str) -> None:
    repo = make_repo(tmp_path / "repo", {"go.mod": GO_MOD, "main.go": before})
    result = await apply_fixer(GOFMT, repo, LOG)
    assert read_files(repo, ["main.go"]) == {"main.go": after}
    assert result.changed
    assert result.self_check_passed
    assert result.tool_version is not None
    assert result.tool_version.startswith("gofmt go1.19")
    assert "(bundled)" in result.tool_version


@pytest.mark.parametrize("clean", CLEAN)
async def test_clean_input_is_a_noop(tmp_path: Path, clean: str) -> None:
    repo = make_repo(tmp_path / "repo", {"go.mod": GO_MOD, "main.go": clean})
    result = await apply_fixer(GOFMT, repo, LOG)
    assert not result.changed
    assert result.self_check_passed
    assert git(repo, "status", "--porcelain") == ""


async def test_goimports_where_the_check_uses_it(tmp_path: Path) -> None:
    before = 'package main\n\nimport "os"\n\nfunc main() { println(len(os.Args), strings.ToUpper("a")) }\n'
    repo = make_repo(tmp_path / "repo", {"go.mod": GO_MOD, "main.go": before})
    result = await apply_fixer(GOFMT, repo, IMPORTS_LOG)
    text = read_files(repo, ["main.go"])["main.go"]
    assert '"strings"' in text  # goimports added the missing import
    assert result.tool_version is not None
    assert result.tool_version.startswith("goimports go1.19")
    assert result.self_check_passed


async def test_the_go_version_the_repository_asks_for_is_reported(tmp_path: Path) -> None:
    """Pin: go.mod's toolchain line; without that toolchain here, the summary says so."""
    go_mod = "module example.com/demo\n\ngo 1.22\n\ntoolchain go1.22.4\n"
    repo = make_repo(tmp_path / "repo", {"go.mod": go_mod, "main.go": FIXES[0][0]})
    result = await apply_fixer(GOFMT, repo, LOG)
    assert result.tool_version is not None
    assert "go.mod asks for go 1.22.4" in result.tool_version


async def test_only_the_targets_of_the_check_are_rewritten(tmp_path: Path) -> None:
    ugly = FIXES[0][0]
    repo = make_repo(tmp_path / "repo", {"go.mod": GO_MOD, "cmd/main.go": ugly, "old/x.go": ugly})
    log = make_log("gofmt -s -l cmd", "cmd/main.go\n")
    await apply_fixer(GOFMT, repo, log)
    assert read_files(repo, ["cmd/main.go", "old/x.go"]) == {
        "cmd/main.go": FIXES[0][1],
        "old/x.go": ugly,
    }


@pytest.mark.parametrize(
    ("command", "excerpt", "expected"),
    [
        (SCRIPT, "", ("gofmt", [], ["."])),
        ("gofmt -s -l cmd internal", "", ("gofmt", ["-s"], ["cmd", "internal"])),
        ("goimports -local example.com -l .", "", ("goimports", ["-local", "example.com"], ["."])),
        ("gofmt -l /etc ../x $DIR", "", ("gofmt", [], ["."])),
        (
            "golangci-lint run",
            "main.go:3: File is not `gofmt`-ed with `-s` (gofmt)",
            ("gofmt", ["-s"], ["."]),
        ),
    ],
)
def test_invocation(command: str, excerpt: str, expected: tuple[str, list[str], list[str]]) -> None:
    assert invocation(command, excerpt) == expected


@pytest.mark.parametrize(
    ("command", "excerpt", "expected"),
    [
        (SCRIPT, "Not gofmt-ed:\nmain.go\n", True),
        ("gofmt -d .", "diff main.go.orig main.go\n--- main.go.orig\n+++ main.go\n", True),
        ("golangci-lint run", "main.go:3: File is not `goimports`-ed (goimports)", True),
        ("go vet ./...", "main.go:3:2: unreachable code", False),
        ("gofmt -l .", "", False),
    ],
)
def test_matches(command: str, excerpt: str, expected: bool) -> None:
    assert GOFMT.matches(make_log(command, excerpt), NoFiles()) is expected


def test_matches_a_multi_line_run_script_from_the_log_alone() -> None:
    lines = SCRIPT.splitlines()
    log = distill(
        f"##[group]Run {lines[0]}\n"
        + "\n".join(lines)
        + "\nshell: /usr/bin/bash -e {0}\n##[endgroup]\nNot gofmt-ed:\nmain.go\n"
        "##[error]Process completed with exit code 1.\n"
    )
    assert log.command is not None
    assert "gofmt -l" in log.command
    assert GOFMT.matches(log, NoFiles())
