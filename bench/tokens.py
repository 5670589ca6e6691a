"""Input tokens of the LLM repair's first turn vs. sending the raw job log, per scenario.

    .venv/bin/python -m bench.tokens [--cases ../shared/scenarios/cases] [--json]

Tokens are estimated at 4 characters (UTF-8 bytes) per token, as ``DistilledLog.est_tokens``
does; the tool-use system prompt the API adds (346 tokens) is counted with the prefix. Columns:

- ``raw log``: the raw job log as GitHub serves it;
- ``excerpt``: the distilled failure the agent sends instead;
- ``message``: the whole job-specific first user message (excerpt, command, files, instructions);
- ``first turn``: prefix (tools + system) + message, all billed as fresh input (cold cache);
- ``warm``: the same with the prefix read from the prompt cache (billed at 0.1x);
- ``fewer(api)``: the Messages API's own count, where a warm turn's ``input_tokens`` excludes the
  cache read, so only the message counts.

The "fewer" columns compare with the raw log alone, which is generous to the raw log: a model
given only the raw log would still need the tools, the system prompt and the files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.diagnosis.logs import distill
from bot.llm.agent import (
    PRContext,
    Workspace,
    build_context,
    locations_in_checkout,
    system_blocks,
    tool_definitions,
)
from bot.sandbox import CommandResult
from fixers.base import WorktreeFiles

DEFAULT_CASES = Path(__file__).resolve().parents[1].parent / "shared" / "scenarios" / "cases"
TOOL_USE_SYSTEM_TOKENS = 346
CACHE_READ_FACTOR = 0.1
GOAL_REDUCTION = 0.95


def estimate_tokens(text: str) -> int:
    return (len(text.encode("utf-8")) + 3) // 4


class _NoRunner:
    """Building the context never runs anything; this runner proves it."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        writable: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        network: bool = False,
    ) -> CommandResult:
        raise AssertionError("the token bench must not run commands")


@dataclass(frozen=True)
class Row:
    case: str
    raw_log: int
    excerpt: int
    message: int
    first_turn: int
    warm: int

    @property
    def fewer_cold(self) -> float:
        return 1 - self.first_turn / self.raw_log

    @property
    def fewer_warm(self) -> float:
        return 1 - self.warm / self.raw_log

    @property
    def fewer_api(self) -> float:
        return 1 - self.message / self.raw_log

    @property
    def fewer_log(self) -> float:
        return 1 - self.excerpt / self.raw_log


def prefix_tokens() -> int:
    prefix = json.dumps({"tools": tool_definitions(), "system": system_blocks()})
    return estimate_tokens(prefix) + TOOL_USE_SYSTEM_TOKENS


def measure(case_dir: Path) -> Row:
    raw = (case_dir / "job.log").read_bytes()
    log = distill(raw)
    repo = case_dir / "repo"
    workspace = Workspace(repo, runner=_NoRunner(), command=log.command)
    locations = locations_in_checkout(log, WorktreeFiles(repo))
    message = build_context(log, workspace, PRContext(), locations)
    message_tokens = estimate_tokens(json.dumps([{"role": "user", "content": message}]))
    prefix = prefix_tokens()
    return Row(
        case=case_dir.name,
        raw_log=(len(raw) + 3) // 4,
        excerpt=estimate_tokens(log.excerpt),
        message=message_tokens,
        first_turn=prefix + message_tokens,
        warm=round(prefix * CACHE_READ_FACTOR) + message_tokens,
    )


def render(rows: Sequence[Row]) -> str:
    header = (
        f"{'scenario':38} {'raw log':>8} {'excerpt':>8} {'message':>8} {'1st turn':>9} "
        f"{'warm':>6} {'fewer(log)':>10} {'fewer(cold)':>11} {'fewer(warm)':>11} "
        f"{'fewer(api)':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.case:38} {row.raw_log:>8} {row.excerpt:>8} {row.message:>8} "
            f"{row.first_turn:>9} {row.warm:>6} {row.fewer_log:>10.1%} {row.fewer_cold:>11.1%} "
            f"{row.fewer_warm:>11.1%} {row.fewer_api:>10.1%}"
        )
    total = Row(
        case="TOTAL",
        raw_log=sum(r.raw_log for r in rows),
        excerpt=sum(r.excerpt for r in rows),
        message=sum(r.message for r in rows),
        first_turn=sum(r.first_turn for r in rows),
        warm=sum(r.warm for r in rows),
    )
    lines.append("-" * len(header))
    lines.append(
        f"{total.case:38} {total.raw_log:>8} {total.excerpt:>8} {total.message:>8} "
        f"{total.first_turn:>9} {total.warm:>6} {total.fewer_log:>10.1%} "
        f"{total.fewer_cold:>11.1%} {total.fewer_warm:>11.1%} {total.fewer_api:>10.1%}"
    )
    met = total.fewer_cold >= GOAL_REDUCTION
    lines.append(
        f"goal: >= {GOAL_REDUCTION:.0%} fewer first-turn tokens than the raw log: "
        f"{'met' if met else 'NOT met'} ({total.fewer_cold:.1%} cold, {total.fewer_warm:.1%} "
        f"warm, {total.fewer_api:.1%} as the API counts a warm turn; the prefix alone is "
        f"{prefix_tokens()} tokens)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--only", default="", help="only scenarios whose name starts with this (e.g. ag-)"
    )
    args = parser.parse_args(argv)
    cases = sorted(
        p
        for p in args.cases.iterdir()
        if (p / "job.log").is_file() and (p / "repo").is_dir() and p.name.startswith(args.only)
    )
    rows = [measure(case) for case in cases]
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
