"""Benchmark ``bot.diagnosis.logs.distill_steps`` on a generated 200,000-line job log.

Run: ``.venv/bin/python bench/distill.py [LINES]``. Prints the time and the sizes, then the time
at a quarter, half and all of LINES to show that the cost grows linearly; asserts nothing
(timing belongs to a benchmark, not to the test-suite).
"""

from __future__ import annotations

import sys
import time

from bot.diagnosis.logs import distill_steps


def generate_log(lines: int) -> bytes:
    """A realistic worst case: one step printing ``lines`` lines of noisy test output."""
    stamp = "2026-11-17T07:02:44.9032795Z "
    out = [
        "\ufeff" + stamp + "Current runner version: '2.337.0'",
        stamp + "##[group]Run actions/checkout@v4",
        stamp + "with:",
        stamp + "  repository: acme-labs/big",
        stamp + "##[endgroup]",
        stamp + "Syncing repository: acme-labs/big",
        stamp + "##[group]Run pytest -ra",
        stamp + "\x1b[36;1mpytest -ra\x1b[0m",
        stamp + "shell: /usr/bin/bash -e {0}",
        stamp + "##[endgroup]",
    ]
    for i in range(lines):
        kind = i % 10
        if kind == 0:
            out.append(f"{stamp}tests/test_mod_{i % 997}.py::test_case_{i} \x1b[32mPASSED\x1b[0m")
        elif kind == 1:
            out.append(f"{stamp}WARNING: DeprecationWarning: datetime.utcnow() is deprecated")
        elif kind == 2:
            out.append(f"{stamp}E       AssertionError: value {i % 50} != expected")
        elif kind == 3:
            out.append(
                f'{stamp}  File "/home/runner/work/big/big/src/big/mod_{i % 31}.py", line {i % 400}, in run'
            )
        else:
            out.append(
                f"{stamp}DEBUG worker={i % 8} processed batch {i} in {i % 97} ms " + "x" * (i % 60)
            )
    out += [
        stamp + "FAILED tests/test_final.py::test_the_real_one - ValueError: the real error",
        stamp + "========= 1 failed, 199999 passed in 812.00s =========",
        stamp + "##[error]Process completed with exit code 1.",
        stamp + "Post job cleanup.",
        stamp + "Cleaning up orphan processes",
    ]
    return "\n".join(out).encode("utf-8")


def generate_one_line_log(chars: int) -> bytes:
    """A hostile case: one step printing a single line of ``chars`` characters, no newline."""
    stamp = "2026-11-17T07:02:44.9032795Z "
    head = f"{stamp}##[group]Run ./x\n{stamp}shell: /usr/bin/bash -e {{0}}\n{stamp}##[endgroup]\n"
    return (head + stamp + "\x1b[31merror\x1b[0m " * (chars // 16)).encode("utf-8")


def timed(raw: bytes) -> float:
    """The best of three runs, in seconds (the machine's noise is not the code's cost)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        distill_steps(raw)
        best = min(best, time.perf_counter() - started)
    return best


def report(label: str, raw: bytes) -> None:
    started = time.perf_counter()
    [log] = distill_steps(raw)
    elapsed = time.perf_counter() - started
    print(f"== {label}")
    print(f"raw bytes:       {log.raw_bytes:,}")
    print(f"distilled bytes: {log.distilled_bytes:,} ({log.est_tokens:,} tokens est.)")
    print(f"omitted lines:   {log.omitted_lines:,}")
    print(f"step:            {log.step!r}  exit code: {log.exit_code}")
    print(f"time:            {elapsed * 1000:.0f} ms")


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    report(f"{lines:,} lines", generate_log(lines))
    report("one 20 MB line", generate_one_line_log(20_000_000))
    print("== linear cost (best of 3)")
    for part in (lines // 4, lines // 2, lines):
        seconds = timed(generate_log(part))
        print(f"{part:>9,} lines: {seconds * 1000:6.0f} ms ({seconds * 1e6 / part:.2f} µs/line)")


if __name__ == "__main__":
    main()
