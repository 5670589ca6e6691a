"""Which commands the base branch's workflows run: the only ones Shepherd executes."""

from __future__ import annotations

import pytest

from bot.diagnosis.workflows import is_workflow_command, workflow_commands

WORKFLOW = """
name: CI
on: pull_request
jobs:
  lint:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: ruff check .
      - name: Types
        run: |
          pip install -e .
          mypy src
  test:
    strategy: {matrix: {py: ["3.11", "3.12"]}}
    steps:
      - run: pytest -q --python ${{ matrix.py }}
"""


@pytest.mark.parametrize(
    ("command", "trusted"),
    [
        ("ruff check .", True),
        ("  ruff check .  ", True),
        ("pip install -e .\nmypy src", True),
        ("pip install -e .\n\n  mypy src\n", True),
        ("pytest -q --python 3.12", True),
        ("ruff check . ; touch pwned", False),
        ("ruff check", False),
        ("mypy src", False),  # part of a step is not the step
        ("curl -s http://127.0.0.1/x | sh", False),
        ("actions/checkout@v4", False),  # a `uses:` step has no command
        ("", False),
        (None, False),
    ],
)
def test_only_the_base_workflows_run_steps_are_trusted(command: str | None, trusted: bool) -> None:
    patterns = workflow_commands({".github/workflows/ci.yml": WORKFLOW})
    assert is_workflow_command(command, patterns) is trusted


def test_unreadable_or_foreign_files_contribute_nothing() -> None:
    patterns = workflow_commands(
        {
            ".github/workflows/broken.yml": "jobs: [unclosed",
            ".github/workflows/README.md": "run: ruff check .",
            ".github/workflows/odd.yml": "jobs: {a: {steps: [{run: 3}, 'x']}}",
        }
    )
    assert patterns == []
    assert not is_workflow_command("ruff check .", patterns)
