"""A verified patch as one-click review suggestions."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bot.reporting.suggestions import suggestions


def diff_of(tmp_path: Path, before: dict[str, str], after: dict[str, str | None]) -> str:
    repo = tmp_path / "r"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    for path, content in before.items():
        (repo / path).write_text(content)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=repo, check=True)
    for path, new in after.items():
        if new is None:
            (repo / path).unlink()
        else:
            (repo / path).write_text(new)
    return subprocess.run(
        ["git", "diff", "-U0"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def test_a_changed_line_becomes_a_single_line_suggestion(tmp_path: Path) -> None:
    patch = diff_of(
        tmp_path, {"a.py": "import os\nx = 1\ny=2\n"}, {"a.py": "import os\nx = 1\ny = 2\n"}
    )
    assert suggestions(patch) == [
        {"path": "a.py", "line": 3, "side": "RIGHT", "body": "```suggestion\ny = 2\n```"}
    ]


def test_a_removed_block_spans_its_lines(tmp_path: Path) -> None:
    patch = diff_of(
        tmp_path,
        {"a.py": "import os\nimport re\nimport json\nx = 1\n"},
        {"a.py": "import json\nx = 1\n"},
    )
    [comment] = suggestions(patch) or []
    assert (comment["start_line"], comment["line"]) == (1, 2)
    assert comment["body"] == "```suggestion\n\n```"  # the lines are deleted


def test_what_cannot_be_a_suggestion_is_refused(tmp_path: Path) -> None:
    assert suggestions(diff_of(tmp_path, {"a.py": "x\n"}, {"a.py": "x\n", "b.py": "new\n"})) is None
    assert suggestions("not a diff") is None
    assert suggestions("") is None


def test_backticks_in_the_code_cannot_close_the_block(tmp_path: Path) -> None:
    patch = diff_of(tmp_path, {"a.md": "a\n````\nb\n"}, {"a.md": "a\n```\nb\n"})
    [comment] = suggestions(patch) or []
    assert comment["body"].startswith("````suggestion\n```\n")
