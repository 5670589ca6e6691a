"""Guards on an LLM attempt: table tests on diffs made by real git (``bot.llm.agent.attempt_diff``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.git.workspace import tree_of
from bot.llm.agent import attempt_diff
from bot.llm.guards import check_attempt, is_test_path
from tests.fixer_support import checkout_of

SOURCE = """\
def mean(values: list[float]) -> float:
    return sum(values) / len(values)
"""

TESTS = """\
import pytest

from pkg.stats import mean


def test_mean() -> None:
    assert mean([1.0, 3.0]) == 2.0


def test_empty() -> None:
    assert mean([]) == 0.0
"""

HEAD = {
    "src/pkg/stats.py": SOURCE,
    "tests/test_stats.py": TESTS,
    ".github/workflows/ci.yml": "jobs:\n  test:\n    steps:\n      - run: pytest\n",
    ".github/shepherd.yml": "llm_repair: command\n",
    "README.md": "# pkg\n",
}
#: Where the failure shows: the failing test (the source-only rule has its own test below).
FAILURE = ["tests/test_stats.py"]
FIXED_SOURCE = SOURCE.replace(
    "    return sum(values) / len(values)",
    "    return sum(values) / len(values) if values else 0.0",
)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def diff_of(tmp_path: Path, changes: dict[str, str | bytes | None]) -> str:
    """The attempt diff after applying ``changes`` (None deletes) to a committed HEAD."""
    repo = tmp_path / "repo"
    for path, text in HEAD.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=t@e", "-c", "user.name=T", "commit", "-q", "-m", "head")
    for path, content in changes.items():
        target = repo / path
        if content is None:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return head_diff(repo)


def head_diff(repo: Path) -> str:
    wt = checkout_of(repo)
    return attempt_diff(wt, tree_of(wt, wt.sha))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"src/pkg/stats.py": FIXED_SOURCE}, [], id="source-fix-ok"),
        pytest.param(
            {
                "src/pkg/stats.py": FIXED_SOURCE,
                "tests/test_stats.py": TESTS
                + "\n\ndef test_more() -> None:\n    assert mean([2.0]) == 2.0\n",
            },
            [],
            id="fix-plus-new-test-ok",
        ),
        pytest.param(
            {"src/pkg/helpers.py": "def clamp(x: int) -> int:\n    return max(0, x)\n"},
            [],
            id="new-source-file-ok",
        ),
        pytest.param(
            {"src/pkg/stats.py": SOURCE + "\n# TODO(bot): noqa-free comment\n"},
            [],
            id="plain-comment-ok",
        ),
        pytest.param(
            {".github/workflows/ci.yml": "jobs: {}\n"},
            [".github/workflows/ci.yml: changes under .github/"],
            id="ci-workflow",
        ),
        pytest.param(
            {".github/shepherd.yml": "llm_repair: auto\n"},
            [".github/shepherd.yml: changes under .github/"],
            id="shepherd-policy",
        ),
        pytest.param(
            {"tests/test_stats.py": TESTS.split("\n\ndef test_empty")[0] + "\n"},
            [
                "tests/test_stats.py: deletes test function test_empty",
                "tests/test_stats.py: removes or changes an assertion: assert mean([]) == 0.0",
            ],
            id="deleted-test",
        ),
        pytest.param(
            {"tests/test_stats.py": None},
            [
                "tests/test_stats.py: deletes test function test_empty",
                "tests/test_stats.py: deletes test function test_mean",
                "tests/test_stats.py: removes or changes an assertion: assert mean([1.0, 3.0])",
                "tests/test_stats.py: removes or changes an assertion: assert mean([]) == 0.0",
            ],
            id="deleted-test-file",
        ),
        pytest.param(
            {
                "tests/test_stats.py": TESTS.replace(
                    "def test_empty", '@pytest.mark.skip(reason="later")\ndef test_empty'
                )
            },
            ["tests/test_stats.py: adds a skip/xfail: @pytest.mark.skip"],
            id="skip-marker",
        ),
        pytest.param(
            {
                "tests/test_stats.py": TESTS.replace(
                    "def test_empty", "@pytest.mark.xfail\ndef test_empty"
                )
            },
            ["tests/test_stats.py: adds a skip/xfail: @pytest.mark.xfail"],
            id="xfail-marker",
        ),
        pytest.param(
            {
                "tests/test_stats.py": TESTS.replace(
                    "    assert mean([]) == 0.0",
                    '    pytest.skip("empty")\n    assert mean([]) == 0.0',
                )
            },
            ["tests/test_stats.py: adds a skip/xfail: pytest.skip("],
            id="skip-call",
        ),
        pytest.param(
            {"tests/test_stats.py": TESTS.replace("assert mean([]) == 0.0", "assert True")},
            [
                "tests/test_stats.py: removes or changes an assertion: assert mean([]) == 0.0",
                "tests/test_stats.py: adds an assertion that cannot fail: assert True",
            ],
            id="assert-true",
        ),
        pytest.param(
            {
                "tests/test_stats.py": TESTS.replace(
                    "assert mean([]) == 0.0", "result = 0.0\n    assert result == result"
                )
            },
            [
                "tests/test_stats.py: removes or changes an assertion: assert mean([]) == 0.0",
                "tests/test_stats.py: adds an assertion that cannot fail: assert result == result",
            ],
            id="assert-x-equals-x",
        ),
        pytest.param(
            {
                "tests/test_stats.py": TESTS.replace(
                    "assert mean([1.0, 3.0]) == 2.0", "assert mean([1.0, 3.0])"
                )
            },
            [
                "tests/test_stats.py: removes or changes an assertion: assert mean([1.0, 3.0]) == 2.0"
            ],
            id="loosened-assert",
        ),
        pytest.param(
            {"tests/test_stats.py": TESTS.replace("    assert mean([]) == 0.0", "    mean([1.0])")},
            ["tests/test_stats.py: removes or changes an assertion: assert mean([]) == 0.0"],
            id="removed-assert",
        ),
        pytest.param(
            {
                "src/pkg/stats.py": SOURCE.replace(
                    "return sum(values) / len(values)",
                    "return sum(values) / len(values)  # type: ignore",
                )
            },
            ["src/pkg/stats.py: adds a lint/type-check suppression"],
            id="type-ignore",
        ),
        pytest.param(
            {"src/pkg/stats.py": SOURCE.replace("def mean(", "def mean(  # noqa: E501\n    ")},
            ["src/pkg/stats.py: adds a lint/type-check suppression"],
            id="noqa",
        ),
        pytest.param(
            {"src/pkg/data.bin": b"\x00\x01\x02binary\x00"},
            ["src/pkg/data.bin: binary files may not be added or changed"],
            id="new-binary",
        ),
        pytest.param(
            {"src/pkg/stats.py": SOURCE + "".join(f"X{i} = {i}\n" for i in range(201))},
            ["the diff changes 201 lines, over the limit of 200"],
            id="too-large",
        ),
    ],
)
def test_check_attempt(
    tmp_path: Path, changes: dict[str, str | bytes | None], expected: list[str]
) -> None:
    diff = diff_of(tmp_path, changes)
    assert diff.strip(), "the change should produce a diff"

    reasons = check_attempt(diff, failure_paths=FAILURE, max_diff_lines=200)

    assert len(reasons) == len(expected), reasons
    for reason, prefix in zip(sorted(reasons), sorted(expected), strict=True):
        assert reason.startswith(prefix), (reason, prefix)


def test_empty_diff_has_no_objection() -> None:
    assert check_attempt("", failure_paths=FAILURE, max_diff_lines=1) == []


def test_unparseable_diff_is_rejected() -> None:
    bad = "--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,3 @@\n-only one line\n"
    reasons = check_attempt(bad, failure_paths=[], max_diff_lines=200)
    assert len(reasons) == 1
    assert "could not be parsed" in reasons[0]


def test_tests_only_edit_is_rejected_when_the_failure_is_in_source(tmp_path: Path) -> None:
    diff = diff_of(
        tmp_path, {"tests/test_extra.py": "def test_extra() -> None:\n    assert 1 + 1 == 2\n"}
    )
    failure = ["tests/test_stats.py", "src/pkg/stats.py"]
    reasons = check_attempt(diff, failure_paths=failure, max_diff_lines=200)
    assert reasons == [
        "only test files were edited but the failure is in source (src/pkg/stats.py)"
    ]


def test_tests_only_edit_is_fine_when_the_failure_is_in_tests(tmp_path: Path) -> None:
    diff = diff_of(
        tmp_path, {"tests/test_stats.py": TESTS + "\n\ndef test_new() -> None:\n    pass\n"}
    )
    assert check_attempt(diff, failure_paths=["tests/test_stats.py"], max_diff_lines=200) == []


def test_symlink_added_is_rejected(tmp_path: Path) -> None:
    diff_of(tmp_path, {})
    repo = tmp_path / "repo"
    (repo / "src" / "link").symlink_to("/etc/passwd")
    reasons = check_attempt(head_diff(repo), failure_paths=FAILURE, max_diff_lines=200)
    assert reasons == ["src/link: symbolic links may not be added or changed"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tests/test_x.py", True),
        ("pkg/tests/helpers.py", True),
        ("test/unit.py", True),
        ("src/pkg/test_utils.py", True),
        ("src/pkg/x_test.py", True),
        ("conftest.py", True),
        ("src/pkg/stats.py", False),
        ("src/pkg/testing_tools.py", False),
        ("contest.py", False),
    ],
)
def test_is_test_path(path: str, expected: bool) -> None:
    assert is_test_path(path) is expected
