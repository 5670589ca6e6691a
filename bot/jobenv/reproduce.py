"""Did the failing command fail here as it did in CI? (pure)

Before any fix, the failing command runs in the job environment. It must fail, and fail the
same way: at least one of the lines the diagnosis rests on (its evidence, else the log's error
lines) must show up in the output here. Numbers are ignored in the comparison (durations,
counts of seconds, addresses) and so are colours and runs of blanks. A failure that did not
reproduce is never reported as verified: the job environment differs from CI in a way that
matters, and the summary shows the first CI line that did not appear here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.diagnosis.logs import clean_line

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
#: The checkout's path on GitHub's runners (and in Shepherd's sandbox, where the repository's
#: name may differ from CI's): compared as one placeholder.
_WORKSPACE = re.compile(r"/home/runner/work/[^/\s]+/[^/\s]+")
_SPACE = re.compile(r"\s+")
#: What the distiller adds to a line: a repeat count, a cut marker.
_DECORATION = re.compile(r"\s*\(×\d+\)$|…\[\+\d+ chars\]$")
_SHOWN = 200
#: Lines every failure of a kind prints (a test summary, the runner's exit line): they do not
#: show that it failed the same way, so they count only when nothing more specific exists.
_GENERIC = re.compile(
    r"^(=+ )?N (failed|passed|errors?|error|tests?)\b|Process completed with exit code|"
    r"^Found N errors?\b|^N files? would be reformatted|^# (fail|pass) N",
    re.IGNORECASE,
)


_RUNNER_LINE = re.compile(r"Process completed with exit code \d+")


@dataclass(frozen=True)
class Reproduction:
    reproduced: bool
    #: ``failed as in CI``, or what differed.
    detail: str


def _norm(line: str) -> str:
    line = _WORKSPACE.sub("WORKSPACE", _DECORATION.sub("", clean_line(line)))
    return _SPACE.sub(" ", _NUMBER.sub("N", line)).strip()


def compare(
    ci_lines: Sequence[str], *, exit_code: int, timed_out: bool, output: str
) -> Reproduction:
    """Compare a run here (its exit code and output) with the CI lines the diagnosis rests on."""
    if timed_out:
        return Reproduction(False, "timed out here before it could fail as in CI")
    if exit_code == 0:
        first = next((line for line in ci_lines if line.strip()), None)
        shown = f": CI printed `{clean_line(first)[:_SHOWN]}`" if first else ""
        return Reproduction(False, f"passed here (exit 0){shown}")
    # The runner's own exit line is never printed by the command: it cannot show up here.
    wanted = [
        (line, _norm(line)) for line in ci_lines if _norm(line) and not _RUNNER_LINE.search(line)
    ]
    specific = [(line, norm) for line, norm in wanted if not _GENERIC.search(norm)]
    wanted = specific or wanted
    if not wanted:
        return Reproduction(True, f"failed as in CI (exit {exit_code})")
    here = "\n".join(_norm(line) for line in output.splitlines())
    if any(norm in here for _, norm in wanted):
        return Reproduction(True, f"failed as in CI (exit {exit_code})")
    last = next(
        (clean_line(line) for line in reversed(output.strip().splitlines()) if line.strip()), ""
    )
    return Reproduction(
        False,
        f"failed differently (exit {exit_code}): CI printed `{clean_line(wanted[0][0])[:_SHOWN]}`"
        + (f", here the last line was `{last[:_SHOWN]}`" if last else ""),
    )
