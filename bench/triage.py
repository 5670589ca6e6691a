"""Triage time for generated PRs of 10, 1,000 and 10,000 changed files.

Run: ``.venv/bin/python bench/triage.py``. Prints the time of parsing the diff
(:func:`bot.triage.rules.diff_facts`) plus the triage itself (:func:`bot.triage.rules.triage`), and the growth
ratio per 10x files (linear growth is about 10x). Goal: linear, and under 1 s for 1,000 files.
Prints, never asserts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.triage.codeowners import parse_codeowners
from bot.triage.rules import (
    DiffFacts,
    GeneratedMatcher,
    PullFacts,
    Triage,
    TriageConfig,
    diff_facts,
    triage,
)

SIZES = (10, 1_000, 10_000)
REPEATS = 3

CODEOWNERS = "\n".join(
    ["* @org/core", "*.md @org/docs", "/src/api/ @org/api", "tests/ @org/qa"]
    + [f"/src/pkg{i}/ @team{i}" for i in range(50)]
)
GITATTRIBUTES = "src/gen/** linguist-generated\n*.pb.go linguist-generated\n"
CONFIG = TriageConfig(
    area_rules={f"area/pkg{i}": [f"src/pkg{i}/"] for i in range(20)} | {"area/docs": ["*.md"]},
    security_paths=("src/pkg3/auth/",),
)


def make_diff(files: int) -> str:
    """A git diff touching ``files`` files, a mix of edits, additions, renames, binaries."""
    parts: list[str] = []
    for i in range(files):
        directory = f"src/pkg{i % 50}"
        kind = i % 10
        if kind == 0:
            path = f"tests/test_{i}.py"
            parts.append(
                f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..1111111\n"
                f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,3 @@\n+def test_{i}():\n"
                f"+    x = {i}\n+    assert x == {i}\n"
            )
        elif kind == 1:
            old, new = f"{directory}/old_{i}.py", f"{directory}/new_{i}.py"
            parts.append(
                f"diff --git a/{old} b/{new}\nsimilarity index 90%\nrename from {old}\n"
                f"rename to {new}\nindex 1111111..2222222 100644\n--- a/{old}\n+++ b/{new}\n"
                f"@@ -1,3 +1,3 @@\n a = 1\n-b = 2\n+b = 3\n c = 4\n"
            )
        elif kind == 2:
            path = f"{directory}/logo_{i}.png"
            parts.append(
                f"diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n"
                f"Binary files a/{path} and b/{path} differ\n"
            )
        elif kind == 3:
            path = f"src/gen/model_{i}.py"
            body = "".join(f"+generated_{j} = {j}\n" for j in range(20))
            parts.append(
                f"diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n"
                f"--- a/{path}\n+++ b/{path}\n@@ -1,0 +1,20 @@\n{body}"
            )
        else:
            path = f"{directory}/module_{i}.py"
            parts.append(
                f"diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n"
                f"--- a/{path}\n+++ b/{path}\n@@ -10,6 +10,8 @@ def f():\n"
                f"     a = 1\n     b = 2\n-    c = 3\n+    c = 4\n+    d = 5\n+    e = 6\n"
                f"     f = 7\n     g = 8\n     h = 9\n"
            )
    return "".join(parts)


def best_of(repeats: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    rules = parse_codeowners(CODEOWNERS)
    messages = tuple(
        f"commit {i}\n\nCo-authored-by: a <1+a@users.noreply.github.com>" for i in range(50)
    )
    pull = PullFacts(
        author_login="copilot-swe-agent[bot]",
        author_type="Bot",
        body="Fixes #1",
        commit_messages=messages,
        head_ref="copilot/fix-1",
    )
    print(
        f"{'files':>8} {'diff MB':>8} {'parse s':>9} {'triage s':>9} {'total s':>9}"
        f" {'us/file':>8} {'growth':>7}"
    )
    previous: tuple[int, float] | None = None
    for files in SIZES:
        diff = make_diff(files)

        def parse(diff: str = diff) -> DiffFacts:
            return diff_facts(diff, generated=GeneratedMatcher(gitattributes=GITATTRIBUTES))

        facts = parse()

        def assess(facts: DiffFacts = facts) -> Triage:
            return triage(facts.files, pull, config=CONFIG, codeowners=rules)

        def total(parse: Callable[[], DiffFacts] = parse) -> Triage:
            return triage(parse().files, pull, config=CONFIG, codeowners=rules)

        parse_s, assess_s, total_s = (best_of(REPEATS, work) for work in (parse, assess, total))
        # Time ratio divided by file-count ratio: 1.0 is linear, above 1 is worse.
        growth = (
            "-" if previous is None else f"{(total_s / previous[1]) / (files / previous[0]):.2f}"
        )
        print(
            f"{files:>8} {len(diff) / 1e6:>8.2f} {parse_s:>9.4f} {assess_s:>9.4f} {total_s:>9.4f}"
            f" {total_s / files * 1e6:>8.1f} {growth:>7}"
        )
        previous = (files, total_s)
    print("growth: (time ratio) / (files ratio) against the previous row; 1.0 means linear")


if __name__ == "__main__":
    main()
