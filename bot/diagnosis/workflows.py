"""Which commands the base branch's GitHub Actions workflows really run (pure).

A job log is written by the PR's own code: a test can print ``##[group]Run curl … | sh`` and
make that look like the failing step. Shepherd therefore executes a failing command (to verify a
fix, or as the LLM's ``run_check``) only when the base branch's workflow files contain it as a
``run:`` step — the maintainers' text, which the PR cannot change. Anything else is not run: the
fixer's own check stands in, and the summary says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import yaml

#: ``${{ matrix.python }}`` and friends are substituted before the runner logs the command.
_EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.S)
_MAX_RUNS = 2000


def _normalise(script: str) -> str:
    return "\n".join(line.strip() for line in script.strip().splitlines() if line.strip())


def _run_steps(document: Any) -> Iterator[str]:
    jobs = document.get("jobs") if isinstance(document, dict) else None
    if not isinstance(jobs, dict):
        return
    for job in jobs.values():
        steps = job.get("steps") if isinstance(job, dict) else None
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, dict) and isinstance(step.get("run"), str):
                yield step["run"]


def workflow_commands(files: Mapping[str, str]) -> list[re.Pattern[str]]:
    """One pattern per ``run:`` script in the workflow files (expressions match anything)."""
    patterns: list[re.Pattern[str]] = []
    for path, text in files.items():
        if not path.endswith((".yml", ".yaml")):
            continue
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        for script in _run_steps(document):
            pieces = _EXPRESSION.split(_normalise(script))
            patterns.append(re.compile("^" + ".*?".join(map(re.escape, pieces)) + "$", re.S))
            if len(patterns) >= _MAX_RUNS:
                return patterns
    return patterns


def is_workflow_command(command: str | None, patterns: Iterable[re.Pattern[str]]) -> bool:
    if not command:
        return False
    wanted = _normalise(command)
    return any(p.match(wanted) for p in patterns)
