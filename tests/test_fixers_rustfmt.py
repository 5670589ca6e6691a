"""The rustfmt fixer: matching, (before, after) tables with the real cargo fmt in the sandbox,
the no-op table, the toolchain pin reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixers.base import NoFiles
from fixers.rustfmt import RUSTFMT, invocation
from tests.fixer_support import apply_fixer, git, make_log, make_repo, read_files

CARGO = '[package]\nname = "demo"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'
LOG = make_log(
    "cargo fmt --all -- --check",
    "Diff in /home/runner/work/demo/demo/src/main.rs:1:\n-fn main()  {\n+fn main() {\n",
)

FIXES = [
    (
        'fn main()  {\nlet x=1;println!("{}",x);\n}\n',
        'fn main() {\n    let x = 1;\n    println!("{}", x);\n}\n',
    ),
    ("fn main(){}\nfn f( a:u8 )->u8{a}\n", "fn main() {}\nfn f(a: u8) -> u8 {\n    a\n}\n"),
]
CLEAN = ["fn main() {}\n"]


def crate(root: Path, main: str, **more: str) -> Path:
    return make_repo(
        root, {"Cargo.toml": CARGO, "src/main.rs": main, ".gitignore": "target/\n", **more}
    )


@pytest.mark.parametrize(("before", "after"), FIXES)
async def test_fixes(tmp_path: Path, before: str, after: str) -> None:
    repo = crate(tmp_path / "repo", before)
    result = await apply_fixer(RUSTFMT, repo, LOG)
    assert read_files(repo, ["src/main.rs"]) == {"src/main.rs": after}
    assert result.changed
    assert result.self_check_passed
    assert result.tool_version == "rustfmt 1.5.1-stable (bundled)"


@pytest.mark.parametrize("clean", CLEAN)
async def test_clean_input_is_a_noop(tmp_path: Path, clean: str) -> None:
    repo = crate(tmp_path / "repo", clean)
    result = await apply_fixer(RUSTFMT, repo, LOG)
    assert not result.changed
    assert result.self_check_passed
    assert git(repo, "status", "--porcelain") == ""


async def test_the_toolchain_pin_is_reported(tmp_path: Path) -> None:
    """Pin: rust-toolchain.toml; without that toolchain here, the summary says so."""
    toolchain = '[toolchain]\nchannel = "1.79.0"\ncomponents = ["rustfmt"]\n'
    repo = crate(tmp_path / "repo", FIXES[0][0], **{"rust-toolchain.toml": toolchain})
    result = await apply_fixer(RUSTFMT, repo, LOG)
    assert result.tool_version == ("rustfmt 1.5.1-stable (bundled; rust-toolchain asks for 1.79.0)")
    assert result.changed


async def test_rustfmt_toml_is_honoured(tmp_path: Path) -> None:
    repo = crate(
        tmp_path / "repo", "fn main() {\nlet x=1;\n}\n", **{"rustfmt.toml": "tab_spaces = 2\n"}
    )
    await apply_fixer(RUSTFMT, repo, LOG)
    assert read_files(repo, ["src/main.rs"])["src/main.rs"] == "fn main() {\n  let x = 1;\n}\n"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "cargo fmt --all -- --check",
            (["cargo", "fmt", "--all"], ["cargo", "fmt", "--all", "--", "--check"]),
        ),
        (
            "cargo fmt --check -p core",
            (["cargo", "fmt", "-p", "core"], ["cargo", "fmt", "-p", "core", "--", "--check"]),
        ),
        (
            "rustfmt --check --edition 2021 src/lib.rs",
            (
                ["rustfmt", "--edition", "2021", "src/lib.rs"],
                ["rustfmt", "--check", "--edition", "2021", "src/lib.rs"],
            ),
        ),
        (
            "cargo fmt -- --check $(ls)",
            (["cargo", "fmt", "--all"], ["cargo", "fmt", "--all", "--", "--check"]),
        ),
    ],
)
def test_invocation(command: str, expected: tuple[list[str], list[str]]) -> None:
    assert invocation(command) == expected


@pytest.mark.parametrize(
    ("command", "excerpt", "expected"),
    [
        ("cargo fmt --all -- --check", "Diff in /w/src/main.rs:1:\n", True),
        ("cargo fmt -- --check", "Diff in /w/src/lib.rs at line 4:\n", True),
        ("cargo clippy -- -D warnings", "error: this could be simplified", False),
        ("cargo test", "Diff in /w/src/lib.rs:1:\n", False),
    ],
)
def test_matches(command: str, excerpt: str, expected: bool) -> None:
    assert RUSTFMT.matches(make_log(command, excerpt), NoFiles()) is expected
